"""Removal on request (`inbox/<name>.cancel.json`) against a real daemon and worker: a running job
is stopped and lands in failed/ as `removed` while the next job runs; a queued job is removed
before it starts; a finished job's removal is a recorded no-op; bad requests are quarantined with
their reason; a removal racing a commit never leaves both outbox/ and failed/."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sealfuse.appliance.watch import errors, spool
from tests.watch.watchlib import WatchEnv, drop_bytes, png_variant, wait_for


def cancel(env: WatchEnv, name: str, **doc: Any) -> Path:
    """Producer protocol for a removal request: write under a dot name, rename into place."""
    return drop_bytes(json.dumps({"version": 1, **doc}).encode(), env.inbox / f"{name}.cancel.json")


def status(env: WatchEnv, job_id: str) -> dict[str, Any]:
    path = env.spool / "status" / f"{job_id}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def claimed(env: WatchEnv) -> dict[str, str]:
    """drop path (every file of the drop) -> job id, from the audit log."""
    return {d: e["job"] for e in env.events("claimed") for d in e["drop"]}


def test_running_and_queued_jobs_are_removed_and_the_next_job_runs(watch_env: WatchEnv) -> None:
    env = watch_env
    proc = env.start()
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "a__hang__.png", 1)
    ids = wait_for(lambda: claimed(env).get("inbox/tom/a__hang__.png"), 30, "the hanging job's claim")
    hang = ids
    wait_for(lambda: status(env, hang).get("state") == "running", 30, "the hanging job to run")
    png_variant(env.hanks, env.inbox / "tom" / "b.png", 2)  # concurrency 1: waits behind the hang
    queued = wait_for(lambda: claimed(env).get("inbox/tom/b.png"), 30, "the second job's claim")
    assert status(env, queued)["state"] == "queued"

    cancel(env, "q", job_id=queued, requested_by="alice\x1b[31m")  # queued: removed before it starts
    wait_for(lambda: status(env, queued).get("state") == "removed", 30, "the queued job's removal")
    assert not env.events("started_job") or all(e["job"] != queued for e in env.events("started_job"))
    assert status(env, hang)["state"] == "running"

    cancel(env, "r", job_id=hang, requested_by="bob")  # running: the worker is stopped
    wait_for(lambda: status(env, hang).get("state") == "removed", 30, "the running job's removal")
    png_variant(env.hanks, env.inbox / "tom" / "c.png", 3)
    wait_for(lambda: env.events("done"), 120, "the next job to run")

    done_id = claimed(env)["inbox/tom/c.png"]
    cancel(env, "late", job_id=done_id)  # finished: a recorded no-op
    wait_for(lambda: env.events("cancel_noop"), 30, "the no-op removal")
    proc.terminate()
    assert proc.wait(60) == 0

    for job_id, was, who in ((queued, "queued", "alice?[31m"), (hang, "running", "bob")):
        err = json.loads((env.spool / "failed" / job_id / "error.json").read_text())
        assert err["reason"] == "removed" and err["evidence"]["requested_by"] == who
        assert err["evidence"]["was"] == was
        assert (env.spool / "failed" / job_id / "input").is_dir()  # the inputs are kept
        assert not (env.spool / "outbox" / job_id).exists()
        st = status(env, job_id)
        assert st["state"] == "removed" and st["reason"] == "removed"
    removed = {e["job"]: e for e in env.events("removed")}
    assert set(removed) == {queued, hang}
    assert removed[hang]["requested_by"] == "bob" and removed[hang]["was"] == "running"
    restarts = [e for e in env.events("worker_restarted") if e.get("reason") == "cancelled"]
    assert [e["job"] for e in restarts] == [hang]
    assert [e["job"] for e in env.events("done")] == [done_id]
    noop = env.events("cancel_noop")
    assert [(e["job"], e["reason"]) for e in noop] == [(done_id, "already_done")]
    assert (env.spool / "outbox" / done_id).is_dir()
    assert not list(env.inbox.glob("*.cancel.json"))  # requests never linger
    prom = (env.state / "sealfuse.prom").read_text()
    assert 'sealfuse_jobs_total{outcome="removed",reason="removed"} 2.0' in prom
    failures = [line for line in prom.splitlines()
                if line.startswith('sealfuse_jobs_total{outcome="failed"') and not line.endswith(" 0.0")]
    assert failures == []  # a removal is not a failure
    assert env.residue() == []


def test_bad_removal_requests_are_quarantined_with_their_reason(watch_env: WatchEnv) -> None:
    env = watch_env
    env.inbox.mkdir(parents=True, exist_ok=True)
    drop_bytes(b'{"version": 1, "job_id": "x"', env.inbox / "trunc.cancel.json")
    drop_bytes(b'{"version": 1, "job_id": "a", "job_id": "b"}', env.inbox / "dupkey.cancel.json")
    cancel(env, "both", job_id="a", client_ref="b")
    cancel(env, "extra", job_id="a", force=True)
    cancel(env, "escape", job_id="../outbox/x")
    cancel(env, "long", job_id="a", requested_by="x" * 129)
    cancel(env, "unknown", job_id="20990101T000000-nope-abcdef")
    cancel(env, "unknownref", client_ref="order-1")
    drop_bytes(b'{"version": 1, "job_id": "' + b"a" * 70000 + b'"}', env.inbox / "big.cancel.json")
    os.symlink("/etc/passwd", env.inbox / "link.cancel.json")
    result = env.run_once()
    assert result.returncode == 0, result.stdout.decode()[-2000:]
    assert env.reasons() == {
        "inbox/trunc.cancel.json": "invalid_json", "inbox/dupkey.cancel.json": "invalid_json",
        "inbox/both.cancel.json": "schema_violation", "inbox/extra.cancel.json": "schema_violation",
        "inbox/escape.cancel.json": "schema_violation", "inbox/long.cancel.json": "schema_violation",
        "inbox/unknown.cancel.json": "unknown_job", "inbox/unknownref.cancel.json": "unknown_job",
        "inbox/big.cancel.json": "manifest_too_large", "inbox/link.cancel.json": "symlink",
    }
    assert not env.events("removed")
    assert env.residue() == []


# ---------------------------------------------------------------- the commit race, process against process
def _commit_done(root: str, job_id: str, produced: str, go: Any, out: Any) -> None:
    go.wait()
    out.put(("done", spool.commit_done(Path(root), job_id, Path(produced),
                                       {"output": {"name": "out.png"}}) is not None))


def _commit_removed(root: str, record: dict[str, Any], go: Any, out: Any) -> None:
    job = spool.job_from_claim(record, Path(root) / "work" / record["job_id"], {})
    go.wait()
    out.put(("removed", spool.commit_failed(Path(root), job, errors.RemovedError("removed on request"))))


@pytest.mark.parametrize("round_", range(12))
def test_a_removal_racing_a_commit_ends_the_job_exactly_once(tmp_path: Path, round_: int) -> None:
    root = tmp_path / "spool"
    for d in ("inbox", "work", "outbox", "failed"):
        (root / d).mkdir(parents=True)
    (root / "inbox" / "t.png").write_bytes(b"target")
    record = spool.claim(root, [("target", root / "inbox" / "t.png")], kind="preset", preset="tom",
                         options={}, label=None, client_ref=None, seen="now")
    produced = tmp_path / "out.png"
    produced.write_bytes(b"result")
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_commit_done, args=(str(root), record["job_id"], str(produced), go, out)),
             ctx.Process(target=_commit_removed, args=(str(root), record, go, out))]
    for p in procs[:: 1 if round_ % 2 else -1]:
        p.start()
    go.set()
    wins = dict(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(30)
    job_id = record["job_id"]
    in_outbox, in_failed = (root / "outbox" / job_id).is_dir(), (root / "failed" / job_id).is_dir()
    assert sum(wins.values()) == 1 and in_outbox != in_failed
    assert in_outbox == wins["done"] and in_failed == wins["removed"]
    assert not (root / "work" / job_id).exists()
    assert [p.name for d in ("outbox", "failed") for p in (root / d).iterdir() if p.name.startswith(".")] == []


def test_removals_racing_running_jobs_end_each_job_exactly_once(watch_env: WatchEnv) -> None:
    env = watch_env
    env.write_config({"concurrency": 2})
    proc = env.start(SEALFUSE_TEST_SLOW_SECONDS="0.3")
    env.wait_ready()
    n = 6
    for i in range(n):
        drop_bytes(env.hanks.read_bytes(), env.inbox / f"s{i}.png")
        png_variant(env.hanks, env.inbox / f"t{i}__slow__.png", 40 + i)
        drop_bytes(json.dumps({"version": 1, "source": f"s{i}.png", "target": f"t{i}__slow__.png",
                               "client_ref": f"race-{i}"}).encode(), env.inbox / f"j{i}.job.json")
    for i in range(n):  # each request lands at another moment of its job: running, finishing, done
        job_id = wait_for(lambda i=i: claimed(env).get(f"inbox/j{i}.job.json"), 30, f"job {i}'s claim")
        wait_for(lambda j=job_id: status(env, j).get("state") in ("running", "done"), 60, f"job {i} to run")
        time.sleep(0.1 * i)
        cancel(env, f"race-{i}", client_ref=f"race-{i}", requested_by="racer")
    jobs = {i: claimed(env)[f"inbox/j{i}.job.json"] for i in range(n)}
    wait_for(lambda: all((env.spool / "outbox" / j).exists() or (env.spool / "failed" / j).exists()
                         for j in jobs.values()) and not list(env.inbox.glob("*.cancel.json")), 120,
             "every job to end")
    proc.terminate()
    assert proc.wait(60) == 0
    removed = {e["job"] for e in env.events("removed")}
    done = {e["job"] for e in env.events("done")}
    noop = {e["job"] for e in env.events("cancel_noop")}
    unknown = {e["job"] for e in env.events("failed") if e.get("reason") == "unknown_job"}
    for i, job_id in jobs.items():
        in_outbox, in_failed = (env.spool / "outbox" / job_id).is_dir(), (env.spool / "failed" / job_id).is_dir()
        assert in_outbox != in_failed, (i, job_id)
        if in_failed:
            assert job_id in removed and job_id not in done
            assert status(env, job_id)["state"] == "removed"
        else:
            assert job_id in done and job_id not in removed and job_id in noop
            assert status(env, job_id)["state"] == "done"
    assert not unknown and len(env.events("cancel_noop")) + len(removed) == n
    assert env.residue() == []


# ---------------------------------------------------------------- media deletion on request
def record(env: WatchEnv, job_id: str) -> dict[str, Any]:
    for folder, name in (("outbox", "result.json"), ("failed", "error.json")):
        if (env.spool / folder / job_id / name).exists():
            return json.loads((env.spool / folder / job_id / name).read_text())
    return {}


def test_finished_jobs_media_is_deleted_on_request_and_planted_links_are_not_followed(
        watch_env: WatchEnv, tmp_path: Path) -> None:
    env = watch_env
    env.write_config({"retain_inputs": True})
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("keep me")
    (outside / "dir" / "inner.txt").write_text("keep me too")
    proc = env.start()
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "a.png", 61)
    drop_bytes(b"not a png at all", env.inbox / "tom" / "bad.png")
    done_id = wait_for(lambda: claimed(env).get("inbox/tom/a.png"), 30, "the job's claim")
    wait_for(lambda: status(env, done_id).get("state") == "done", 120, "the job to finish")
    bad_id = wait_for(lambda: claimed(env).get("inbox/tom/bad.png"), 30, "the bad drop's claim")
    wait_for(lambda: status(env, bad_id).get("state") == "failed", 30, "the bad drop to fail")
    box = env.spool / "outbox" / done_id
    output = record(env, done_id)["output"]["name"]
    assert (box / output).is_file() and (box / "input").is_dir()
    assert (env.spool / "failed" / bad_id / "input").is_dir()
    os.symlink(outside / "secret.txt", box / "planted")  # links in the job's folder: unlinked, not followed
    os.symlink(outside / "dir", box / "input" / "planted-dir")

    cancel(env, "del-done", job_id=done_id, delete_media=True, requested_by="alice")
    cancel(env, "del-bad", job_id=bad_id, delete_media=True, requested_by="bob")
    wait_for(lambda: len(env.events("media_deleted")) == 2, 30, "both media deletions")
    cancel(env, "again", job_id=done_id, delete_media=True)
    wait_for(lambda: env.events("cancel_noop"), 30, "the repeated request's no-op")

    png_variant(env.hanks, env.inbox / "tom" / "c__hang__.png", 62)  # a running job: removed, then its media
    hang = wait_for(lambda: claimed(env).get("inbox/tom/c__hang__.png"), 30, "the hanging job's claim")
    wait_for(lambda: status(env, hang).get("state") == "running", 30, "the hanging job to run")
    cancel(env, "del-run", job_id=hang, delete_media=True, requested_by="carol")
    wait_for(lambda: status(env, hang).get("media_deleted"), 30, "the running job's removal and deletion")
    proc.terminate()
    assert proc.wait(60) == 0

    assert sorted(p.name for p in box.iterdir()) == ["result.json"]
    res = record(env, done_id)
    assert res["media_deleted"]["by"] == "alice" and res["media_deleted"]["at"]
    assert sorted(res["media_deleted"]["removed"]) == sorted(["input", "planted", output])
    st = status(env, done_id)
    assert st["state"] == "done" and st["media_deleted"]["by"] == "alice" and st["output"] is None
    assert (outside / "secret.txt").read_text() == "keep me"  # nothing outside changed
    assert (outside / "dir" / "inner.txt").read_text() == "keep me too"

    assert sorted(p.name for p in (env.spool / "failed" / bad_id).iterdir()) == ["error.json"]
    assert record(env, bad_id)["media_deleted"]["by"] == "bob"
    assert status(env, bad_id)["state"] == "failed" and status(env, bad_id)["media_deleted"]["by"] == "bob"

    assert sorted(p.name for p in (env.spool / "failed" / hang).iterdir()) == ["error.json"]
    err = record(env, hang)
    assert err["reason"] == "removed" and err["media_deleted"]["by"] == "carol"
    assert status(env, hang)["state"] == "removed"
    assert [e["job"] for e in env.events("removed")] == [hang]

    deleted = {e["job"]: e["requested_by"] for e in env.events("media_deleted")}
    assert deleted == {done_id: "alice", bad_id: "bob", hang: "carol"}
    assert [(e["job"], e["reason"]) for e in env.events("cancel_noop")] == [(done_id, "media_already_deleted")]
    assert not list(env.inbox.glob("*.cancel.json"))


def test_a_media_deletion_request_for_an_unknown_job_is_quarantined(watch_env: WatchEnv) -> None:
    env = watch_env
    env.inbox.mkdir(parents=True, exist_ok=True)
    cancel(env, "nojob", job_id="20990101T000000-nope-abcdef", delete_media=True)
    cancel(env, "notbool", job_id="20990101T000000-nope-abcdef", delete_media="yes")
    result = env.run_once()
    assert result.returncode == 0, result.stdout.decode()[-2000:]
    assert env.reasons() == {"inbox/nojob.cancel.json": "unknown_job", "inbox/notbool.cancel.json": "schema_violation"}
    assert not env.events("media_deleted")


def test_media_deletion_follows_no_link_in_place_of_the_folder_or_the_record(tmp_path: Path) -> None:
    from sealfuse.appliance.errors import UnsafePathError
    from sealfuse.appliance.fsutil import FollowError

    root = tmp_path / "spool"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "result.json").write_text('{"job_id": "x"}')
    (outside / "out.png").write_bytes(b"keep")
    (root / "outbox" / "j1").mkdir(parents=True)
    (root / "failed").mkdir()
    (root / "outbox" / "j1" / "out.png").write_bytes(b"media")
    os.symlink(outside / "result.json", root / "outbox" / "j1" / "result.json")  # a linked record
    os.symlink(outside, root / "outbox" / "j2")  # a linked job folder
    with pytest.raises(UnsafePathError):
        spool.delete_media(root, "j1", requested_by="x", request="inbox/a.cancel.json")
    with pytest.raises(FollowError):
        spool.delete_media(root, "j2", requested_by="x", request="inbox/b.cancel.json")
    assert spool.delete_media(root, "nope", requested_by="x", request="inbox/c.cancel.json") is None
    assert (root / "outbox" / "j1" / "out.png").read_bytes() == b"media"  # nothing deleted
    assert sorted(p.name for p in outside.iterdir()) == ["out.png", "result.json"]
    assert (outside / "result.json").read_text() == '{"job_id": "x"}'
