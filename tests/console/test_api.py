"""The console's API end to end against a real watch daemon on a temporary spool: sign in, submit,
follow (server-sent events), download, delete, and the audit chain of it all."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.console.consolelib import REPO, ConsoleEnv
from tests.watch.watchlib import WatchEnv, png_variant, wait_for


def read_events(env: ConsoleEnv, path: str, token: str, timeout: float = 120) -> list[tuple[str, dict]]:
    """Read a server-sent-event stream until its `end` event."""
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=timeout)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("content-type", "").startswith("text/event-stream")
    events, name, data = [], None, []
    while True:
        line = r.fp.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and name:
            events.append((name, json.loads("\n".join(data))))
            if name == "end":
                break
            name, data = None, []
    conn.close()
    return events


def test_submit_follow_download_delete_with_a_real_daemon(watch_env: WatchEnv, console_env: ConsoleEnv,
                                                          tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> None:
    env = console_env
    old = os.umask(0o077)  # the daemon as under its unit's UMask=0077
    try:
        watch_env.start()
    finally:
        os.umask(old)
    token = env.login("alice")
    target = png_variant(t1_jpg, tmp_path / "scene.png", 1).read_bytes()
    r = env.submit(token, [("source", ("hanks.png", hanks_png.read_bytes(), "image/png")),
                           ("target", ("scene.png", target, "image/png"))],
                   options={"face_selector_mode": "one", "blend_ratio": 0.8}, label="shot 42")
    assert r.status == 201, r.text
    job = r.json()
    ref = job["ref"]
    assert job["state"] in ("submitted", "queued", "running")
    assert r.headers["location"] == f"/api/v1/jobs/{ref}"
    # The manifest landed in the inbox last, by rename; no dot-file residue is left behind.
    manifest = json.loads((env.spool / "inbox" / f"{ref}.job.json").read_text()) if (
        env.spool / "inbox" / f"{ref}.job.json").exists() else None
    if manifest is not None:
        assert manifest["options"] == {"face_selector_mode": "one", "blend_ratio": 0.8}
        assert manifest["label"] == "shot 42"
    assert not [n for n in env.inbox_entries() if n.startswith(".")]

    events = read_events(env, f"/api/v1/jobs/{ref}/events", token)
    states = [e["state"] for name, e in events if name == "job"]
    assert states[-1] == "done", events
    final = json.loads(env.request("GET", f"/api/v1/jobs/{ref}", token=token).body)
    assert final["state"] == "done" and final["job_id"] and final["output"] == f"{ref}-target.png"

    # Download: the bytes are the daemon's result, byte for byte.
    dl = env.request("GET", f"/api/v1/jobs/{ref}/result", token=token)
    assert dl.status == 200 and dl.headers["content-type"] == "image/png"
    assert "attachment" in dl.headers["content-disposition"]
    out = env.spool / "outbox" / final["job_id"] / final["output"]
    assert hashlib.sha256(dl.body).hexdigest() == final["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert dl.body != target  # a swap happened: the output differs from the target
    # what the console (another user in the producers' group) reads is group-readable
    for path, mode in ((env.spool / "status", 0o750), (env.spool / "status" / f"{final['job_id']}.json", 0o640),
                       (out.parent, 0o750), (out, 0o640), (out.parent / "result.json", 0o640)):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path

    # Another submitter cannot see, download or delete it; a reviewer can see and download it.
    other = env.login("bob")
    assert env.request("GET", f"/api/v1/jobs/{ref}", token=other).status == 404
    assert env.request("GET", f"/api/v1/jobs/{ref}/result", token=other).status == 404
    assert env.request("DELETE", f"/api/v1/jobs/{ref}/media", token=other).status == 404
    assert out.exists()
    assert env.request("GET", "/api/v1/jobs", token=other).json()["jobs"] == []
    reviewer = env.login("rita")
    assert env.request("GET", f"/api/v1/jobs/{ref}/result", token=reviewer).status == 200
    auditor = env.login("audrey")
    assert env.request("GET", f"/api/v1/jobs/{ref}", token=auditor).json()["state"] == "done"
    assert env.request("GET", f"/api/v1/jobs/{ref}/result", token=auditor).status == 403

    # Delete the media: the console asks the daemon (only it may change outbox/), which deletes the
    # result file and keeps the record, marked; then a download is 410.
    d = env.request("DELETE", f"/api/v1/jobs/{ref}/media", token=token)
    assert d.status == 200, d.text
    assert d.json() == {"ok": True, "ref": ref, "removed": [], "removal_requested": False,
                        "media_deletion_requested": True}
    view = env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()
    assert view["media_delete_requested"] or view["media_deleted"]
    wait_for(lambda: env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()["media_deleted"], 30,
             "the daemon to delete the media")
    assert not out.exists() and sorted(p.name for p in out.parent.iterdir()) == ["result.json"]
    marked = json.loads((out.parent / "result.json").read_text())["media_deleted"]
    assert marked["by"] == "console:alice" and final["output"] in marked["removed"]
    (entry,) = [e for e in watch_env.events("media_deleted") if e["job"] == final["job_id"]]
    assert entry["requested_by"] == "console:alice"
    assert env.request("GET", f"/api/v1/jobs/{ref}/result", token=token).status == 410
    view = env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()
    assert view["state"] == "done" and view["media_delete_requested"] is None
    assert "The media of this job was deleted on" in env.request("GET", f"/jobs/{ref}", token=token).text

    # Every action is in the console's audit chain with the user's name, and the chain verifies.
    trail = [(e["event"], e.get("user")) for e in env.audit()]
    for item in [("console_login", "alice"), ("console_submit", "alice"), ("console_download", "alice"),
                 ("console_download", "rita"), ("console_delete", "alice")]:
        assert item in trail
    v = subprocess.run([sys.executable, "-m", "sealfuse", "audit", "verify", str(env.state / "audit.jsonl")],
                       cwd=REPO, capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


def test_a_job_the_engine_refuses_shows_its_reason_in_words(watch_env: WatchEnv, console_env: ConsoleEnv,
                                                             tmp_path: Path, hanks_png: Path) -> None:
    from PIL import Image

    env = console_env
    watch_env.start()
    token = env.login("alice")
    blank = tmp_path / "wall.png"
    Image.new("RGB", (96, 96), (200, 190, 180)).save(blank)
    r = env.submit(token, [("source", ("hanks.png", hanks_png.read_bytes(), "image/png")),
                           ("target", ("wall.png", blank.read_bytes(), "image/png"))])
    assert r.status == 201, r.text
    ref = r.json()["ref"]
    events = read_events(env, f"/api/v1/jobs/{ref}/events", token)
    final = events[-2][1]
    assert final["state"] == "failed"
    assert final["reason"] == "no_face_in_target"
    assert final["reason_text"] == "No face was found in the target."
    wait_for(lambda: env.request("GET", f"/jobs/{ref}", token=token).status in (200, 303), 5, "page")


def test_deleting_a_queued_job_asks_the_daemon_to_remove_it(watch_env: WatchEnv, console_env: ConsoleEnv,
                                                            tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> None:
    env = console_env
    watch_env.start()
    watch_env.wait_ready()
    png_variant(hanks_png, watch_env.inbox / "tom" / "busy__hang__.png", 5)  # holds the only worker
    wait_for(lambda: watch_env.events("started_job"), 30, "the worker to be busy")
    token = env.login("alice")
    target = png_variant(t1_jpg, tmp_path / "scene.png", 2).read_bytes()
    r = env.submit(token, [("source", ("hanks.png", hanks_png.read_bytes(), "image/png")),
                           ("target", ("scene.png", target, "image/png"))])
    assert r.status == 201, r.text
    ref = r.json()["ref"]

    def state() -> str:
        return env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()["state"]

    wait_for(lambda: state() == "queued", 30, "the console job to be queued")
    assert env.request("DELETE", f"/api/v1/jobs/{ref}/media", token=env.login("bob")).status == 404
    d = env.request("DELETE", f"/api/v1/jobs/{ref}/media", token=token)
    assert d.status == 200, d.text
    assert d.json() == {"ok": True, "ref": ref, "removed": [], "removal_requested": True,
                        "media_deletion_requested": False}
    wait_for(lambda: state() == "removed", 30, "the daemon to remove the job")
    view = env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()
    assert view["reason"] == "removed" and view["reason_text"] == "The job was removed on request before it finished."
    job_id = view["job_id"]
    err = json.loads((env.spool / "failed" / job_id / "error.json").read_text())
    assert err["reason"] == "removed" and err["evidence"]["requested_by"] == "console:alice"
    assert err["client_ref"] == ref and not (env.spool / "outbox" / job_id).exists()
    (removed,) = [e for e in watch_env.events("removed") if e["job"] == job_id]
    assert removed["requested_by"] == "console:alice" and removed["was"] == "queued"
    wait_for(lambda: not [n for n in env.inbox_entries() if n.endswith(".cancel.json")], 10,
             "the removal request to be consumed")
    page = env.request("GET", f"/jobs/{ref}", token=token)
    assert "Removed" in page.text and "removed on request" in page.text
    # Once removed, a delete asks the daemon to delete its media from failed/<id>/input/ like any
    # finished job's.
    assert (env.spool / "failed" / job_id / "input").is_dir()
    d = env.request("DELETE", f"/api/v1/jobs/{ref}/media", token=token)
    assert d.status == 200 and d.json()["removal_requested"] is False and d.json()["media_deletion_requested"]
    wait_for(lambda: env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()["media_deleted"], 30,
             "the daemon to delete the removed job's inputs")
    assert sorted(p.name for p in (env.spool / "failed" / job_id).iterdir()) == ["error.json"]
    trail = [(e["event"], e.get("user"), e.get("state")) for e in env.audit() if e["event"] == "console_remove"]
    assert trail == [("console_remove", "alice", "queued")]
