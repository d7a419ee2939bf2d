"""Hostile spools: one daemon per spool, nothing under the spool followed, failing disks."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watch.watchlib import WatchEnv, png_variant, wait_for


def test_a_second_daemon_on_the_same_spool_exits_4_and_touches_nothing(watch_env: WatchEnv) -> None:
    env = watch_env
    first = env.start(SEALFUSE_TEST_SLOW_SECONDS="3")
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "inflight__slow__.png", 1)
    (started,) = wait_for(lambda: env.events("started_job"), 30, "the first daemon's job to start")
    tmp_before = sorted(p.name for p in env.tmp.rglob("*"))
    second = env.run_once(timeout=60)
    out = second.stdout.decode()
    assert second.returncode == 4, out
    assert "another sealfuse watch daemon is running" in out and str(env.spool) in out
    # The job in flight was neither re-queued nor disturbed, the temporaries are intact.
    assert sorted(p.name for p in env.tmp.rglob("*")) == tmp_before
    assert (env.spool / "work" / started["job"]).is_dir()
    assert len(env.events("started")) == 1 and not env.events("recovered")
    wait_for(lambda: env.done(), 60, "the first daemon's job to finish")
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0
    assert set(env.done()) == {"inbox/tom/inflight__slow__.png"} and env.failed() == {}
    # Once the first has stopped, the lock is free again.
    assert env.run_once(timeout=120).returncode == 0


def _tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under root: (mode, content or link target), to prove nothing changed."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(path.relative_to(root))] = (st.st_mode, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                out[str(path.relative_to(root))] = (st.st_mode, path.read_bytes())
            else:
                out[str(path.relative_to(root))] = (st.st_mode, b"")
    return out


def _outside(base: Path, hanks: Path) -> Path:
    """A producer's folder outside the spool: a real face photo, a text file, a sub folder."""
    outside = base / "outside"
    (outside / "sub").mkdir(parents=True)
    png_variant(hanks, outside / "victim.png", 40)
    (outside / "notes.txt").write_text("not the daemon's")
    (outside / "sub" / "deep.png").write_bytes((outside / "victim.png").read_bytes())
    return outside


def test_a_symlinked_preset_folder_made_before_start_is_quarantined_not_followed(watch_env: WatchEnv,
                                                                                  tmp_path: Path) -> None:
    env = watch_env
    outside = _outside(tmp_path, env.hanks)
    before = _tree(outside)
    (env.inbox / "tom").rmdir()
    os.symlink(outside, env.inbox / "tom")
    assert env.run_once().returncode == 0
    assert _tree(outside) == before
    err = env.failed()["inbox/tom"]
    assert err["reason"] == "symlinked_folder" and err["evidence"]["points_to"] == ascii(str(outside))
    assert os.readlink(env.spool / "failed" / err["job_id"] / "input" / "tom") == str(outside)
    assert env.done() == {}
    # The daemon made the preset folder again, a real one, and it works.
    assert stat.S_ISDIR((env.inbox / "tom").lstat().st_mode)
    png_variant(env.hanks, env.inbox / "tom" / "good.png", 41)
    assert env.run_once().returncode == 0
    assert set(env.done()) == {"inbox/tom/good.png"}
    assert env.residue() == []


def test_a_preset_folder_swapped_for_a_link_to_another_filesystem_while_running(watch_env: WatchEnv) -> None:
    env = watch_env
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:  # another filesystem (tmpfs)
        outside = _outside(Path(shm), env.hanks)
        daemon = env.start()
        env.wait_ready()
        os.rename(env.inbox / "tom", env.inbox / "tom.old")  # a producer moves the real folder away
        for _ in range(100):  # the daemon may make the folder again first: remove it and retry
            try:
                os.symlink(outside, env.inbox / "tom")
                break
            except FileExistsError:
                with contextlib.suppress(OSError):
                    (env.inbox / "tom").rmdir()
        png_variant(env.hanks, outside / "late.png", 42)  # and keeps feeding the linked folder
        before = _tree(outside)
        wait_for(lambda: "inbox/tom" in env.failed() and "inbox/tom.old" in env.failed(), 30,
                 "the linked preset folder and the moved one to be quarantined")
        wait_for(lambda: stat.S_ISDIR((env.inbox / "tom").lstat().st_mode), 10, "the preset folder back")
        png_variant(env.hanks, env.inbox / "tom" / "after.png", 43)
        wait_for(lambda: "inbox/tom/after.png" in env.done(), 60, "a job in the new preset folder")
        assert daemon.poll() is None, "the daemon stays up"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        assert _tree(outside) == before
        assert env.reasons() == {"inbox/tom": "symlinked_folder", "inbox/tom.old": "unknown_preset"}
        assert set(env.done()) == {"inbox/tom/after.png"}


@pytest.mark.parametrize("kind", ["socket", "fifo", "hardlink", "symlink"])
def test_odd_files_directly_in_the_inbox_are_quarantined_by_kind(watch_env: WatchEnv, tmp_path: Path,
                                                                kind: str) -> None:
    env = watch_env
    env.write_config({"orphan_seconds": 0})
    victim = tmp_path / "victim.png"
    png_variant(env.hanks, victim, 44)
    data = victim.read_bytes()
    entry = env.inbox / "odd.png"
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(entry))
        sock.close()
    elif kind == "fifo":
        os.mkfifo(entry)
    elif kind == "hardlink":
        os.link(victim, entry)
    else:
        os.symlink(victim, entry)
    daemon = env.start()
    env.wait_ready()
    wait_for(lambda: env.failed(), 60, "the odd entry to be quarantined")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert env.reasons() == {"inbox/odd.png": {"socket": "socket", "fifo": "fifo", "hardlink": "hardlink",
                                               "symlink": "symlink"}[kind]}
    assert victim.read_bytes() == data and not env.done()


@pytest.fixture
def small_spool(watch_env: WatchEnv) -> Iterator[Path]:
    """The spool on its own 4 MiB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    watch_env.spool.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0750", "tmpfs", str(watch_env.spool)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        watch_env.write_config()  # the preset folder again, on the new filesystem
        yield watch_env.spool
    finally:
        watch_env.stop_all()
        subprocess.run(["umount", "-l", str(watch_env.spool)], check=False)


def _fill(spool: Path, leave: int) -> Path:
    """Fill the spool's filesystem until `leave` bytes are free."""
    filler = spool / ".filler"
    vfs = os.statvfs(spool)
    free = vfs.f_bavail * vfs.f_frsize
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_outbox_fails_the_job_with_commit_failed_and_the_daemon_serves_on(
        watch_env: WatchEnv, small_spool: Path) -> None:
    env = watch_env
    daemon = env.start()
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "full.png", 45)
    wait_for(lambda: env.events("started_job"), 30, "the job to start")
    filler = _fill(small_spool, 8192)  # the output (~20 KB) no longer fits; error.json does
    wait_for(lambda: env.failed(), 60, "the job to fail")
    err = env.failed()["inbox/tom/full.png"]
    assert err["reason"] == "commit_failed" and err["evidence"]["errno"] == "ENOSPC", err
    assert (env.spool / "failed" / err["job_id"] / "input" / "full.png").is_file()
    assert not [p for p in (env.spool / "outbox").iterdir()], "no half-written result"
    assert daemon.poll() is None
    filler.unlink()
    png_variant(env.hanks, env.inbox / "tom" / "after.png", 46)
    wait_for(lambda: "inbox/tom/after.png" in env.done(), 60, "a job once there is space again")
    # The status write that the full disk refused was made once there was room.
    status_file = env.spool / "status" / f"{err['job_id']}.json"
    status = wait_for(lambda: status_file.exists() and json.loads(status_file.read_text())["state"] == "failed"
                      and json.loads(status_file.read_text()), 10, "the status file to be written")
    assert (status["state"], status["reason"]) == ("failed", "commit_failed")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert env.residue() == []


def test_a_full_spool_leaves_the_drop_in_place_until_there_is_room(watch_env: WatchEnv,
                                                                   small_spool: Path) -> None:
    env = watch_env
    png_variant(env.hanks, env.inbox / "tom" / "waits.png", 47)
    filler = _fill(small_spool, 0)  # not even claim.json fits
    daemon = env.start()
    env.wait_ready()
    wait_for(lambda: env.events("drop_refused"), 30, "the claim to be refused")
    assert (env.inbox / "tom" / "waits.png").is_file() and not list((env.spool / "work").iterdir())
    assert env.events("drop_refused")[0]["errno"] == errno.ENOSPC
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    filler.unlink()
    assert env.run_once().returncode == 0  # a restart with room takes it
    assert set(env.done()) == {"inbox/tom/waits.png"}


def test_a_job_whose_recovery_fails_is_quarantined_once_and_never_stops_a_start(watch_env: WatchEnv) -> None:
    env = watch_env
    assert env.run_once().returncode == 0
    broken = env.spool / "work" / "20250101T000000-broken-abcdef"
    (broken / "in").mkdir(parents=True)
    (broken / "in" / "x.png").write_bytes(b"claimed bytes")
    (broken / "claim.json").write_text('{"job_id": "20250101T000000-broken-abcdef", "files": [')  # unreadable
    assert env.run_once().returncode == 0
    err = env.failed()
    (doc,) = [json.loads((d / "error.json").read_text()) for d in (env.spool / "failed").iterdir()]
    assert doc["reason"] == "recovery_failed" and doc["job_id"] == broken.name
    assert (env.spool / "failed" / broken.name / "in" / "x.png").read_bytes() == b"claimed bytes"
    assert not broken.exists() and err is not None
    assert env.run_once().returncode == 0  # the next start has nothing left to trip over
    assert [e["outcome"] for e in env.events("recovered")] == ["failed"]


def test_a_read_only_outbox_fails_the_job_with_erofs_and_the_daemon_serves_on(watch_env: WatchEnv) -> None:
    env = watch_env
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    outbox = env.spool / "outbox"
    outbox.mkdir(parents=True)
    if subprocess.run(["mount", "--bind", str(outbox), str(outbox)]).returncode != 0:
        pytest.skip("bind mounts are not permitted here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(outbox)], check=True)
        png_variant(env.hanks, env.inbox / "tom" / "ro.png", 48)
        assert env.run_once().returncode == 0
        err = env.failed()["inbox/tom/ro.png"]
        assert err["reason"] == "commit_failed" and err["evidence"]["errno"] == "EROFS", err
        assert (env.spool / "failed" / err["job_id"] / "input" / "ro.png").is_file()
        assert not list((env.spool / "work").iterdir())
    finally:
        subprocess.run(["umount", "-l", str(outbox)], check=False)
    assert not list(outbox.iterdir()), "nothing half-written in the outbox"


def test_failed_on_another_filesystem_quarantines_without_crossing_it(watch_env: WatchEnv) -> None:
    env = watch_env
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    failed = env.spool / "failed"
    failed.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(failed)]).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        from PIL import Image

        Image.new("RGB", (96, 96), (128, 128, 128)).save(env.inbox / "tom" / ".noface.png", format="PNG")
        os.rename(env.inbox / "tom" / ".noface.png", env.inbox / "tom" / "noface.png")
        png_variant(env.hanks, env.inbox / "tom" / "fine.png", 49)
        assert env.run_once().returncode == 0
        err = env.failed()["inbox/tom/noface.png"]
        assert err["reason"] == "no_face_in_target"  # error.json is there; the input could not follow
        assert set(env.done()) == {"inbox/tom/fine.png"}
        assert not list((env.spool / "work").iterdir())
    finally:
        subprocess.run(["umount", "-l", str(failed)], check=False)


def test_a_full_tmp_dir_fails_the_job_as_scratch_unavailable_not_the_daemon(watch_env: WatchEnv) -> None:
    env = watch_env
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    # Room for the daemon's own folder and a job's folder, not for the job's out/ inside it.
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=3", "tmpfs", str(env.tmp)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        png_variant(env.hanks, env.inbox / "tom" / "scratch.png", 50)
        proc = env.run_once()
        assert proc.returncode == 0, proc.stdout.decode()[-2000:]
        err = env.failed()["inbox/tom/scratch.png"]
        assert err["reason"] == "scratch_unavailable", err
        assert (env.spool / "failed" / err["job_id"] / "input" / "scratch.png").is_file()
    finally:
        subprocess.run(["umount", "-l", str(env.tmp)], check=False)
