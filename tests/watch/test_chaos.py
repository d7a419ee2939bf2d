"""Chaos: SIGKILL the daemon and its worker at seeded random moments while 50 jobs flow; every job
still ends exactly once in outbox/ or failed/, nothing is left behind, and the audit chain holds."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.watch.watchlib import WatchEnv, drop_bytes, png_variant, small_mp4

SEED = 20240611
JOBS = 50
MANIFEST_EVERY = 5
VIDEO_JOBS = (7, 23, 38)  # short mp4 clips of the group photo, 6, 8 and 10 frames
# every 5th other job is a manifest job (source + target + manifest)


def _make_jobs(env: WatchEnv, staging: Path, group: Path) -> list[list[tuple[Path, bytes]]]:
    """Each job: the files to drop, in order (media first, manifest last). Every third preset job
    is the six-face group photo (slower), so that kills land in the middle of jobs."""
    staging.mkdir()
    jobs = []
    for i in range(JOBS):
        if i in VIDEO_JOBS:
            data = small_mp4(group, frames=6 + 2 * VIDEO_JOBS.index(i))
            jobs.append([(env.inbox / "tom" / f"v{i}.mp4", data)])
            continue
        if i % 3 == 1:
            data = png_variant(group, staging / f"g{i}.png", i).read_bytes()
            jobs.append([(env.inbox / "tom" / f"g{i}.png", data)])
            continue
        if i % MANIFEST_EVERY == 0:
            src = png_variant(env.hanks, staging / f"s{i}.png", 1000 + i).read_bytes()
            tgt = png_variant(env.hanks, staging / f"m{i}.png", i).read_bytes()
            man = json.dumps({"version": 1, "source": f"s{i}.png", "target": f"m{i}.png"}).encode()
            jobs.append([(env.inbox / f"s{i}.png", src), (env.inbox / f"m{i}.png", tgt),
                         (env.inbox / f"m{i}.job.json", man)])
        else:
            data = png_variant(env.hanks, staging / f"p{i}.png", i).read_bytes()
            jobs.append([(env.inbox / "tom" / f"p{i}.png", data)])
    return jobs


def _busy(env: WatchEnv) -> str | None:
    """The job id running in the worker right now, from the audit log."""
    running: dict[str, bool] = {}
    for e in env.audit():
        if e["event"] == "started_job":
            running[e["job"]] = True
        elif e["event"] in ("done", "failed", "requeued", "recovered"):
            running.pop(e.get("job"), None)
    return next(reversed(running), None) if running else None


def _job_key(files: list[tuple[Path, bytes]], env: WatchEnv) -> str:
    return str(files[-1][0].relative_to(env.spool))


@pytest.mark.slow
def test_random_sigkills_never_lose_or_duplicate_a_job(watch_env: WatchEnv, tmp_path: Path,
                                                       t1_jpg: Path) -> None:
    env = watch_env
    rng = random.Random(SEED)
    jobs = _make_jobs(env, tmp_path / "staging", t1_jpg)
    pending = list(jobs)
    kills = {"daemon": 0, "worker": 0}
    interrupted = 0
    workers_seen: set[int] = set()
    videos_done: dict[str, int] = {}
    killed_pids: set[int] = set()

    def drop_some(n: int) -> None:
        for _ in range(min(n, len(pending))):
            for path, data in pending.pop(0):
                drop_bytes(data, path)

    drop_some(20)
    while kills["daemon"] < 10:
        daemon = env.start()
        deadline = time.monotonic() + rng.uniform(1.5, 4.5)
        if pending and rng.random() < 0.7:
            time.sleep(rng.uniform(0.0, 1.0))
            drop_some(rng.randint(3, 10))
        while time.monotonic() < deadline:
            children = psutil.Process(daemon.pid).children()
            workers_seen.update(c.pid for c in children)
            busy = _busy(env)
            if children and busy and rng.random() < 0.03:  # now and then, kill the worker mid-job
                children[0].send_signal(signal.SIGKILL)
                kills["worker"] += 1
                killed_pids.add(children[0].pid)
            time.sleep(0.05)
        if _busy(env):
            interrupted += 1
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        kills["daemon"] += 1
    drop_some(JOBS)
    final = env.run_once(timeout=300)
    assert final.returncode == 0, final.stdout.decode()[-3000:]

    done, failed = env.done(), env.failed()
    outcomes: dict[str, list[str]] = {}
    for files in jobs:
        key = _job_key(files, env)
        outcomes[key] = (["done"] if key in done else []) + (["failed"] if key in failed else [])
    assert all(len(v) == 1 for v in outcomes.values()), {k: v for k, v in outcomes.items() if len(v) != 1}
    outbox_dirs = [d for d in (env.spool / "outbox").iterdir()]
    failed_dirs = [d for d in (env.spool / "failed").iterdir()]
    assert len(outbox_dirs) + len(failed_dirs) == JOBS, "no duplicate outputs"
    # Killing the daemon only delays jobs; killing the worker (or repeating interruptions) fails one.
    assert {e["reason"] for e in failed.values()} <= {"worker_crashed", "attempts_exhausted"}
    assert len(failed_dirs) <= kills["worker"] + kills["daemon"]
    crashed = {e["job_id"]: e for e in failed.values() if e["reason"] == "worker_crashed"}
    # Only the test's worker kills fail jobs as crashed: each crashed job last ran in a worker
    # process this test killed, and died of SIGKILL.
    assert len(crashed) <= kills["worker"]
    last_worker = {e["job"]: e["worker_pid"] for e in env.events("started_job")}
    for job_id, err in crashed.items():
        assert err["evidence"]["signal"] == "SIGKILL", err
        assert last_worker[job_id] in killed_pids, (job_id, last_worker[job_id], killed_pids)
    import av

    frames_of = {f"v{i}.mp4": 6 + 2 * VIDEO_JOBS.index(i) for i in VIDEO_JOBS}
    for d in outbox_dirs:
        res = json.loads((d / "result.json").read_text())
        assert (d / res["output"]["name"]).stat().st_size == res["output"]["size"]
        if res["output"]["name"].endswith(".mp4"):
            name = res["output"]["name"]
            with av.open(str(d / name)) as clip:
                decoded = sum(1 for _ in clip.decode(video=0))
            # A video interrupted any number of times still ends whole: every frame of its clip.
            assert res["report"]["frames"] == decoded == frames_of[name], (name, res["report"], decoded)
            videos_done[name] = decoded
    for name in frames_of:  # each clip ended exactly once, done or failed by a kill
        key = f"inbox/tom/{name}"
        assert (name in videos_done) != (key in failed), key
    assert env.residue() == []
    for pid in workers_seen:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    log = env.state / "audit.jsonl"
    verify = [sys.executable, "-m", "sealfuse", "audit", "verify", str(log), "--json"]
    ok = subprocess.run(verify, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    data = bytearray(log.read_bytes())
    middle = len(data) // 2
    data[middle] = ord("0") if data[middle] != ord("0") else ord("1")  # a one-byte edit
    log.write_bytes(bytes(data))
    bad = subprocess.run(verify, capture_output=True, text=True)
    assert bad.returncode == 1
    line_no = data[:middle].count(b"\n") + 1
    assert json.loads(bad.stdout)["bad_line"] in (line_no, line_no + 1)
    print(f"chaos: {JOBS} jobs, {kills['daemon']} daemon SIGKILLs "
          f"({interrupted} mid-job), {kills['worker']} worker SIGKILLs mid-job, "
          f"{len(outbox_dirs)} done ({len(videos_done)} videos, frames {videos_done}), "
          f"{len(failed_dirs)} failed")
