"""The Slurm dispatcher on its own against the real Slurm: the sbatch it builds from the settings,
Slurm states in the metrics while a job runs, and cancel (job removal) ending the Slurm job without
a resubmission."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sealfuse.appliance.metrics import Metrics
from sealfuse.appliance.runjob import job_dir
from sealfuse.appliance.watch import spool as S
from sealfuse.appliance.watch.dispatch import DispatchEvent, JobRequest
from sealfuse.appliance.watch.slurm import SlurmDispatcher, SlurmSettings
from tests.slurm.slurmlib import NODE, SlurmCluster
from tests.watch.watchlib import png_variant, wait_for

HARNESS = Path(__file__).with_name("runjob_harness.py")


def _request(spool: Path, hanks: Path, name: str) -> JobRequest:
    for d in ("inbox/tom", "work", "outbox", "failed"):
        (spool / d).mkdir(parents=True, exist_ok=True)
    drop = png_variant(hanks, spool / "inbox" / "tom" / name, 95)
    record = S.claim(spool, [("target", drop)], kind="preset", preset="tom", options={}, label=None,
                     client_ref=None, seen="2026-01-01T00:00:00Z")
    assert record is not None
    target = spool / "work" / record["job_id"] / "in" / name
    return JobRequest(record["job_id"], spool, hanks, target, target, {}, 120)


def test_sbatch_arguments_follow_the_settings() -> None:
    s = SlurmSettings(partition="gpu", account="vfx", qos="high", gres="gpu:a100:1", cpus_per_task=4,
                      mem_mb=16384, extra_args=("--constraint=nvlink",), command=("/opt/sf/bin/sealfuse",),
                      node_tmp_dir="/dev/shm")
    d = SlurmDispatcher(s, spool=Path("/srv/spool"), engine_options={})
    req = JobRequest("20260101T000000-a-abcdef", Path("/srv/spool"), Path("/f.png"), Path("/t.png"),
                     Path("/t.png"), {}, 900)
    args = d.sbatch_args(req)
    assert args[:1] == ["--parsable"] and "--no-requeue" in args
    for a in ("--partition=gpu", "--account=vfx", "--qos=high", "--gres=gpu:a100:1", "--cpus-per-task=4",
              "--mem=16384", "--time=15", "--constraint=nvlink",
              "--job-name=sealfuse-20260101T000000-a-abcdef",
              "--output=/srv/spool/slurm/20260101T000000-a-abcdef/slurm-%j.out"):
        assert a in args, a
    script = d.batch_script(req)
    assert script.splitlines()[-1] == ("exec /opt/sf/bin/sealfuse run-job --spool /srv/spool --job-id "
                                       "20260101T000000-a-abcdef --tmp-dir /dev/shm")
    assert SlurmDispatcher(SlurmSettings(time_limit_minutes=7), spool=Path("/s"), engine_options={}
                           ).time_limit_minutes(req) == 7


def test_cancel_ends_the_slurm_job_and_nothing_is_resubmitted(
        slurm: SlurmCluster, tmp_path: Path, hanks_png: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    metrics = Metrics(tmp_path / "m.prom", backend="slurm")
    d = SlurmDispatcher(SlurmSettings(poll_seconds=0.1, cpus_per_task=1, mem_mb=256, retries=3,
                                      retry_on=("node_fail", "cancelled", "killed"),
                                      command=(sys.executable, str(HARNESS))),
                        spool=tmp_path / "spool", engine_options={"execution_providers": ["cpu"]},
                        metrics=metrics,
                        env={**os.environ, **slurm.env, "SEALFUSE_TEST_HOLD_FILE": str(hold)})
    d.start()
    assert d.ready and d.free_slots() == 32
    req = _request(tmp_path / "spool", hanks_png, "x__slow__.png")
    placement = d.submit(req)
    assert placement.backend == "slurm" and placement.slurm_job_id
    events: list[DispatchEvent] = []

    def placed() -> bool:
        events.extend(d.poll())
        return any(e.kind == "placed" for e in events)

    wait_for(placed, 60, "the job to start")
    assert [e.info["node"] for e in events if e.kind == "placed"] == [NODE]
    metrics.write()
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families((tmp_path / "m.prom").read_text()) for s in f.samples}
    assert samples[("sealfuse_slurm_jobs", (("state", "running"),))] == 1
    assert samples[("sealfuse_slurm_jobs", (("state", "pending"),))] == 0
    d.cancel(req.job_id)
    wait_for(lambda: slurm.job_field(placement.slurm_job_id, "JobState") == "CANCELLED", 30, "scancel")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        events.extend(d.poll())
        time.sleep(0.1)
    assert [e.kind for e in events] == ["ready", "placed"]  # no failure, no resubmission
    assert d.running() == {} and d.free_slots() == 32
    record = job_dir(tmp_path / "spool", req.job_id)
    assert (record / "dispatch.reported.json").is_file() and not (record / "dispatch.json").exists()
    assert (tmp_path / "spool" / "work" / req.job_id / "claim.json").is_file()  # the claim is the daemon's
    d.stop()
