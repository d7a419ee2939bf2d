"""The daemon's parts without worker processes: admission decisions, the spool's at-most-once
commit and its recovery, and status files with client_ref through an injected dispatcher."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sealfuse.appliance.sdnotify import Notifier
from sealfuse.appliance.watch import errors, recovery, spool
from sealfuse.appliance.watch.admission import Admission
from sealfuse.appliance.watch.config import Preset, WatchConfig
from sealfuse.appliance.watch.daemon import Daemon, Paths
from tests.watch.fakes import CopyDispatcher
from tests.watch.watchlib import png_variant

EXTS = ((".png", ".jpg"), (".mp4",))


def _spool(root: Path) -> Path:
    for d in ("inbox", "work", "outbox", "failed", "status"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def _admission(root: Path, **cfg: object) -> Admission:
    presets = {"tom": Preset("tom", root / "face.png", None, {})}
    return Admission(WatchConfig(presets=presets, **cfg), root / "inbox", EXTS)  # type: ignore[arg-type]


@pytest.mark.parametrize("make,error", [
    (lambda p, out: os.symlink(out, p), errors.SymlinkError),
    (lambda p, out: os.link(out, p), errors.HardlinkError),
    (lambda p, out: os.mkfifo(p), errors.FifoError),
    (lambda p, out: p.mkdir(), errors.DirectoryError),
    (lambda p, out: p.write_bytes(b""), errors.EmptyDropError),
])
def test_admission_names_each_kind_of_non_regular_drop(tmp_path: Path, make, error) -> None:
    root = _spool(tmp_path / "spool")
    (root / "inbox" / "tom").mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"secret")
    drop = root / "inbox" / "tom" / "x.png"
    make(drop, outside)
    with pytest.raises(error):
        _admission(root).preset_drop(drop)
    assert outside.read_bytes() == b"secret"


def test_admission_claims_a_whole_manifest_with_its_client_ref(tmp_path: Path) -> None:
    root = _spool(tmp_path / "spool")
    inbox = root / "inbox"
    (inbox / "s.png").write_bytes(b"s")
    (inbox / "t.png").write_bytes(b"t")
    doc = {"version": 1, "source": "s.png", "target": "t.png", "client_ref": "ord-17.a_b"}
    (inbox / "m.job.json").write_text(json.dumps(doc))
    verdict = _admission(root).manifest(inbox / "m.job.json", age=0, stable=lambda p: True)
    assert verdict.rejection is None and verdict.claim is not None
    assert verdict.claim.client_ref == "ord-17.a_b"
    assert dict(verdict.claim.files) == {"manifest": inbox / "m.job.json", "source": inbox / "s.png",
                                         "target": inbox / "t.png"}
    # waiting media: neither a claim nor a rejection until manifest_wait_seconds
    waiting = _admission(root).manifest(inbox / "m.job.json", age=0, stable=lambda p: p.name != "t.png")
    assert waiting.claim is None and waiting.rejection is None


@pytest.mark.parametrize("ref", ["", "x" * 65, "a b", "ref\n", "é", 17])
def test_a_bad_client_ref_is_a_schema_violation(tmp_path: Path, ref: object) -> None:
    root = _spool(tmp_path / "spool")
    inbox = root / "inbox"
    (inbox / "t.png").write_bytes(b"t")
    (inbox / "m.job.json").write_text(json.dumps({"version": 1, "preset": "tom", "target": "t.png",
                                                  "client_ref": ref}))
    verdict = _admission(root).manifest(inbox / "m.job.json", age=0, stable=lambda p: True)
    assert isinstance(verdict.rejection, errors.SchemaViolationError)
    assert verdict.client_ref is None
    assert verdict.reject_paths == [inbox / "m.job.json"]  # the schema is checked before any name


def _claimed(root: Path, name: str = "t.png") -> spool.Job:
    (root / "inbox" / name).write_bytes(b"target bytes")
    record = spool.claim(root, [("target", root / "inbox" / name)], kind="preset", preset=None,
                         options={}, label=None, client_ref="c1", seen="then")
    assert record is not None
    return spool.job_from_claim(record, root / "work" / record["job_id"], {})


def test_commit_done_commits_at_most_once_even_from_another_process(tmp_path: Path) -> None:
    root = _spool(tmp_path / "spool")
    job = _claimed(root)
    produced = tmp_path / "out.png"
    produced.write_bytes(b"swapped")
    code = ("import sys; from pathlib import Path; from sealfuse.appliance.watch import spool; "
            "r = spool.commit_done(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), "
            "{'job_id': sys.argv[2], 'output': {'name': 't.png'}}); print('committed' if r else 'already')")
    first = subprocess.run([sys.executable, "-c", code, str(root), job.job_id, str(produced)],
                           capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "committed"
    again = subprocess.run([sys.executable, "-c", code, str(root), job.job_id, str(produced)],
                           capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "already"
    assert spool.commit_failed(root, job, errors.WorkerCrashError("late")) is False
    assert [p.name for p in (root / "outbox").iterdir()] == [job.job_id]
    assert list((root / "failed").iterdir()) == [] and list((root / "work").iterdir()) == []
    result = json.loads((root / "outbox" / job.job_id / "result.json").read_text())
    assert result["output"]["size"] == len(b"swapped")


def test_a_commit_taken_but_not_published_is_published_by_recovery(tmp_path: Path) -> None:
    root = _spool(tmp_path / "spool")
    job = _claimed(root)
    staging = root / "outbox" / f".{job.job_id}.0123abcd.tmp"
    staging.mkdir()
    (staging / "t.png").write_bytes(b"swapped")
    (staging / "result.json").write_text("{}")
    os.rename(job.wdir / "claim.json", job.wdir / "commit-done-0123abcd.json")  # killed right here
    other = root / "outbox" / f".{job.job_id}.ffffffff.tmp"  # a losing commit's staging
    other.mkdir()
    decisions = recovery.recover(root, {}, retain_inputs=False)
    assert [(d.job_id, d.outcome) for d in decisions] == [(job.job_id, "done")]
    assert sorted(p.name for p in (root / "outbox").iterdir()) == [job.job_id]
    assert not job.wdir.exists()


def test_a_commit_taken_without_its_staging_runs_the_job_again(tmp_path: Path) -> None:
    root = _spool(tmp_path / "spool")
    job = _claimed(root)
    os.rename(job.wdir / "claim.json", job.wdir / "commit-failed-0123abcd.json")
    decisions = recovery.recover(root, {}, retain_inputs=False)
    assert [(d.job_id, d.outcome) for d in decisions] == [(job.job_id, "requeue")]
    assert (job.wdir / "claim.json").is_file()


def test_status_files_and_client_ref_follow_each_job(tmp_path: Path, hanks_png: Path) -> None:
    root = tmp_path / "spool"
    paths = Paths(root, tmp_path / "state", tmp_path / "state" / "audit.jsonl",
                  tmp_path / "state" / "m.prom", tmp_path / "run")
    (tmp_path / "run").mkdir()
    cfg = WatchConfig(stable_seconds=0.1, scan_interval=0.1,
                      presets={"tom": Preset("tom", hanks_png, None, {})})
    (root / "inbox" / "tom").mkdir(parents=True)
    target_bytes = png_variant(hanks_png, root / "inbox" / "t.png", 1).read_bytes()
    png_variant(hanks_png, root / "inbox" / "noface.png", 2)
    (root / "inbox" / "a.job.json").write_text(json.dumps(
        {"version": 1, "preset": "tom", "target": "t.png", "client_ref": "order-1"}))
    (root / "inbox" / "b.job.json").write_text(json.dumps(
        {"version": 1, "preset": "tom", "target": "noface.png", "client_ref": "order-2"}))
    (root / "inbox" / "c.job.json").write_text('{"version": 1, "client_ref": "order-3", "target": 5}')
    fake = CopyDispatcher()
    code = Daemon(paths, cfg, once=True, notifier=Notifier({}), dispatcher=fake).run()
    assert code == errors.EXIT_OK and len(fake.submitted) == 2
    docs = {}
    for f in (root / "status").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o640
        doc = json.loads(f.read_text())
        docs[doc["client_ref"]] = doc
    assert set(docs) == {"order-1", "order-2", "order-3"}
    done, noface, bad = docs["order-1"], docs["order-2"], docs["order-3"]
    assert (done["state"], done["output"], done["reason"]) == ("done", "t.png", None)
    assert done["dispatch"] == {"backend": "local", "slurm_job_id": None, "node": None}
    assert done["progress"]["fraction"] == 1.0 and done["updated"].endswith("Z")
    assert (noface["state"], noface["reason"]) == ("failed", "no_face_in_target")
    assert (bad["state"], bad["reason"]) == ("failed", "schema_violation")
    result = json.loads((root / "outbox" / done["job_id"] / "result.json").read_text())
    assert result["client_ref"] == "order-1"
    assert (root / "outbox" / done["job_id"] / "t.png").read_bytes() == target_bytes
    for doc in (noface, bad):
        err = json.loads((root / "failed" / doc["job_id"] / "error.json").read_text())
        assert err["client_ref"] == doc["client_ref"] and err["reason"] == doc["reason"]


def test_watch_help_lists_every_exit_code_from_the_table() -> None:
    proc = subprocess.run([sys.executable, "-m", "sealfuse", "watch", "--help"], capture_output=True,
                          text=True, check=True)
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert set(errors.EXIT_CODES) == {0, 2, 3, 4, 5}
    for code, text in errors.EXIT_CODES.items():
        assert f"{code}  {text}" in lines


def test_a_mount_point_in_a_preset_folder_is_refused_as_foreign(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    root = _spool(tmp_path / "spool")
    mount = root / "inbox" / "tom" / "mnt"
    mount.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        (mount / "inside.png").write_bytes(b"not ours")
        with pytest.raises(errors.ForeignFilesystemError):
            _admission(root).preset_drop(mount)
        (root / "inbox" / "tom" / "plain.png").write_bytes(b"ours")  # a file beside it is judged normally
        assert _admission(root).preset_drop(root / "inbox" / "tom" / "plain.png").kind == "preset"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_preset_folder_made_again_takes_the_inbox_bits_without_chmod(tmp_path: Path, monkeypatch) -> None:
    from sealfuse.appliance.watch.inbox import InboxWatcher

    inbox = tmp_path / "spool" / "inbox"
    inbox.mkdir(parents=True)
    os.chmod(inbox, 0o3770)  # setgid + sticky, as tmpfiles.d makes it

    def refuse(*_args: object, **_kwargs: object) -> None:  # as RestrictSUIDSGID= does for setgid modes
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(os, "fchmod", refuse)
    watcher = InboxWatcher(inbox, ["tom"], 0.1)
    watcher.start()
    try:
        watcher.restore_preset("tom")
    finally:
        watcher.close()
    assert stat.S_IMODE((inbox / "tom").lstat().st_mode) == 0o3770
