"""Per-job status files for the console: <spool>/status/<job-id>.json, replaced atomically.

Written on every state change and at most twice a second while a job runs (progress). Mode 0640:
readable by the producers' group (the spool's group). A failed write never stops the daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from sealfuse.appliance.fsutil import write_json_atomic
from sealfuse.appliance.watch.inbox import utcnow

STATES = ("queued", "running", "done", "failed", "removed")
PROGRESS_INTERVAL = 0.5


class StatusBoard:
    """Writes status/<job-id>.json documents in the shared shape (see docs/watch-folder.md)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._docs: dict[str, dict[str, Any]] = {}
        self._last_write: dict[str, float] = {}
        self._unwritten: dict[str, dict[str, Any]] = {}  # writes that failed (disk full): retried
        self._last_retry = 0.0
        self.write_errors = 0

    def setup(self) -> None:
        """Create status/ (0750) if missing."""
        self.directory.mkdir(mode=0o750, exist_ok=True)
        os.chmod(self.directory, 0o750)  # the unit's UMask=0077 would leave 0700: producers read it

    def update(self, job_id: str, state: str, *, client_ref: str | None = None,
               queue_position: int | None = None, progress: dict[str, Any] | None = None,
               reason: str | None = None, message: str | None = None, output: str | None = None,
               dispatch: dict[str, Any] | None = None) -> None:
        """Record a state change of `job_id` (written now)."""
        assert state in STATES, state
        prev = self._docs.get(job_id, {})
        doc = {
            "job_id": job_id,
            "client_ref": client_ref if client_ref is not None else prev.get("client_ref"),
            "state": state,
            "queue_position": queue_position if state == "queued" else None,
            "progress": _progress(progress) if progress is not None else prev.get("progress", _progress({})),
            "reason": reason, "message": message, "output": output,
            "dispatch": dispatch or prev.get("dispatch") or {"backend": "local", "slurm_job_id": None,
                                                             "node": None},
        }
        if state in ("done", "failed"):
            doc["progress"] = {**doc["progress"], "fraction": 1.0} if state == "done" else doc["progress"]
        self._write(job_id, doc)
        if state in ("done", "failed", "removed"):
            self._docs.pop(job_id, None)
            self._last_write.pop(job_id, None)
        else:
            self._docs[job_id] = doc

    def progress(self, job_id: str, info: dict[str, Any]) -> None:
        """A running job's progress (frame/total from the worker); written at most twice a second."""
        doc = self._docs.get(job_id)
        if doc is None:
            return
        doc["progress"] = _progress(info)
        if time.monotonic() - self._last_write.get(job_id, 0.0) >= PROGRESS_INTERVAL:
            self._write(job_id, doc)

    def queue_positions(self, job_ids: list[str]) -> None:
        """Refresh the queue positions of queued jobs whose position changed."""
        for position, job_id in enumerate(job_ids):
            doc = self._docs.get(job_id)
            if doc is not None and doc["state"] == "queued" and doc["queue_position"] != position:
                doc["queue_position"] = position
                self._write(job_id, doc)

    def media_deleted(self, job_id: str, info: dict[str, Any]) -> None:
        """A finished job's media was deleted on request: its status file (state unchanged) gains
        `media_deleted` {"at", "by"} and loses `output`."""
        try:
            with open(self.directory / f"{job_id}.json", "rb") as handle:
                doc = json.loads(handle.read(65536))
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict) or doc.get("state") not in ("done", "failed", "removed"):
            return
        doc["media_deleted"] = {"at": info.get("at"), "by": info.get("by")}
        doc["output"] = None
        self._write(job_id, doc)

    def forget(self, job_id: str) -> None:
        """A job handed back to the inbox: its status file goes."""
        self._docs.pop(job_id, None)
        self._last_write.pop(job_id, None)
        self._unwritten.pop(job_id, None)
        with contextlib.suppress(OSError):
            os.unlink(self.directory / f"{job_id}.json")

    def flush(self) -> None:
        """Retry the writes that failed (at most once a second)."""
        if not self._unwritten or time.monotonic() - self._last_retry < 1.0:
            return
        self._last_retry = time.monotonic()
        for job_id, doc in list(self._unwritten.items()):
            self._write(job_id, doc)

    def _write(self, job_id: str, doc: dict[str, Any]) -> None:
        doc["updated"] = utcnow()
        try:
            write_json_atomic(self.directory / f"{job_id}.json", doc, mode=0o640)
        except OSError:
            self.write_errors += 1
            self._unwritten[job_id] = dict(doc)
            return
        self._unwritten.pop(job_id, None)
        self._last_write[job_id] = time.monotonic()


def _progress(info: dict[str, Any]) -> dict[str, Any]:
    done = info.get("frame", info.get("done", 0))
    total = info.get("total")
    done = int(done) if isinstance(done, int | float) else 0
    total = int(total) if isinstance(total, int | float) and total > 0 else None
    return {"done": done, "total": total, "fraction": round(min(1.0, done / total), 4) if total else None}
