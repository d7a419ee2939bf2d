"""The daemon's job book: claimed jobs from queue to outcome, with idempotency, audit, metrics and
status files. The file moves themselves are the spool module's; this module decides and records.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sealfuse.appliance.audit import AuditLog
from sealfuse.appliance.errors import ApplianceError
from sealfuse.appliance.fsutil import open_under, rmtree_quiet, sha256_file
from sealfuse.appliance.metrics import Metrics
from sealfuse.appliance.watch import errors, spool
from sealfuse.appliance.watch.admission import CancelRequest, ClaimRequest
from sealfuse.appliance.watch.config import WatchConfig
from sealfuse.appliance.watch.dispatch import Dispatcher, Placement
from sealfuse.appliance.watch.inbox import utcnow
from sealfuse.appliance.watch.recovery import recover
from sealfuse.appliance.watch.spool import Job
from sealfuse.appliance.watch.state import StateDB
from sealfuse.appliance.watch.status import StatusBoard


class JobBook:
    """Queue, running set and outcomes of the daemon's jobs. `paths` is the daemon's `Paths`."""

    def __init__(self, paths: Any, config: WatchConfig, db: StateDB, audit: AuditLog, metrics: Metrics,
                 write_metrics: Callable[..., None]) -> None:
        self.paths = paths
        self.root: Path = paths.spool
        self.cfg = config
        self.db = db
        self.audit = audit
        self.metrics = metrics
        self.write_metrics = write_metrics
        self.status = StatusBoard(paths.status)
        self.queue: list[Job] = []
        self.running: dict[str, Job] = {}
        self._published_queue: list[str] = []

    # ---------------------------------------------------------------- intake
    def claim(self, request: ClaimRequest, *, seen: str) -> Job | None:
        """Claim an admitted drop into work/ and admit the job (None: the producer took a file back).
        Any other failed move is raised (OSError) with the drop left where it was."""
        try:
            record = spool.claim(self.root, request.files, kind=request.kind, preset=request.preset,
                                 options=request.options, label=request.label,
                                 client_ref=request.client_ref, seen=seen)
        except FileNotFoundError:
            return None
        self.audit.append("claimed", job=record["job_id"], kind=request.kind, preset=request.preset,
                          drop=[f["from"] for f in record["files"]], seen=seen)
        job = spool.job_from_claim(record, self.root / "work" / record["job_id"], self.cfg.presets)
        self.admit(job)
        return job

    def admit(self, job: Job) -> None:
        """Hash the claimed inputs, apply idempotency, queue the job."""
        digests = {}
        try:
            for role, path in job.inputs.items():
                digests[role] = sha256_file(path)[0]
        except OSError as exc:
            self.fail(job, errors.PresetSourceError(f"cannot read an input: {exc}", error=str(exc)))
            return
        job.digests = digests
        key_doc = {"kind": job.kind, "preset": job.claim.get("preset"), "options": job.options,
                   "digests": {r: d for r, d in digests.items() if r != "manifest"}}
        job.key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()
        original = self.db.find_blocking(job.key, job.job_id)
        if original is not None:
            err = errors.DuplicateJobError(
                f"identical job (same media digests and options) already {original['state']} as "
                f"{original['job_id']}; not run again", original_job=original["job_id"],
                original_state=original["state"], key=job.key)
            self.db.upsert(job.job_id, key=job.key, state="duplicate", reason="duplicate")
            self.audit.append("duplicate", job=job.job_id, original_job=original["job_id"], key=job.key,
                              digests=digests)
            self.fail(job, err, keep_media=False, duplicate=True)
            return
        row = self.db.get(job.job_id)
        if row is None or row["state"] not in ("queued", "running"):
            self.db.upsert(job.job_id, key=job.key, state="queued")
        self.queue.append(job)
        self.status.update(job.job_id, "queued", client_ref=job.client_ref, queue_position=len(self.queue) - 1)

    def recover(self, dispatcher: Dispatcher) -> None:
        """Apply recovery's decisions; jobs the backend still runs are adopted, not re-run."""
        decisions = recover(self.root, self.cfg.presets, retain_inputs=self.cfg.retain_inputs)
        adopted = set(dispatcher.adopt([d.job_id for d in decisions if d.outcome == "requeue"]))
        for item in decisions:
            if item.outcome == "done":
                self.db.upsert(item.job_id, state="done")
                self.audit.append("recovered", job=item.job_id, outcome="done")
                self.metrics.job_finished("recovered", "done", None)
                self.status.update(item.job_id, "done", output=_output_name(self.root, item.job_id))
            elif item.outcome == "failed":
                self.db.upsert(item.job_id, state="failed")
                fields = {"reason": item.reason} if item.reason else {}
                self.audit.append("recovered", job=item.job_id, outcome="failed", **fields)
            elif item.outcome == "broken":
                assert item.error is not None
                self.db.upsert(item.job_id, state="failed", reason=item.error.reason)
                self.audit.append("recovered", job=item.job_id, outcome="failed", reason=item.error.reason,
                                  message=item.error.message)
                self.status.update(item.job_id, "failed", reason=item.error.reason, message=item.error.message)
            elif item.outcome == "fail" and item.job is not None and item.error is not None:
                self.fail(item.job, item.error)
            elif item.outcome == "requeue" and item.job is not None:
                self._requeue_recovered(item.job, adopted=item.job_id in adopted)
        for item in dispatcher.finished_while_away():  # a cluster job committed while we were down
            fields = {k: v for k, v in item.items() if k not in ("job_id", "outcome") and v is not None}
            self.db.upsert(item["job_id"], state="done")
            self.audit.append("recovered", job=item["job_id"], outcome=item["outcome"], **fields)
            self.metrics.job_finished("recovered", item["outcome"], None)
            self.status.update(item["job_id"], "done", output=_output_name(self.root, item["job_id"]))

    def _requeue_recovered(self, job: Job, *, adopted: bool) -> None:
        row = self.db.get(job.job_id)
        attempts = row["attempts"] if row else 0
        if adopted:
            self.running[job.job_id] = job
            self.audit.append("recovered", job=job.job_id, outcome="adopted", attempts=attempts)
            return
        if attempts >= self.cfg.max_attempts:
            self.fail(job, errors.AttemptsExhaustedError(
                f"the job was interrupted {attempts} times (max_attempts={self.cfg.max_attempts})",
                attempts=attempts))
            return
        self.audit.append("recovered", job=job.job_id, outcome="requeued", attempts=attempts)
        self.admit(job)

    # ---------------------------------------------------------------- progress
    def started(self, job: Job, placement: Placement, *, worker_pid: int | None) -> None:
        """The backend took the job."""
        attempts = self.db.start_attempt(job.job_id)
        self.running[job.job_id] = job
        where = {k: v for k, v in placement.to_dict().items() if v is not None}
        self.audit.append("started_job", job=job.job_id, worker_pid=worker_pid, attempt=attempts, **where)
        if placement.backend == "local":
            self.status.update(job.job_id, "running", client_ref=job.client_ref, dispatch=placement.to_dict())
            self.metrics.job_started(_since(job.claim.get("claimed")))
        else:  # waiting in the cluster's queue until the backend reports it `placed` on a node
            self.status.update(job.job_id, "queued", client_ref=job.client_ref, dispatch=placement.to_dict())

    def placed(self, job: Job, info: dict[str, Any]) -> None:
        """A cluster backend started the job on a node, or resubmitted it after a lost run."""
        self.audit.append("resubmitted" if info.get("resubmitted") else "placed", job=job.job_id, **info)
        dispatch = {"backend": info.get("backend", "slurm"), "slurm_job_id": info.get("slurm_job_id"),
                    "node": info.get("node")}
        self.status.update(job.job_id, "running", client_ref=job.client_ref, dispatch=dispatch)

    def progress(self, job_id: str, info: dict[str, Any]) -> None:
        """A running job's progress."""
        self.status.progress(job_id, info)

    def publish_queue(self) -> None:
        """Refresh queued jobs' positions in their status files when the queue changed."""
        ids = [j.job_id for j in self.queue]
        if ids != self._published_queue:
            self._published_queue = ids
            self.status.queue_positions(ids)

    # ---------------------------------------------------------------- outcomes
    def complete(self, job: Job, report: dict[str, Any], seconds: float, *, committed: bool = False,
                 placement: dict[str, Any] | None = None) -> None:
        """The job succeeded: commit outbox/<id>/ (unless the backend already did), record it."""
        tdir = self.paths.jobs_tmp / job.job_id
        target = job.inputs["target"]
        result = {
            "job_id": job.job_id, "label": job.claim.get("label"), "client_ref": job.client_ref,
            "kind": job.kind, "preset": job.claim.get("preset"), "drop": [f["from"] for f in job.claim["files"]],
            "inputs": {r: {"sha256": d} for r, d in job.digests.items()},
            "output": {"name": target.name}, "options": job.options, "seen": job.claim.get("seen"),
            "claimed": job.claim.get("claimed"), "finished": utcnow(), "seconds": round(seconds, 3),
            "report": {k: v for k, v in report.items() if k not in ("source", "target", "output")},
        }
        if not committed:
            try:
                done = spool.commit_done(self.root, job.job_id, tdir / "out" / target.name, result,
                                         retain_inputs=self.cfg.retain_inputs, scratch=tdir)
            except (errors.OutputMissingError, errors.CommitFailedError) as err:
                rmtree_quiet(tdir)
                self.fail(job, err, seconds=seconds)
                return
            if done is None:
                self.audit.append("already_committed", job=job.job_id)
                rmtree_quiet(tdir)
                return
            result = done
        frames = report.get("frames")
        if isinstance(frames, dict):
            frames = frames.get("processed") or frames.get("total")
        frames = int(frames or (1 if report.get("kind") == "image" else 0) or 0)
        self.db.upsert(job.job_id, state="done")
        where = {k: v for k, v in (placement or {}).items() if k in ("backend", "slurm_job_id", "node") and v}
        signed = report.get("provenance") or {}
        self.audit.append("done", job=job.job_id, key=job.key, inputs=job.digests,
                          output_sha256=result["output"].get("sha256") or (placement or {}).get("output_sha256"),
                          manifest=signed.get("manifest_id"), signed=bool(signed.get("signed")),
                          seconds=round(seconds, 3), faces=len(report.get("faces", []) or []), frames=frames,
                          **where)
        self.metrics.job_finished("done", "ok", seconds, frames)
        self.metrics.last_success.set(time.time())
        self.status.update(job.job_id, "done", client_ref=job.client_ref, output=target.name)
        rmtree_quiet(tdir)
        self.write_metrics(force=True)

    def fail(self, job: Job, err: errors.JobError, *, seconds: float | None = None,
             keep_media: bool = True, duplicate: bool = False) -> None:
        """Quarantine a claimed job into failed/<id>/ with error.json (and its inputs)."""
        try:
            committed = spool.commit_failed(self.root, job, err, keep_media=keep_media)
        except errors.CommitFailedError as commit_err:
            # Even the quarantine cannot be written: the claim stays in work/ for the next start.
            self.audit.append("commit_failed", job=job.job_id, reason=err.reason, error=commit_err.message)
            self.db.upsert(job.job_id, key=job.key or None, state="failed", reason=commit_err.reason)
            self.status.update(job.job_id, "failed", client_ref=job.client_ref, reason=commit_err.reason,
                               message=commit_err.message)
            self.metrics.job_finished("failed", commit_err.reason, seconds)
            rmtree_quiet(self.paths.jobs_tmp / job.job_id)
            return
        if not committed:
            self.audit.append("already_committed", job=job.job_id)
        elif not duplicate:
            self.db.upsert(job.job_id, key=job.key or None, state="failed", reason=err.reason)
            where = {k: err.evidence[k] for k in ("slurm_job_id", "node") if err.evidence.get(k)}
            self.audit.append("failed", job=job.job_id, reason=err.reason, key=job.key or None,
                              inputs=job.digests or None, **where)
        self.metrics.job_finished("duplicate" if duplicate else "failed", err.reason, seconds)
        self.status.update(job.job_id, "failed", client_ref=job.client_ref, reason=err.reason, message=err.message)
        rmtree_quiet(self.paths.jobs_tmp / job.job_id)
        self.write_metrics(force=True)

    def quarantine_drop(self, paths: list[Path], err: errors.DropError, *, seen: str,
                        client_ref: str | None = None) -> None:
        """A drop refused at admission goes to failed/<new id>/ with its reason."""
        drop = [spool._rel(self.root, p) for p in paths]
        try:
            job_id = spool.quarantine_drop(self.root, paths, err, seen=seen, client_ref=client_ref)
        except errors.CommitFailedError as commit_err:
            self.audit.append("quarantine_failed", drop=drop, reason=err.reason, error=commit_err.message)
            return
        self.audit.append("failed", job=job_id, reason=err.reason, drop=drop)
        self.metrics.job_finished("failed", err.reason, None)
        self.status.update(job_id, "failed", client_ref=client_ref, reason=err.reason, message=err.message)
        self.write_metrics(force=True)

    # ---------------------------------------------------------------- removal on request
    def remove(self, request: CancelRequest, dispatcher: Dispatcher, *, drop: str) -> None:
        """Apply one removal request (`inbox/<name>.cancel.json`, already validated): every queued
        or running job it names goes to failed/<id>/ as `removed`; a job already finished makes it
        a recorded no-op; a name nobody knows raises UnknownJobError (the request is quarantined)."""
        by = request.requested_by
        targets = [(job, "queued") for job in self.queue if _names(request, job)]
        targets += [(job, "running") for job in self.running.values() if _names(request, job)]
        if not targets:
            finished = self._finished(request)
            if not finished:
                what = f"job {request.job_id}" if request.job_id else f"client_ref {request.client_ref}"
                raise errors.UnknownJobError(f"the removal request names {what}, which is not a known job",
                                             job_id=request.job_id, client_ref=request.client_ref,
                                             requested_by=by)
            for job_id, why in finished:
                if request.delete_media:
                    self._delete_media(job_id, by, drop, client_ref=request.client_ref)
                    continue
                self.audit.append("cancel_noop", job=job_id, reason=why, requested_by=by, drop=drop,
                                  client_ref=request.client_ref)
            return
        for job, was in targets:
            if was == "queued":
                self.queue.remove(job)
            else:
                # Stop it first (local: the worker is killed and reaped; Slurm: scancel). The commit
                # token then decides: a run that committed first wins and the removal is a no-op.
                dispatcher.cancel(job.job_id)
                self.running.pop(job.job_id, None)
            self._commit_removal(job, was, by, drop)
            if request.delete_media:  # removed (or finished first): its media goes too
                self._delete_media(job.job_id, by, drop, client_ref=job.client_ref)

    def _delete_media(self, job_id: str, by: str | None, drop: str, *, client_ref: str | None) -> None:
        """A finished job's media deleted on request (`delete_media`): its record stays, marked;
        audit `media_deleted`, or `cancel_noop` (`media_already_deleted`, `media_not_deleted`)."""
        row = self.db.get(job_id)
        if job_id in self.running or any(j.job_id == job_id for j in self.queue) or (
                row is not None and row["state"] in ("queued", "running")):
            return  # not finished (cannot happen: removal comes first); nothing is touched
        for folder, record in spool.RECORDS.items():
            try:
                with os.fdopen(open_under(self.root, f"{folder}/{job_id}/{record}"), "rb") as handle:
                    if isinstance(json.loads(handle.read(1 << 20)).get("media_deleted"), dict):
                        self.audit.append("cancel_noop", job=job_id, reason="media_already_deleted",
                                          requested_by=by, drop=drop, client_ref=client_ref)
                        return
            except (OSError, ValueError, AttributeError):
                continue
        try:
            info = spool.delete_media(self.root, job_id, requested_by=by, request=drop)
        except (OSError, ValueError, ApplianceError) as exc:  # a linked folder or record, unreadable JSON
            self.audit.append("cancel_noop", job=job_id, reason="media_not_deleted", requested_by=by,
                              drop=drop, client_ref=client_ref, error=str(exc))
            return
        if info is None:
            self.audit.append("cancel_noop", job=job_id, reason="media_not_deleted", requested_by=by,
                              drop=drop, client_ref=client_ref, error="no outbox/ or failed/ folder with its record")
            return
        self.audit.append("media_deleted", job=job_id, requested_by=by, request=drop, removed=info["removed"],
                          client_ref=client_ref)
        self.status.media_deleted(job_id, info)

    def _commit_removal(self, job: Job, was: str, by: str | None, drop: str) -> bool:
        """Commit the job as `removed`; False when it did not end that way (committed first)."""
        err = errors.RemovedError(f"removed on request{f' by {by}' if by else ''} while {was}",
                                  requested_by=by, was=was, request=drop)
        try:
            committed = spool.commit_failed(self.root, job, err)
        except errors.CommitFailedError:
            self.fail(job, err)  # records commit_failed; the claim stays for the next start
            return False
        if not committed:
            self._removal_lost(job, by, drop)
            return False
        self.db.upsert(job.job_id, key=job.key or None, state="removed", reason=err.reason)
        self.audit.append("removed", job=job.job_id, requested_by=by, was=was, request=drop,
                          client_ref=job.client_ref)
        self.metrics.job_finished("removed", err.reason, None)
        self.status.update(job.job_id, "removed", client_ref=job.client_ref, reason=err.reason,
                           message=err.message)
        rmtree_quiet(self.paths.jobs_tmp / job.job_id)
        self.write_metrics(force=True)
        return True

    def _removal_lost(self, job: Job, by: str | None, drop: str) -> None:
        """The job committed before the removal took the token (a compute node's `run-job`
        finished it): the removal is a no-op and the job's own outcome is recorded."""
        result_file = self.root / "outbox" / job.job_id / "result.json"
        if not result_file.is_file():
            self.audit.append("cancel_noop", job=job.job_id, reason="already_committed", requested_by=by,
                              drop=drop)
            return
        self.audit.append("cancel_noop", job=job.job_id, reason="already_done", requested_by=by, drop=drop)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            result = {}
        dispatch = result.get("dispatch") if isinstance(result.get("dispatch"), dict) else {}
        output = result.get("output") if isinstance(result.get("output"), dict) else {}
        self.complete(job, result.get("report") or {}, float(result.get("seconds") or 0.0), committed=True,
                      placement={**dispatch, "output_sha256": output.get("sha256")})

    def _finished(self, request: CancelRequest) -> list[tuple[str, str]]:
        """(job id, why the removal does nothing) for finished jobs the request names."""
        final = {"done": "already_done", "failed": "already_failed", "duplicate": "already_failed",
                 "removed": "already_removed"}
        if request.job_id:
            row = self.db.get(request.job_id)
            if row is not None and row["state"] in final:
                return [(request.job_id, final[row["state"]])]
            if (self.root / "outbox" / request.job_id).is_dir():
                return [(request.job_id, "already_done")]
            if (self.root / "failed" / request.job_id).is_dir():
                return [(request.job_id, "already_failed")]
            return []
        found = []
        for path in sorted(self.paths.status.glob("*.json")):
            try:
                with path.open("rb") as handle:
                    doc = json.loads(handle.read(65536))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("client_ref") == request.client_ref:
                state = doc.get("state")
                if state in final and isinstance(doc.get("job_id"), str):
                    found.append((doc["job_id"], final["removed" if state == "removed" else state]))
        return found

    def requeue_all(self) -> None:
        """Graceful stop: hand every queued job back to the inbox."""
        for job in self.queue:
            if spool.requeue(self.root, job):
                self.db.forget(job.job_id)
                self.status.forget(job.job_id)
                self.audit.append("requeued", job=job.job_id, drop=[f["from"] for f in job.claim["files"]])
                rmtree_quiet(self.paths.jobs_tmp / job.job_id)
            else:
                self.audit.append("requeue_blocked", job=job.job_id)
        self.queue.clear()


def _names(request: CancelRequest, job: Job) -> bool:
    """The removal request names this job (by id, or by the manifest's client_ref)."""
    if request.job_id is not None:
        return job.job_id == request.job_id
    return request.client_ref is not None and job.client_ref == request.client_ref


def _since(iso: str | None) -> float | None:
    """Seconds since an ISO-8601 UTC time (a claim's `claimed`), or None."""
    from datetime import datetime

    try:
        return max(0.0, time.time() - datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _output_name(root: Path, job_id: str) -> str | None:
    try:
        return json.loads((root / "outbox" / job_id / "result.json").read_text())["output"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
