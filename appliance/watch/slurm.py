"""The Slurm backend of the watch service (a `Dispatcher`): each claimed job becomes one Slurm batch
job running `sealfuse run-job` on a compute node that sees the spool over a shared filesystem.

The claim stays the daemon's; the result is published by `run-job` through the spool's atomic
commit (first rename wins), so a requeued or duplicated run cannot commit twice. Jobs are tracked
with squeue/scontrol (and sacct, when the cluster has accounting, for jobs slurmctld has already
forgotten); lost runs (node failure, preemption, and as configured a cancel or kill
from outside sealfuse) are resubmitted `retries` times. Slurm jobs outlive a daemon restart and
are adopted again from SPOOL/slurm/<job-id>/dispatch.json.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sealfuse.appliance.fsutil import write_json_atomic
from sealfuse.appliance.runjob import REQUEST_VERSION, job_dir
from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.dispatch import Dispatcher, DispatchEvent, JobRequest, Placement
from sealfuse.appliance.watch.slurm_cli import (
    COMMANDS,
    TERMINAL,
    SlurmCancelledError,
    SlurmCommands,
    SlurmJobFailedError,
    SlurmNodeFailError,
    SlurmPreemptedError,
    SlurmSettings,
    SlurmSubmitError,
    signal_of,
    tail_of,
)


@dataclass
class Tracked:
    """One sealfuse job in Slurm: its request and every Slurm job id it has had."""

    request: JobRequest
    slurm_ids: list[str] = field(default_factory=list)
    retries_used: int = 0
    state: str = "SUBMITTING"
    node: str | None = None
    reported_node: str | None = None
    started: bool = False
    submit_failed_since: float | None = None
    next_submit: float = 0.0
    last_error: str = ""
    missing_polls: int = 0
    progress_mtime: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)
    # when the daemon claimed the job (epoch seconds), read while claim.json still exists: a fast
    # run commits (and so moves the claim away) before the first poll sees it RUNNING or COMPLETED
    claimed: float | None = None

    @property
    def slurm_id(self) -> str | None:
        return self.slurm_ids[-1] if self.slurm_ids else None


class SlurmDispatcher(SlurmCommands, Dispatcher):
    """Runs each job as `sbatch ... sealfuse run-job --spool SPOOL --job-id ID`."""

    backend = "slurm"
    keeps_jobs_across_restart = True

    def __init__(self, settings: SlurmSettings, *, spool: Path, engine_options: dict[str, Any],
                 retain_inputs: bool = False, metrics: Any = None, env: dict[str, str] | None = None,
                 provenance: dict[str, Any] | None = None) -> None:
        self.s = settings
        self.provenance = provenance  # C2PA signing key, chain, require (None: the node's installed key)
        self.spool = spool.absolute()
        self.engine_options = engine_options
        self.retain_inputs = retain_inputs
        self.metrics = metrics
        self.env = env if env is not None else dict(os.environ)
        self.jobs: dict[str, Tracked] = {}
        self._ready = False
        self._events: list[DispatchEvent] = []
        self._next_poll = 0.0
        self._sacct_ok: bool | None = None  # None: not asked yet; False: no accounting here

    # ------------------------------------------------------------------ Dispatcher
    def start(self) -> None:
        """Check that the Slurm client commands exist (else the daemon cannot start: exit 3), then
        ask the controller; an unreachable controller is waited for (READY follows its answer)."""
        missing = [c for c in COMMANDS if not os.access(self._exe(c), os.X_OK)]
        if missing:
            where = self.s.bin_dir or "$PATH"
            raise errors.StartupError(
                f"the Slurm backend needs {', '.join(missing)} in {where} (install Slurm's client "
                "commands, or set [dispatch.slurm] bin_dir)", missing=missing, bin_dir=self.s.bin_dir)
        self._check_ready()

    def _check_ready(self) -> None:
        if self._ready:
            return
        listing = self._listing()
        if listing is None:
            return
        self._ready = True
        self._events.append(DispatchEvent("ready", info={"backend": "slurm",
                                                         "partition": self.s.partition}))

    @property
    def ready(self) -> bool:
        return self._ready

    def free_slots(self) -> int:
        return max(0, self.s.max_jobs - len(self.jobs)) if self._ready else 0

    def running(self) -> dict[str, dict[str, Any]]:
        return {job_id: {**t.progress, "slurm_job_id": t.slurm_id, "slurm_state": t.state, "node": t.node}
                for job_id, t in self.jobs.items()}

    def adopt(self, job_ids: list[str]) -> list[str]:
        """Jobs claimed in work/ that have a Slurm job (still known to Slurm, or whose run left a
        result or an error behind) are tracked again; the others are the daemon's to run anew."""
        listing = self._listing()
        adopted = []
        for job_id in job_ids:
            record = self._read_record(job_id)
            if not record or not record.get("slurm_job_ids"):
                continue
            last = str(record["slurm_job_ids"][-1])
            jdir = job_dir(self.spool, job_id)
            left_something = ((self.spool / "outbox" / job_id).is_dir()
                              or (jdir / f"error-{last}.json").is_file())
            if listing is not None and last not in listing and not left_something:
                final = self._sacct(last)
                if final is None or final[0] not in TERMINAL:
                    continue  # Slurm forgot it, accounting has no end, it left nothing: run it again
            req = record.get("request", {})
            request = JobRequest(job_id, self.spool, Path(req.get("source", "")), Path(req.get("target", "")),
                                 Path(req.get("target", "")), dict(req.get("options", {})),
                                 float(req.get("timeout_seconds", 0) or 0))
            t = Tracked(request, slurm_ids=[str(i) for i in record["slurm_job_ids"]],
                        retries_used=int(record.get("retries_used", 0)), state="ADOPTED",
                        claimed=_claimed_time(self.spool, request.job_id))
            self.jobs[job_id] = t
            adopted.append(job_id)
        return adopted

    def finished_while_away(self) -> list[dict[str, Any]]:
        """Jobs whose Slurm run committed to outbox/ while no daemon watched (their work/ folder
        is gone): reported once, then their record is marked reported."""
        out = []
        root = self.spool / "slurm"
        if not root.is_dir():
            return out
        for record_file in sorted(root.glob("*/dispatch.json")):
            job_id = record_file.parent.name
            if job_id in self.jobs or (self.spool / "work" / job_id).exists():
                continue
            if not self._committed(job_id):
                continue
            try:
                result = json.loads((self.spool / "outbox" / job_id / "result.json").read_text())
            except (OSError, ValueError):
                result = {}
            dispatch = result.get("dispatch") or {}
            out.append({"job_id": job_id, "outcome": "done", "backend": "slurm",
                        "slurm_job_id": dispatch.get("slurm_job_id"), "node": dispatch.get("node"),
                        "output_sha256": result.get("output", {}).get("sha256")})
            self._mark_reported(job_id)
        return out

    def _mark_reported(self, job_id: str) -> None:
        """The daemon has heard the job's outcome: its record is no longer a job in flight."""
        jdir = job_dir(self.spool, job_id)
        with contextlib.suppress(OSError):
            os.replace(jdir / "dispatch.json", jdir / "dispatch.reported.json")

    def submit(self, request: JobRequest) -> Placement:
        jdir = job_dir(self.spool, request.job_id)
        jdir.mkdir(parents=True, exist_ok=True, mode=0o750)
        doc = {"version": REQUEST_VERSION, "job_id": request.job_id, "source": str(request.source),
               "target": str(request.target), "options": request.options, "engine": self.engine_options,
               "retain_inputs": self.retain_inputs, "timeout_seconds": request.timeout_seconds,
               "provenance": self.provenance}
        if "reference_face_image" in request.options:
            doc["reference"] = request.options["reference_face_image"]
        write_json_atomic(jdir / "request.json", doc, mode=0o640)
        t = Tracked(request, claimed=_claimed_time(self.spool, request.job_id))
        self.jobs[request.job_id] = t
        self._sbatch(t)
        return Placement(self.backend, slurm_job_id=t.slurm_id, node=None)

    def cancel(self, job_id: str) -> None:
        t = self.jobs.pop(job_id, None)
        if t is not None and t.slurm_id:
            self._run("scancel", t.slurm_id)
            self._mark_reported(job_id)

    def stop(self) -> None:
        """Slurm jobs keep running; the next daemon adopts them."""

    # ------------------------------------------------------------------ submission
    def time_limit_minutes(self, request: JobRequest) -> int:
        if self.s.time_limit_minutes:
            return self.s.time_limit_minutes
        return max(1, math.ceil(request.timeout_seconds / 60)) if request.timeout_seconds else 60

    def sbatch_args(self, request: JobRequest) -> list[str]:
        jdir = job_dir(self.spool, request.job_id)
        args = ["--parsable", f"--job-name={self.s.job_name_prefix}-{request.job_id}",
                f"--chdir={jdir}", f"--output={jdir}/slurm-%j.out", "--open-mode=append",
                "--no-requeue", f"--time={self.time_limit_minutes(request)}"]
        for flag, value in (("--partition", self.s.partition), ("--account", self.s.account),
                            ("--qos", self.s.qos), ("--gres", self.s.gres),
                            ("--cpus-per-task", self.s.cpus_per_task), ("--mem", self.s.mem_mb)):
            if value:
                args.append(f"{flag}={value}")
        return args + list(self.s.extra_args)

    def batch_script(self, request: JobRequest) -> str:
        argv = list(self.s.command) or [sys.executable, "-m", "sealfuse"]
        argv += ["run-job", "--spool", str(self.spool), "--job-id", request.job_id]
        if self.s.node_tmp_dir:
            argv += ["--tmp-dir", self.s.node_tmp_dir]
        return f"#!/bin/sh\n# sealfuse watch job {request.job_id}\nexec {shlex.join(argv)}\n"

    def _sbatch(self, t: Tracked) -> bool:
        now = time.monotonic()
        r = self._run("sbatch", *self.sbatch_args(t.request), stdin=self.batch_script(t.request))
        out = r.stdout.strip().split(";")[0]
        if r.returncode != 0 or not out.isdigit():
            t.last_error = (r.stderr or "").strip()[-500:]
            t.submit_failed_since = t.submit_failed_since or now
            t.next_submit = now + min(30.0, max(self.s.poll_seconds, 1.0))
            t.state = "SUBMITTING"
            return False
        t.slurm_ids.append(out)
        t.state, t.node, t.started, t.missing_polls = "PENDING", None, False, 0
        t.submit_failed_since = None
        self._write_record(t)
        self._next_poll = 0.0
        return True

    def _write_record(self, t: Tracked) -> None:
        req = t.request
        write_json_atomic(job_dir(self.spool, req.job_id) / "dispatch.json", {
            "job_id": req.job_id, "slurm_job_ids": t.slurm_ids, "retries_used": t.retries_used,
            "request": {"source": str(req.source), "target": str(req.target), "options": req.options,
                        "timeout_seconds": req.timeout_seconds}}, mode=0o640)

    def _read_record(self, job_id: str) -> dict[str, Any] | None:
        try:
            doc = json.loads((job_dir(self.spool, job_id) / "dispatch.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    # ------------------------------------------------------------------ tracking
    def poll(self) -> list[DispatchEvent]:
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.s.poll_seconds
            self._check_ready()
            if self._ready:
                self._resubmit_pending(now)
                self._track()
        events, self._events = self._events, []
        return events

    def _resubmit_pending(self, now: float) -> None:
        for job_id, t in list(self.jobs.items()):
            if t.slurm_id is None or t.state == "SUBMITTING":
                if now < t.next_submit:
                    continue
                if self._sbatch(t):
                    continue
                if t.submit_failed_since is not None and now - t.submit_failed_since >= self.s.submit_timeout_seconds:
                    del self.jobs[job_id]
                    self._events.append(DispatchEvent("failed", job_id, error=SlurmSubmitError(
                        f"sbatch refused the job: {t.last_error or 'no answer'}", stderr=t.last_error,
                        sbatch_args=self.sbatch_args(t.request))))

    def _track(self) -> None:
        if not self.jobs:
            if self.metrics is not None:
                self.metrics.set_slurm_states({})
            return  # nothing in flight: no need to ask the controller
        listing = self._listing()
        if listing is None:
            return  # controller unreachable: decide nothing, try again next poll
        counts: dict[str, int] = {}
        for job_id, t in list(self.jobs.items()):
            if t.slurm_id is None or t.state == "SUBMITTING":
                counts["pending"] = counts.get("pending", 0) + 1
                continue
            entry = listing.get(t.slurm_id)
            if entry is None:
                t.missing_polls += 1
                final = self._sacct(t.slurm_id) if t.missing_polls >= 3 or t.state == "ADOPTED" else None
                if final is not None and final[0] in TERMINAL:
                    t.node = final[2] or t.node
                    self._finish(job_id, t, final[0], exit_code=final[1])
                    continue
                if t.missing_polls < 3 and not self._committed(job_id):
                    continue  # just submitted or just purged: look again
                self._finish(job_id, t, "UNKNOWN")
                continue
            t.missing_polls = 0
            state, nodes, _reason = entry
            state = state.split()[0].rstrip("+")
            t.state = state
            if nodes and nodes not in ("(null)", "None assigned"):
                t.node = nodes
            counts[state.lower()] = counts.get(state.lower(), 0) + 1
            if state in ("RUNNING", "COMPLETING") or state in TERMINAL:
                self._placed(job_id, t)
            if state == "RUNNING":
                self._read_progress(job_id, t)
            if state in TERMINAL:
                self._finish(job_id, t, state)
        if self.metrics is not None:
            self.metrics.set_slurm_states(counts)

    def _placed(self, job_id: str, t: Tracked) -> None:
        if not t.started:
            t.started = True
            claimed = t.claimed if t.claimed is not None else _claimed_time(self.spool, job_id)
            if self.metrics is not None and claimed is not None:
                self.metrics.job_started(max(0.0, time.time() - claimed))
        if t.node != t.reported_node:
            t.reported_node = t.node
            self._events.append(DispatchEvent("placed", job_id, info={
                "backend": "slurm", "slurm_job_id": t.slurm_id, "node": t.node,
                "attempt": len(t.slurm_ids)}))

    def _read_progress(self, job_id: str, t: Tracked) -> None:
        path = job_dir(self.spool, job_id) / "progress.json"
        try:
            mtime = path.stat().st_mtime
            if mtime == t.progress_mtime:
                return
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        t.progress_mtime = mtime
        if isinstance(doc, dict) and str(doc.get("slurm_job_id")) == t.slurm_id:
            t.progress = {k: v for k, v in doc.items() if k != "slurm_job_id"}
            self._events.append(DispatchEvent("progress", job_id, progress=dict(t.progress)))

    def _committed(self, job_id: str) -> bool:
        return (self.spool / "outbox" / job_id / "result.json").is_file()

    def _finish(self, job_id: str, t: Tracked, state: str, *, exit_code: str | None = None) -> None:
        """The Slurm job ended: the spool says what happened; Slurm's state says why if nothing did."""
        evidence = {"slurm_job_id": t.slurm_id, "slurm_state": state, "node": t.node,
                    "slurm_job_ids": list(t.slurm_ids)}
        if self._committed(job_id):
            del self.jobs[job_id]
            self._mark_reported(job_id)
            try:
                result = json.loads((self.spool / "outbox" / job_id / "result.json").read_text())
            except (OSError, ValueError):
                result = {}
            dispatch = result.get("dispatch") or {}
            self._events.append(DispatchEvent(
                "done", job_id, report=result.get("report", {}), seconds=result.get("seconds"),
                committed=True, info={"backend": "slurm", "slurm_job_id": dispatch.get("slurm_job_id", t.slurm_id),
                                      "node": dispatch.get("node", t.node),
                                      "output_sha256": result.get("output", {}).get("sha256")}))
            return
        err_file = job_dir(self.spool, job_id) / f"error-{t.slurm_id}.json"
        if err_file.is_file():
            try:
                doc = json.loads(err_file.read_text())
            except (OSError, ValueError):
                doc = {"reason": "internal_error", "message": f"unreadable {err_file.name}"}
            doc.setdefault("evidence", {})
            if isinstance(doc["evidence"], dict):
                doc["evidence"].update(evidence)
            self._fail(job_id, errors.ReportedError(doc))
            return
        show = self._show(t.slurm_id) if t.slurm_id and exit_code is None else {}
        exit_code = exit_code or show.get("ExitCode", "")
        evidence.update(exit_code=exit_code or None, slurm_reason=show.get("Reason"))
        if state in ("TIMEOUT", "DEADLINE"):
            limit = self.time_limit_minutes(t.request)
            self._fail(job_id, errors.JobTimeoutError(
                f"the Slurm job ran past its time limit of {limit} min", time_limit_minutes=limit, **evidence))
        elif state == "OUT_OF_MEMORY":
            self._fail(job_id, errors.MemoryLimitError(
                f"Slurm killed the job for memory (--mem={self.s.mem_mb} MB)", mem_mb=self.s.mem_mb, **evidence))
        elif state in ("NODE_FAIL", "BOOT_FAIL"):
            self._lost(job_id, t, "node_fail", evidence)
        elif state == "PREEMPTED":
            self._lost(job_id, t, "preempted", evidence)
        elif state == "CANCELLED":
            self._lost(job_id, t, "cancelled", evidence)
        elif state == "FAILED" and signal_of(exit_code):
            self._lost(job_id, t, "killed", {**evidence, "signal": signal_of(exit_code)})
        else:
            log = tail_of(job_dir(self.spool, job_id) / f"slurm-{t.slurm_id}.out")
            what = ("completed without committing a result" if state == "COMPLETED"
                    else f"ended {state} (exit {exit_code or 'unknown'})")
            self._fail(job_id, SlurmJobFailedError(f"the Slurm job {what}", log_tail=log, **evidence))

    def _lost(self, job_id: str, t: Tracked, kind: str, evidence: dict[str, Any]) -> None:
        if kind in self.s.retry_on and t.retries_used < self.s.retries:
            t.retries_used += 1
            previous = t.slurm_id
            if self.metrics is not None:
                self.metrics.slurm_resubmits.labels(kind).inc()
            self._events.append(DispatchEvent("placed", job_id, info={
                "backend": "slurm", "resubmitted": True, "reason": kind, "previous_slurm_job_id": previous,
                "node": t.node, "retry": t.retries_used, "retries": self.s.retries}))
            self._sbatch(t)  # a refused sbatch is retried by poll (state SUBMITTING)
            return
        tries = f" after {t.retries_used} resubmission(s)" if t.retries_used else ""
        evidence = {**evidence, "retries_used": t.retries_used}
        if kind == "node_fail":
            err: errors.JobError = SlurmNodeFailError(f"the node failed during the job{tries}", **evidence)
        elif kind == "preempted":
            err = SlurmPreemptedError(f"Slurm preempted the job{tries}", **evidence)
        elif kind == "cancelled":
            err = SlurmCancelledError(f"the Slurm job was cancelled outside sealfuse{tries}", **evidence)
        else:
            err = errors.WorkerCrashError(f"the job's process was killed on its node "
                                          f"(signal {evidence.get('signal')}){tries}", **evidence)
        self._fail(job_id, err)

    def _fail(self, job_id: str, err: errors.JobError) -> None:
        self.jobs.pop(job_id, None)
        self._mark_reported(job_id)
        self._events.append(DispatchEvent("failed", job_id, error=err))


def _claimed_time(spool: Path, job_id: str) -> float | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        claim = json.loads((spool / "work" / job_id / "claim.json").read_text())
        return datetime.fromisoformat(claim["claimed"].replace("Z", "+00:00")).timestamp()
    return None
