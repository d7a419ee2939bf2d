"""Jobs through `sealfuse watch` with `[dispatch] backend = "slurm"` on a real Slurm (munged,
slurmctld, slurmd): exactly once into outbox/, lost runs resubmitted or failed as configured, time
limits, and a SIGKILLed daemon that adopts its Slurm jobs again."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.slurm.slurmlib import NODE, SlurmCluster
from tests.watch.watchlib import REPO, WatchEnv, png_variant, wait_for

HARNESS = Path(__file__).with_name("runjob_harness.py")


class SlurmWatch:
    """A spool, a config with the Slurm backend, and the daemon as a real process."""

    def __init__(self, root: Path, hanks: Path, slurm: SlurmCluster) -> None:
        self.env = WatchEnv(root, hanks)
        self.slurm = slurm
        self.hold = root / "hold"
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, **slurm_opts: Any) -> None:
        opts = {"poll_seconds": 0.3, "cpus_per_task": 1, "mem_mb": 256,
                "command": [sys.executable, str(HARNESS)], **slurm_opts}
        lines = ["[dispatch]", 'backend = "slurm"', "[dispatch.slurm]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
        self.env.write_config(extra="\n".join(lines))

    def start(self) -> subprocess.Popen[bytes]:
        before = len(self.env.events("worker_ready"))
        self.proc = self.env.start(SLURM_CONF=str(self.slurm.conf), SEALFUSE_TEST_HOLD_FILE=str(self.hold))
        wait_for(lambda: len(self.env.events("worker_ready")) > before and self.proc and self.proc.poll() is None,
                 30, "the daemon to reach the Slurm controller")
        return self.proc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(60) == 0

    def job_ids(self) -> dict[str, str]:
        """drop path -> job id, from the audit log's claims."""
        return {e["drop"][-1]: e["job"] for e in self.env.events("claimed")}

    def slurm_ids(self, job_id: str) -> list[str]:
        for name in ("dispatch.json", "dispatch.reported.json"):
            path = self.env.spool / "slurm" / job_id / name
            if path.exists():
                return json.loads(path.read_text())["slurm_job_ids"]
        return []

    def wait_running(self, job_id: str, n: int = 1, timeout: float = 60) -> str:
        """The n-th Slurm job of `job_id`, once Slurm runs it (and the harness holds it)."""
        def running() -> str | None:
            ids = self.slurm_ids(job_id)
            if len(ids) >= n and self.slurm.job_field(ids[n - 1], "JobState") == "RUNNING":
                log = self.env.spool / "slurm" / job_id / f"slurm-{ids[n - 1]}.out"
                if log.exists() and "held:" in log.read_text():
                    return ids[n - 1]
            return None
        return wait_for(running, timeout, f"Slurm job #{n} of {job_id} to run")


@pytest.fixture
def sw(tmp_path: Path, hanks_png: Path, slurm: SlurmCluster) -> Iterator[SlurmWatch]:
    w = SlurmWatch(tmp_path, hanks_png, slurm)
    w.hold.touch()
    yield w
    w.hold.unlink(missing_ok=True)
    w.env.stop_all()


def _runjob_pids(job_id: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(HARNESS).encode() in cmd and job_id.encode() in cmd:
                pids.append(int(d.name))
    return pids


def _no_face_png(path: Path) -> Path:
    from PIL import Image

    tmp = path.with_name("." + path.name)
    Image.new("RGB", (160, 120), (90, 120, 150)).save(tmp, format="PNG")
    os.rename(tmp, path)
    return path


def test_jobs_run_as_slurm_jobs_and_land_exactly_once(sw: SlurmWatch) -> None:
    sw.configure(gres="gpu:1")
    sw.start()
    env = sw.env
    for i in range(3):
        png_variant(env.hanks, env.inbox / "tom" / f"s{i}.png", 70 + i)
    _no_face_png(env.inbox / "tom" / "noface.png")
    wait_for(lambda: len(env.events("done")) == 3 and len(env.events("failed")) == 1, 240,
             "four jobs through Slurm")
    sw.stop()
    done, failed = env.done(), env.failed()
    assert sorted(done) == [f"inbox/tom/s{i}.png" for i in range(3)]
    assert failed["inbox/tom/noface.png"]["reason"] == "no_face_in_target"
    assert failed["inbox/tom/noface.png"]["evidence"]["slurm_state"] == "FAILED"
    # exactly once: one outbox folder per job, one `done` entry each, nothing left in work/
    assert len([d for d in (env.spool / "outbox").iterdir() if not d.name.startswith(".")]) == 3
    assert len(env.events("done")) == 3 and not list((env.spool / "work").iterdir())
    ids = sw.job_ids()
    jobcomp = {r["JobId"]: r for r in sw.slurm.jobcomp_records()}
    for drop, res in done.items():
        job_id = ids[drop]
        (slurm_id,) = sw.slurm_ids(job_id)  # one Slurm job per sealfuse job
        assert res["dispatch"] == {"backend": "slurm", "slurm_job_id": slurm_id, "node": NODE}
        assert jobcomp[slurm_id]["JobState"] == "COMPLETED" and jobcomp[slurm_id]["NodeList"] == NODE
        out = env.spool / "outbox" / job_id / res["output"]["name"]
        assert hashlib.sha256(out.read_bytes()).hexdigest() == res["output"]["sha256"]
        (entry,) = [e for e in env.events("done") if e["job"] == job_id]
        assert entry["slurm_job_id"] == slurm_id and entry["node"] == NODE
        assert entry["output_sha256"] == res["output"]["sha256"]
        status = json.loads((env.spool / "status" / f"{job_id}.json").read_text())
        assert status["state"] == "done"
        assert status["dispatch"] == {"backend": "slurm", "slurm_job_id": slurm_id, "node": NODE}
        started = [e for e in env.events("started_job") if e["job"] == job_id]
        assert started and started[0]["backend"] == "slurm" and started[0]["slurm_job_id"] == slurm_id
    # the GRES, memory and CPU options reached sbatch
    any_id = sw.slurm_ids(ids["inbox/tom/s0.png"])[0]
    assert sw.slurm.job_field(any_id, "TresPerNode") == "gres:gpu:1"
    assert sw.slurm.job_field(any_id, "MinMemoryNode") == "256M"
    verify = subprocess.run([sys.executable, "-m", "sealfuse", "audit", "verify", str(env.state / "audit.jsonl")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    prom = (env.state / "sealfuse.prom").read_text()
    assert 'sealfuse_build_info{backend="slurm"' in prom
    assert 'sealfuse_jobs_total{outcome="done",reason="ok"} 3.0' in prom
    assert "sealfuse_job_queue_wait_seconds_count 4.0" in prom


def test_a_job_waiting_for_the_only_gpu_is_queued_in_its_status_and_metrics(sw: SlurmWatch) -> None:
    sw.configure(gres="gpu:1")
    sw.start()
    env = sw.env
    for i in range(2):
        png_variant(env.hanks, env.inbox / "tom" / f"g{i}__slow__.png", 88 + i)
    wait_for(lambda: len(sw.job_ids()) == 2, 30, "two claims")
    ids = sw.job_ids()

    def one_runs_one_waits() -> tuple[str, str] | None:
        states = {j: sw.slurm.job_field(sw.slurm_ids(j)[0], "JobState") if sw.slurm_ids(j) else None
                  for j in ids.values()}
        running = [j for j, st in states.items() if st == "RUNNING"]
        pending = [j for j, st in states.items() if st == "PENDING"]
        if len(running) == 1 and len(pending) == 1 and \
                sw.slurm.job_field(sw.slurm_ids(pending[0])[0], "Reason") == "Resources":
            return running[0], pending[0]
        return None

    # one job holds the only (fake) GPU; the other waits for it (Reason=Resources)
    running, pending = wait_for(one_runs_one_waits, 60, "one job on the GPU, one waiting for it")
    status = lambda j: json.loads((env.spool / "status" / f"{j}.json").read_text())  # noqa: E731
    wait_for(lambda: status(running)["dispatch"]["node"] == NODE, 30, "the running job's node")
    assert status(running)["state"] == "running"
    assert status(pending)["state"] == "queued"
    assert status(pending)["dispatch"] == {"backend": "slurm", "slurm_job_id": sw.slurm_ids(pending)[0],
                                           "node": None}
    prom = env.state / "sealfuse.prom"
    wait_for(lambda: 'sealfuse_slurm_jobs{state="pending"} 1.0' in prom.read_text()
             and 'sealfuse_slurm_jobs{state="running"} 1.0' in prom.read_text(), 30, "Slurm states in metrics")
    sw.hold.unlink()
    wait_for(lambda: len(env.events("done")) == 2, 120, "both jobs")
    sw.stop()
    assert status(pending)["state"] == "done" and status(pending)["dispatch"]["node"] == NODE


def test_a_duplicated_run_of_a_claimed_job_cannot_commit_twice(sw: SlurmWatch) -> None:
    sw.configure()
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "d__slow__.png", 80)
    job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/d__slow__.png"), 30, "the claim")
    first = sw.wait_running(job_id)
    # A second Slurm job running the very same batch step (as a requeue or a double submission would).
    script = sw.slurm.run("scontrol", "write", "batch_script", first, "-").stdout
    assert "run-job" in script and job_id in script
    dup = subprocess.run(["sbatch", "--parsable", f"--output={env.root}/dup-%j.out", f"--chdir={env.root}",
                          "--cpus-per-task=1", "--mem=256"], input=script,
                         env={**sw.slurm.env, "SEALFUSE_TEST_HOLD_FILE": str(sw.hold)},
                         capture_output=True, text=True, check=True).stdout.strip()
    wait_for(lambda: "held:" in (env.root / f"dup-{dup}.out").read_text()
             if (env.root / f"dup-{dup}.out").exists() else False, 60, "the duplicate to run")
    sw.hold.unlink()
    wait_for(lambda: sw.slurm.job_field(dup, "JobState") in ("COMPLETED", "FAILED"), 120, "the duplicate")
    wait_for(lambda: env.events("done"), 120, "the job")
    sw.stop()
    assert len([d for d in (env.spool / "outbox").iterdir()]) == 1
    assert len(env.events("done")) == 1
    assert sw.slurm.job_field(dup, "JobState") == "COMPLETED"  # exits 0, having changed nothing
    logs = (env.spool / "slurm" / job_id / f"slurm-{first}.out").read_text() + \
        (env.root / f"dup-{dup}.out").read_text()
    assert logs.count(f"{job_id}: committed") == 1
    assert logs.count(f"{job_id}: already_committed") == 1


def test_a_run_killed_on_its_node_is_resubmitted_once_and_lands_once(sw: SlurmWatch) -> None:
    sw.configure(retries=1, retry_on=["node_fail", "killed"])
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "k__slow__.png", 81)
    job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/k__slow__.png"), 30, "the claim")
    first = sw.wait_running(job_id)
    pids = _runjob_pids(job_id)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    second = sw.wait_running(job_id, n=2)
    assert second != first
    sw.hold.unlink()
    wait_for(lambda: env.events("done"), 120, "the resubmitted job")
    sw.stop()
    (res,) = env.done().values()
    assert res["dispatch"]["slurm_job_id"] == second
    assert sw.slurm.job_field(first, "JobState") == "FAILED"
    assert sw.slurm.job_field(first, "ExitCode") == "0:9"
    (resub,) = env.events("resubmitted")
    assert resub["reason"] == "killed" and resub["previous_slurm_job_id"] == first
    assert len(env.events("done")) == 1 and not env.failed()
    assert sw.slurm_ids(job_id) == [first, second]


def test_a_run_cancelled_again_after_its_retry_fails_with_the_reason(sw: SlurmWatch) -> None:
    sw.configure(retries=1, retry_on=["cancelled"])
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "c__slow__.png", 82)
    job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/c__slow__.png"), 30, "the claim")
    first = sw.wait_running(job_id)
    sw.slurm.run("scancel", first)
    second = sw.wait_running(job_id, n=2)
    sw.slurm.run("scancel", second)
    wait_for(lambda: env.events("failed"), 60, "the job to fail")
    sw.stop()
    (err,) = env.failed().values()
    assert err["reason"] == "cancelled"
    assert err["evidence"]["slurm_job_ids"] == [first, second]
    assert err["evidence"]["retries_used"] == 1
    assert not env.done() and len(env.events("failed")) == 1
    assert len(env.events("resubmitted")) == 1
    prom = (env.state / "sealfuse.prom").read_text()
    assert 'sealfuse_slurm_resubmissions_total{reason="cancelled"} 1.0' in prom
    assert 'sealfuse_jobs_total{outcome="failed",reason="cancelled"} 1.0' in prom


def test_a_removal_request_scancels_the_running_slurm_job_and_it_ends_once_as_removed(sw: SlurmWatch) -> None:
    sw.configure(retries=1, retry_on=["cancelled", "killed"])  # a removal is never resubmitted
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "r__slow__.png", 83)
    job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/r__slow__.png"), 30, "the claim")
    slurm_id = sw.wait_running(job_id)
    tmp = env.inbox / ".rm.cancel.json"
    tmp.write_text(json.dumps({"version": 1, "job_id": job_id, "requested_by": "console:alice"}))
    os.rename(tmp, env.inbox / "rm.cancel.json")
    wait_for(lambda: env.events("removed"), 30, "the removal")
    wait_for(lambda: sw.slurm.job_field(slurm_id, "JobState") == "CANCELLED", 30, "scancel")
    wait_for(lambda: not _runjob_pids(job_id), 30, "the run on the node to end")
    sw.hold.unlink()  # had the run survived, it would try to commit now
    png_variant(env.hanks, env.inbox / "tom" / "next.png", 84)
    wait_for(lambda: env.events("done"), 120, "the next job")
    sw.stop()
    err = env.failed()["inbox/tom/r__slow__.png"]
    assert err["job_id"] == job_id and err["reason"] == "removed"
    assert err["evidence"]["requested_by"] == "console:alice" and err["evidence"]["was"] == "running"
    assert not (env.spool / "outbox" / job_id).exists() and len(env.failed()) == 1
    assert [e["job"] for e in env.events("removed")] == [job_id]
    assert [e["job"] for e in env.events("done")] == [sw.job_ids()["inbox/tom/next.png"]]
    assert not env.events("resubmitted") and not env.events("failed") and sw.slurm_ids(job_id) == [slurm_id]
    status = json.loads((env.spool / "status" / f"{job_id}.json").read_text())
    assert status["state"] == "removed" and status["dispatch"]["slurm_job_id"] == slurm_id
    assert not list(env.inbox.glob("*.cancel.json"))


@pytest.mark.slow
def test_a_job_over_its_slurm_time_limit_fails_with_timeout(sw: SlurmWatch) -> None:
    sw.configure(time_limit_minutes=1, retries=1)
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "t__slow__.png", 83)
    job_id = wait_for(lambda: sw.job_ids().get("inbox/tom/t__slow__.png"), 30, "the claim")
    slurm_id = sw.wait_running(job_id)
    wait_for(lambda: env.events("failed"), 200, "Slurm's time limit")
    sw.stop()
    (err,) = env.failed().values()
    assert err["reason"] == "timeout"
    assert err["evidence"]["slurm_state"] == "TIMEOUT" and err["evidence"]["time_limit_minutes"] == 1
    assert sw.slurm_ids(job_id) == [slurm_id]  # a timeout is the job's own failure: no retry
    assert not env.done()


def test_a_sigkilled_daemon_adopts_running_slurm_jobs_and_reports_ones_finished_meanwhile(
        sw: SlurmWatch) -> None:
    sw.configure()
    daemon = sw.start()
    env = sw.env
    holds = {}
    for i in range(2):
        name = f"a{i}__slow__.png"
        holds[name] = Path(f"{sw.hold}-{name}")
        holds[name].touch()
    sw.hold.unlink()  # each job is held by its own file
    for i, name in enumerate(holds):
        png_variant(env.hanks, env.inbox / "tom" / name, 84 + i)
    wait_for(lambda: len(sw.job_ids()) == 2, 30, "two claims")
    ids = {Path(drop).name: job for drop, job in sw.job_ids().items()}
    slurm_before = {job: sw.wait_running(job) for job in ids.values()}
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    # a0 finishes while no daemon runs; a1 is still running when the next daemon starts
    early, late = ids["a0__slow__.png"], ids["a1__slow__.png"]
    holds["a0__slow__.png"].unlink()
    wait_for(lambda: sw.slurm.job_field(slurm_before[early], "JobState") == "COMPLETED", 120, "a0")
    assert (env.spool / "outbox" / early).is_dir() and not (env.spool / "work" / early).exists()
    sw.start()
    recovered = {e["job"]: e for e in env.events("recovered")}
    assert recovered[late]["outcome"] == "adopted"
    assert recovered[early]["outcome"] == "done"
    assert recovered[early]["slurm_job_id"] == slurm_before[early] and recovered[early]["node"] == NODE
    holds["a1__slow__.png"].unlink()
    wait_for(lambda: env.events("done"), 180, "the adopted job")
    sw.stop()
    for job_id, slurm_id in slurm_before.items():
        assert sw.slurm_ids(job_id) == [slurm_id]  # not resubmitted, not run twice
    done = env.done()
    assert {r["dispatch"]["slurm_job_id"] for r in done.values()} == set(slurm_before.values())
    assert [e["job"] for e in env.events("done")] == [late] and not env.failed()
    assert not env.events("requeued")
    # a third start finds nothing left to report
    sw.start()
    sw.stop()
    assert len([e for e in env.events("recovered") if e["outcome"] == "done"]) == 1


def test_sbatch_refusing_the_job_fails_it_with_submit_failed(sw: SlurmWatch) -> None:
    sw.configure(partition="nosuchpartition", submit_timeout_seconds=0)
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "p.png", 86)
    wait_for(lambda: env.events("failed"), 60, "the refused job")
    sw.stop()
    (err,) = env.failed().values()
    assert err["reason"] == "submit_failed"
    assert "partition" in err["evidence"]["stderr"].lower()
    assert "--partition=nosuchpartition" in err["evidence"]["sbatch_args"]
    assert env.inbox.joinpath("tom").exists() and not list((env.spool / "work").iterdir())


def test_a_node_that_cannot_run_run_job_fails_the_job_with_slurms_log(sw: SlurmWatch) -> None:
    sw.configure(command=["/nonexistent/sealfuse"])
    sw.start()
    env = sw.env
    png_variant(env.hanks, env.inbox / "tom" / "n.png", 87)
    wait_for(lambda: env.events("failed"), 60, "the job to fail")
    sw.stop()
    (err,) = env.failed().values()
    assert err["reason"] == "slurm_failed"
    assert err["evidence"]["slurm_state"] == "FAILED" and err["evidence"]["exit_code"] == "127:0"
    assert "/nonexistent/sealfuse" in err["evidence"]["log_tail"]
    assert len(sw.slurm_ids(sw.job_ids()["inbox/tom/n.png"])) == 1  # a failure of its own: not retried


def test_without_slurm_client_commands_the_daemon_does_not_start(sw: SlurmWatch) -> None:
    sw.configure(bin_dir="/nonexistent/slurm/bin")
    r = subprocess.run(sw.env.argv(once=True), env=sw.env.env(), cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "sbatch, squeue, scontrol, scancel" in r.stdout + r.stderr
    assert "/nonexistent/slurm/bin" in r.stdout + r.stderr


def test_an_unknown_slurm_option_is_a_config_error_naming_the_key(sw: SlurmWatch) -> None:
    sw.configure(partiton="gpu")
    r = subprocess.run(sw.env.argv(once=True), env=sw.env.env(), cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "dispatch.slurm" in r.stdout + r.stderr and "partiton" in r.stdout + r.stderr
    assert not (sw.env.spool / "work").exists()
