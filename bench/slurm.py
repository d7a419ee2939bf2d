"""Benchmark the Slurm backend against the local worker on the same jobs, on a real single-node
Slurm (munged + slurmctld + slurmd started here, as in tests/slurm/).

Jobs are dropped one at a time (each waits for the previous to finish), first through a daemon with
the local worker pool, then through one with `[dispatch] backend = "slurm"`. Printed: per-job time
drop -> `done` for each path and their ratio (the Slurm path's overhead: scheduling, a cold
`sealfuse run-job` that loads the models per job, polling), and drop -> start latency under Slurm
(the daemon sees the job RUNNING on its node: the `placed` audit entry).

    .venv/bin/python bench/slurm.py [--jobs 6] [--poll 0.2]      (needs root, slurm-wlm, munge)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.slurm.slurmlib import SlurmCluster, skip_reason  # noqa: E402
from tests.watch.watchlib import png_variant  # noqa: E402


def _images() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    assert spec and spec.submodule_search_locations, "insightface (engine extra) is needed"
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def _audit(state: Path) -> list[dict[str, Any]]:
    p = state / "audit.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.endswith("}")] if p.exists() else []


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _wait(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def run_path(root: Path, backend: str, jobs: int, offset: int, slurm: SlurmCluster, poll: float) -> dict[str, Any]:
    hanks = _images() / "Tom_Hanks_54745.png"
    spool, state = root / "spool", root / "state"
    (spool / "inbox" / "tom").mkdir(parents=True)
    (root / "run").mkdir()
    cfg = ["[watch]", "stable_seconds = 0.2", "scan_interval = 0.2", "job_timeout_seconds = 600",
           "[engine]", 'execution_providers = ["cpu"]', "execution_threads = 1",
           "[presets.tom]", f'source = "{hanks}"']
    if backend == "slurm":
        cfg += ["[dispatch]", 'backend = "slurm"', "[dispatch.slurm]", f"poll_seconds = {poll}",
                "cpus_per_task = 1", "mem_mb = 512"]
    (root / "watch.toml").write_text("\n".join(cfg) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLURM_CONF": str(slurm.conf)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "sealfuse", "watch", "--spool", str(spool), "--config",
                             str(root / "watch.toml"), "--state-dir", str(state), "--tmp-dir", str(root / "run")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: any(e["event"] == "worker_ready" for e in _audit(state)), 300, "the daemon")
        drops: dict[str, float] = {}
        for i in range(jobs):
            name = f"b{i}.png"
            png_variant(hanks, root / f".{name}", offset + i)
            drops[f"inbox/tom/{name}"] = time.time()
            os.rename(root / f".{name}", spool / "inbox" / "tom" / name)
            _wait(lambda i=i: sum(e["event"] == "done" for e in _audit(state)) == i + 1, 300, f"job {i}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    audit = _audit(state)
    job_of = {e["drop"][-1]: e["job"] for e in audit if e["event"] == "claimed"}
    done = {e["job"]: _ts(e["time"]) for e in audit if e["event"] == "done"}
    placed = {}
    for e in audit:
        if e["event"] == "placed" and e["job"] not in placed:
            placed[e["job"]] = _ts(e["time"])
    total = [done[job_of[d]] - t for d, t in drops.items()]
    start = [placed[job_of[d]] - t for d, t in drops.items() if job_of[d] in placed]
    run = [done[job_of[d]] - placed[job_of[d]] for d in drops if job_of[d] in placed]
    swap = []
    for d in drops:
        with open(spool / "outbox" / job_of[d] / "result.json") as f:
            swap.append(float(json.load(f)["seconds"]))
    return {"total": total, "start": start, "run": run, "swap": swap}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=6, help="jobs per path (default 6)")
    ap.add_argument("--poll", type=float, default=0.2, help="[dispatch.slurm] poll_seconds (default 0.2)")
    args = ap.parse_args()
    reason = skip_reason()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="sealfuse-bench-slurm-") as tmp:
        slurm = SlurmCluster(Path(tmp) / "slurm").start()
        try:
            local = run_path(Path(tmp) / "local", "local", args.jobs, 0, slurm, args.poll)
            sl = run_path(Path(tmp) / "slurm-path", "slurm", args.jobs, 1000, slurm, args.poll)
        finally:
            slurm.stop()
    lm, sm = statistics.median(local["total"]), statistics.median(sl["total"])
    print(f"jobs per path: {args.jobs} (one at a time), Slurm poll {args.poll} s, CPU execution provider")
    print(f"local worker  drop -> done  p50 {lm:.2f} s  max {max(local['total']):.2f} s")
    print(f"slurm backend drop -> done  p50 {sm:.2f} s  max {max(sl['total']):.2f} s")
    print(f"per-job overhead of the Slurm path: +{sm - lm:.2f} s, ratio slurm/local {sm / lm:.1f}x")
    if sl["start"]:
        print(f"slurm drop -> start (RUNNING on the node, seen by the daemon)  p50 {statistics.median(sl['start']):.2f} s"
              f"  p99 {_pct(sl['start'], 0.99):.2f} s")
        print(f"slurm start -> done p50 {statistics.median(sl['run']):.2f} s, of which run-job's engine load + swap "
              f"{statistics.median(sl['swap']):.2f} s (the rest: interpreter start and imports, commit, polling)")


if __name__ == "__main__":
    main()
