"""An in-process `Dispatcher` for the daemon's unit tests: runs no model, copies the target."""

from __future__ import annotations

import shutil
from typing import Any

from sealfuse.appliance.watch.dispatch import Dispatcher, DispatchEvent, JobRequest, Placement
from sealfuse.appliance.watch.errors import ReportedError


class CopyDispatcher(Dispatcher):
    """Each job's output is a copy of its target; a target whose name starts with `noface`
    fails with the engine's `no_face_in_target`. Progress 1/2 is reported before each result."""

    backend = "local"

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.submitted: list[JobRequest] = []
        self._pending: list[JobRequest] = []
        self._ready_sent = False
        self.cancelled: list[str] = []

    def start(self) -> None:
        pass

    def adopt(self, job_ids: list[str]) -> list[str]:
        return []

    @property
    def ready(self) -> bool:
        return True

    def free_slots(self) -> int:
        return self.slots - len(self._pending)

    def submit(self, request: JobRequest) -> Placement:
        self.submitted.append(request)
        self._pending.append(request)
        return Placement(self.backend)

    def poll(self) -> list[DispatchEvent]:
        events: list[DispatchEvent] = []
        if not self._ready_sent:
            self._ready_sent = True
            events.append(DispatchEvent("ready", info={"worker_pid": None}))
        for req in self._pending:
            events.append(DispatchEvent("progress", req.job_id, progress={"frame": 1, "total": 2}))
            if req.target.name.startswith("noface"):
                events.append(DispatchEvent("failed", req.job_id, seconds=0.01, error=ReportedError(
                    {"error": "NoFaceInTargetError", "reason": "no_face_in_target",
                     "message": "no face in the target", "exit_code": 4, "evidence": {}})))
            else:
                shutil.copyfile(req.target, req.output)
                events.append(DispatchEvent("done", req.job_id, seconds=0.01,
                                            report={"kind": "image", "faces": [{"score": 1.0}]}))
        self._pending = []
        return events

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def running(self) -> dict[str, dict[str, Any]]:
        return {r.job_id: {} for r in self._pending}

    def stop(self) -> None:
        pass
