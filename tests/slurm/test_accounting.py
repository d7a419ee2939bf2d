"""With Slurm accounting (slurmdbd + MariaDB, so sacct answers), a job that ended and was forgotten
by slurmctld while no daemon ran is judged from sacct after the restart, not run again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.slurmlib import SlurmCluster, accounting_skip_reason
from tests.slurm.test_dispatch import SlurmWatch, _runjob_pids
from tests.watch.watchlib import png_variant, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def acct_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = accounting_skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(Path(tmp_path_factory.mktemp("slurm-acct")), accounting=True, min_job_age=2)
    try:
        yield cluster.start(timeout=60)
    finally:
        cluster.stop()


def test_a_job_slurmctld_forgot_while_the_daemon_was_down_is_judged_from_sacct(
        acct_slurm: SlurmCluster, tmp_path: Path, hanks_png: Path) -> None:
    sw = SlurmWatch(tmp_path, hanks_png, acct_slurm)
    sw.hold.touch()
    try:
        sw.configure(retries=0)
        daemon = sw.start()
        env = sw.env
        png_variant(env.hanks, env.inbox / "tom" / "f__slow__.png", 97)
        job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/f__slow__.png"), 30, "the claim")
        slurm_id = sw.wait_running(job_id)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        for pid in _runjob_pids(job_id):
            os.kill(pid, signal.SIGKILL)  # the run dies on its node while no daemon watches
        wait_for(lambda: not acct_slurm.run("squeue", "-h", "-t", "all", "-o", "%i", check=False)
                 .stdout.split().count(slurm_id), 240, "slurmctld to forget the job (MinJobAge)")
        acct = acct_slurm.run("sacct", "-n", "-P", "-X", "-j", slurm_id, "-o", "State,ExitCode").stdout
        assert acct.strip() == "FAILED|0:9"
        sw.start()
        wait_for(lambda: env.events("failed"), 60, "the job's outcome")
        sw.stop()
        recovered = {e["job"]: e for e in env.events("recovered")}
        assert recovered[job_id]["outcome"] == "adopted"
        (err,) = env.failed().values()
        assert err["reason"] == "worker_crashed"  # killed, and "killed" is not in retry_on
        assert err["evidence"]["slurm_state"] == "FAILED" and err["evidence"]["exit_code"] == "0:9"
        assert sw.slurm_ids(job_id) == [slurm_id]  # judged, not run again
        assert not env.events("resubmitted") and not env.done()
    finally:
        sw.hold.unlink(missing_ok=True)
        sw.env.stop_all()
