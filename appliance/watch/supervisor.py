"""One supervised worker process: start it, feed it a job, read its JSON lines, kill it.

The local dispatcher selects on `fileno()` and calls `read_messages()`; it kills (SIGKILL) and
restarts the worker on a crash, a hang past the job timeout, or too much memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class RunningJob:
    """The job a worker is running: id, start and deadline (monotonic), request, latest progress."""

    job_id: str
    started: float
    deadline: float
    request: dict[str, Any]
    progress: dict[str, Any] = field(default_factory=dict)


class WorkerHandle:
    """One worker process started with `command`, spoken to in JSON lines on stdin/stdout."""

    def __init__(self, index: int, init: dict[str, Any], env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        self.index = index
        self.command = command or [sys.executable, "-m", "sealfuse.appliance.watch.worker"]
        self.init = init
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.started_at = 0.0
        self.job: RunningJob | None = None
        self._buf = b""
        self._ps: psutil.Process | None = None
        self.exit_note: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process and send it `init` (it answers `ready` or `fatal`)."""
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env, close_fds=True,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)  # type: ignore[union-attr]
        self._ps = psutil.Process(self.proc.pid)
        self.ready = False
        self.job = None
        self._buf = b""
        self.started_at = time.monotonic()
        self._write({"op": "init", **self.init})

    @property
    def pid(self) -> int | None:
        """The process id, or None before start."""
        return self.proc.pid if self.proc else None

    def fileno(self) -> int:
        """The worker's stdout, for select()."""
        assert self.proc and self.proc.stdout
        return self.proc.stdout.fileno()

    def alive(self) -> bool:
        """The process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._close()

    def exit_description(self) -> dict[str, Any]:
        """returncode and, when a signal ended it, the signal's name."""
        rc = self.proc.returncode if self.proc else None
        desc: dict[str, Any] = {"returncode": rc}
        if rc is not None and rc < 0:
            with contextlib.suppress(ValueError):
                desc["signal"] = signal.Signals(-rc).name
        return desc

    def _close(self) -> None:
        if self.proc:
            for f in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    if f:
                        f.close()

    def stop(self) -> None:
        """Close stdin (the worker exits after its current job) and wait briefly, else kill."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close()

    # -- protocol ---------------------------------------------------------------------------
    def _write(self, msg: dict[str, Any]) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write((json.dumps(msg, default=str) + "\n").encode())
        self.proc.stdin.flush()

    def submit(self, job_id: str, request: dict[str, Any], timeout: float) -> None:
        """Send one job; the deadline is now + timeout."""
        now = time.monotonic()
        self.job = RunningJob(job_id, now, now + timeout, request)
        self._write({"op": "job", "job_id": job_id, **request})

    def read_messages(self) -> list[dict[str, Any]]:
        """Every complete line available now (non-blocking); [] at EOF."""
        assert self.proc and self.proc.stdout
        chunks = []
        while True:
            try:
                data = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                break
            chunks.append(data)
        self._buf += b"".join(chunks)
        msgs = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                msgs.append(json.loads(line))
        return msgs

    def rss_bytes(self) -> int:
        """Resident memory of the worker and any children it spawned."""
        if self._ps is None:
            return 0
        try:
            total = self._ps.memory_info().rss
            for child in self._ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0
