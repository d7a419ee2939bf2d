"""With the Slurm backend, the Slurm job states reach Prometheus: a job held on the real Slurm's node
shows as running in `sealfuse_slurm_jobs` and in the dashboard's Slurm panel, then its queue wait."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monitoring import dashboard as D
from tests.monitoring.promlib import Stack
from tests.slurm.slurmlib import SlurmCluster
from tests.slurm.slurmlib import skip_reason as slurm_skip_reason
from tests.slurm.test_dispatch import SlurmWatch
from tests.watch.watchlib import REPO, png_variant, wait_for


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(Path(tmp_path_factory.mktemp("slurm")))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_slurm_job_states_and_queue_wait_come_back_through_prometheus(
        prom: Stack, slurm: SlurmCluster, tmp_path: Path, hanks_png: Path) -> None:
    sw = SlurmWatch(tmp_path, hanks_png, slurm)
    sw.hold.touch()
    sw.configure()
    env = sw.env
    argv = env.argv() + ["--metrics-file", str(prom.textfile_dir / "sealfuse.prom")]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env=env.env(SLURM_CONF=str(slurm.conf), SEALFUSE_TEST_HOLD_FILE=str(sw.hold)))
    env.procs.append(proc)
    try:
        wait_for(lambda: env.events("worker_ready"), 30, "the daemon")
        png_variant(env.hanks, env.inbox / "tom" / "m__slow__.png", 99)
        job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/m__slow__.png"), 30, "the claim")
        sw.wait_running(job_id)
        prom.wait(lambda: prom.value('sealfuse_slurm_jobs{state="running"}') == 1, 60,
                  "the running Slurm job in Prometheus")
        assert prom.value('sealfuse_queue_jobs{state="running"}') == 1
        (build,) = prom.query("sealfuse_build_info")
        assert build["metric"]["backend"] == "slurm"
        (panel,) = [e for t, _, e in D.expressions(D.load()) if t == "Slurm jobs by state"]
        assert {r["metric"]["state"] for r in prom.query(panel)} == {"running"}
        sw.hold.unlink()
        prom.wait(lambda: prom.value('sealfuse_jobs_total{outcome="done",reason="ok"}') == 1, 90,
                  "the finished job in Prometheus")
        assert prom.value("sealfuse_job_queue_wait_seconds_count") == 1
        assert prom.value('sealfuse_slurm_jobs{state="running"}') == 0
    finally:
        sw.hold.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        env.stop_all()
