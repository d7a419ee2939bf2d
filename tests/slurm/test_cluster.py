"""The test cluster itself: a real slurmctld schedules onto a real slurmd, with a fake GPU GRES."""

from __future__ import annotations

import time
from pathlib import Path

from tests.slurm.slurmlib import NODE, SlurmCluster


def _wait_state(slurm: SlurmCluster, job_id: str, states: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = slurm.job_field(job_id, "JobState") or ""
        if state in states:
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {state!r} after {timeout} s")


def test_a_batch_job_with_a_gpu_gres_runs_on_the_node_and_sees_its_device(
        slurm: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    r = slurm.run("sbatch", "--parsable", "--gres=gpu:1", "-o", str(out),
                  "--wrap", "echo gpu=$CUDA_VISIBLE_DEVICES node=$SLURMD_NODENAME")
    job_id = r.stdout.strip().split(";")[0]
    assert _wait_state(slurm, job_id, {"COMPLETED", "FAILED"}) == "COMPLETED"
    assert out.read_text().split() == ["gpu=0", f"node={NODE}"]
    rec = [j for j in slurm.jobcomp_records() if j["JobId"] == job_id]
    assert rec and rec[0]["JobState"] == "COMPLETED" and rec[0]["NodeList"] == NODE


def test_a_second_gpu_is_refused_because_the_node_has_one(slurm: SlurmCluster) -> None:
    r = slurm.run("sbatch", "--parsable", "--gres=gpu:2", "--wrap", "true", check=False)
    assert r.returncode != 0
    assert "Requested node configuration is not available" in r.stderr
