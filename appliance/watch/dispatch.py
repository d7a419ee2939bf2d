"""How the daemon hands claimed jobs to something that runs them: the `Dispatcher` interface.

The local worker pool (`local.LocalDispatcher`) is one implementation; a cluster backend (Slurm)
is another. The daemon only submits, polls for events, cancels and, after a restart, adopts jobs
still in flight; it never knows how a job runs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sealfuse.appliance.watch.errors import JobError

EventKind = Literal["ready", "progress", "done", "failed", "worker_restarted", "placed"]


@dataclass(frozen=True)
class JobRequest:
    """Everything a backend needs to run one claimed job.

    `output` is where the job writes its result file (a private per-job temp dir for the local
    pool); `spool` and `job_id` let a backend that commits by itself (`sealfuse run-job`) find
    the claim under `spool/work/<job_id>/`.
    """

    job_id: str
    spool: Path
    source: Path
    target: Path
    output: Path
    options: dict[str, Any]
    timeout_seconds: float


@dataclass(frozen=True)
class Placement:
    """Where a job runs, for the status file: backend name, cluster job id and node if known."""

    backend: str
    slurm_job_id: str | None = None
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The status file's `dispatch` object."""
        return {"backend": self.backend, "slurm_job_id": self.slurm_job_id, "node": self.node}


@dataclass
class DispatchEvent:
    """Something a backend reports to the daemon.

    kind `ready`: the backend can take jobs (workers loaded); `progress`: `progress` holds
    {"frame", "total"} or similar; `done`: `report` is the engine's report and the output file is
    at the request's `output` (or the backend already committed: `committed=True`); `failed`:
    `error` says why (a crash, a timeout, the engine's own error); `worker_restarted`: a worker
    was replaced (`info` says why), with or without a job; `placed`: a cluster backend started
    the job on a node or resubmitted it (`info`: backend, slurm_job_id, node, and for a
    resubmission `resubmitted`, `reason`, `previous_slurm_job_id`).
    """

    kind: EventKind
    job_id: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    error: JobError | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    committed: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Dispatcher(abc.ABC):
    """A backend that runs claimed jobs. The daemon's loop calls, in order: `start` once, then
    repeatedly `wait_fds` (for select), `poll`, `free_slots`/`submit`; `cancel` on shutdown past
    the grace period or on a removal request; `stop` last. Raise `errors.StartupError` (exit code inside) when the
    backend cannot work at all."""

    backend = "abstract"
    # True when running jobs outlive the daemon (a cluster): on stop they are neither cancelled
    # nor handed back, and `adopt` finds them at the next start.
    keeps_jobs_across_restart = False

    @abc.abstractmethod
    def start(self) -> None:
        """Bring the backend up (start workers, check the cluster). May return before ready."""

    @abc.abstractmethod
    def adopt(self, job_ids: list[str]) -> list[str]:
        """After a daemon restart: the ids (from `job_ids`, jobs claimed in work/) that are still
        running in the backend and will report through `poll`. The local pool adopts none (its
        workers die with the daemon); a cluster backend keeps jobs that outlived the daemon."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True once the backend can run jobs (the daemon sends READY=1 then)."""

    @abc.abstractmethod
    def free_slots(self) -> int:
        """How many more jobs `submit` takes now."""

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> Placement:
        """Start one job; return where it runs."""

    @abc.abstractmethod
    def poll(self) -> list[DispatchEvent]:
        """Events since the last call (never blocks)."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop a running job now and forget it (no event follows; its claim stays and the daemon
        requeues it at shutdown, or commits it as `removed` on a removal request)."""

    @abc.abstractmethod
    def running(self) -> dict[str, dict[str, Any]]:
        """job id -> latest progress, for every job the backend is running."""

    def finished_while_away(self) -> list[dict[str, Any]]:
        """After a restart: jobs the backend finished and committed while no daemon ran (their
        work/ folder is gone, so recovery never sees them), as {"job_id", "outcome", ...placement}
        for the audit. The local pool has none."""
        return []

    def wait_fds(self) -> list[int]:
        """File descriptors the daemon's select() should wake on (none: it polls)."""
        return []

    @abc.abstractmethod
    def stop(self) -> None:
        """Shut the backend down (after running jobs finished or were cancelled)."""
