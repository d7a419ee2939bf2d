"""The local backend: a pool of supervised worker processes on this machine (a `Dispatcher`).

A crash, a hang past the job timeout or too much memory kills the worker, fails its job and
starts a fresh worker; a worker that cannot load the models stops the daemon (exit 5).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.dispatch import Dispatcher, DispatchEvent, JobRequest, Placement
from sealfuse.appliance.watch.supervisor import WorkerHandle

MIB = 1024 * 1024
WORKER_COMMAND = (sys.executable, "-m", "sealfuse.appliance.watch.worker")


class LocalDispatcher(Dispatcher):
    """Runs jobs in `concurrency` worker processes started with `command` (injectable)."""

    backend = "local"

    def __init__(self, *, concurrency: int, init: dict[str, Any], env: dict[str, str] | None = None,
                 command: tuple[str, ...] | list[str] = WORKER_COMMAND, max_rss_mb: int = 0,
                 rss_poll_seconds: float = 0.25, start_timeout_seconds: float = 600.0) -> None:
        self.workers = [WorkerHandle(i, init, env=env, command=list(command)) for i in range(concurrency)]
        self.max_rss_mb = max_rss_mb
        self.rss_poll_seconds = rss_poll_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self.init_failures = 0
        self.stopping = False
        self._last_rss = 0.0
        self._events: list[DispatchEvent] = []

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def adopt(self, job_ids: list[str]) -> list[str]:
        return []  # workers die with the daemon (PR_SET_PDEATHSIG): nothing survives a restart

    @property
    def ready(self) -> bool:
        return all(w.ready for w in self.workers)

    def free_slots(self) -> int:
        return sum(1 for w in self.workers if w.ready and w.job is None and w.alive())

    def submit(self, request: JobRequest) -> Placement:
        worker = next(w for w in self.workers if w.ready and w.job is None and w.alive())
        payload = {"source": str(request.source), "target": str(request.target),
                   "output": str(request.output), "options": request.options}
        worker.submit(request.job_id, payload, request.timeout_seconds)
        return Placement(self.backend, node=None)

    def worker_pid(self, job_id: str) -> int | None:
        """The pid of the worker running `job_id` (for the audit log)."""
        for w in self.workers:
            if w.job is not None and w.job.job_id == job_id:
                return w.pid
        return None

    def running(self) -> dict[str, dict[str, Any]]:
        return {w.job.job_id: dict(w.job.progress) for w in self.workers if w.job is not None}

    def wait_fds(self) -> list[int]:
        return [w.fileno() for w in self.workers if w.alive()]

    def cancel(self, job_id: str) -> None:
        """Kill (and reap) the worker running `job_id`; unless the pool is stopping, start a
        fresh worker in its place (reported as `worker_restarted`, reason `cancelled`)."""
        for w in self.workers:
            if w.job is not None and w.job.job_id == job_id:
                w.kill()
                w.job = None
                if not self.stopping:
                    desc = w.exit_description()
                    w.start()
                    self._events.append(DispatchEvent("worker_restarted", job_id,
                                                      info={"reason": "cancelled", **desc}))

    def stop(self) -> None:
        self.stopping = True
        for w in self.workers:
            w.stop()

    # ------------------------------------------------------------------ supervision
    def poll(self) -> list[DispatchEvent]:
        now = time.monotonic()
        check_rss = self.max_rss_mb > 0 and now - self._last_rss >= self.rss_poll_seconds
        if check_rss:
            self._last_rss = now
        for w in self.workers:
            if w.proc is None:
                continue
            for msg in w.read_messages():
                self._on_message(w, msg)
            if not w.alive():
                for msg in w.read_messages():
                    self._on_message(w, msg)
                self._lost(w, None, "crash")
                continue
            if w.job is not None and now > w.job.deadline:
                self._lost(w, errors.JobTimeoutError(
                    f"the job ran past job_timeout_seconds={w.job.deadline - w.job.started:g}",
                    timeout_seconds=round(w.job.deadline - w.job.started, 3)), "timeout")
            elif w.job is not None and check_rss:
                rss = w.rss_bytes()
                if rss > self.max_rss_mb * MIB:
                    self._lost(w, errors.MemoryLimitError(
                        f"the worker used {rss // MIB} MiB, over max_rss_mb={self.max_rss_mb}",
                        rss_bytes=rss, limit_mb=self.max_rss_mb), "memory_limit")
            elif not w.ready and now - w.started_at > self.start_timeout_seconds:
                raise errors.WorkerLoadError(f"the worker did not load the models within "
                                             f"{self.start_timeout_seconds:g} s")
        events, self._events = self._events, []
        return events

    def _on_message(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready":
            w.ready = True
            self.init_failures = 0
            self._events.append(DispatchEvent("ready", info={"worker_pid": msg.get("pid"),
                                                             "load_seconds": msg.get("load_seconds")}))
        elif op == "fatal":
            err = msg.get("error", {})
            raise errors.WorkerLoadError(f"the worker cannot load the engine: {err.get('message')} "
                                         f"({err.get('reason')}; evidence {err.get('evidence')})",
                                         engine_reason=err.get("reason"))
        elif op == "progress" and w.job is not None:
            w.job.progress = msg.get("info", {})
            self._events.append(DispatchEvent("progress", w.job.job_id, progress=dict(w.job.progress)))
        elif op == "result" and w.job is not None and msg.get("job_id") == w.job.job_id:
            job, w.job = w.job, None
            seconds = time.monotonic() - job.started
            if msg.get("ok"):
                self._events.append(DispatchEvent("done", job.job_id, report=msg.get("report", {}),
                                                  seconds=seconds))
            else:
                self._events.append(DispatchEvent("failed", job.job_id, seconds=seconds,
                                                  error=errors.ReportedError(msg.get("error", {}))))

    def _lost(self, w: WorkerHandle, err: errors.JobError | None, restart_reason: str) -> None:
        """The worker died or was killed: fail its job (if any) and start a fresh worker."""
        desc = w.exit_description()
        w.kill()
        job, w.job = w.job, None
        was_ready = w.ready
        if job is not None:
            if err is None:
                err = errors.WorkerCrashError("the worker process died during the job "
                                              f"({desc.get('signal') or desc.get('returncode')})", **desc)
            else:
                err.evidence.update(desc)
            self._events.append(DispatchEvent("failed", job.job_id, error=err))
        self._events.append(DispatchEvent("worker_restarted", job.job_id if job else None,
                                          info={"reason": restart_reason, **desc}))
        if not was_ready:
            self.init_failures += 1
            if self.init_failures >= 3:
                raise errors.WorkerLoadError("the worker died three times while loading the models "
                                             f"(last exit {desc})")
        if not self.stopping:
            w.start()
