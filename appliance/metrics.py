"""Prometheus textfile metrics of the watch-folder daemon (node_exporter's textfile collector).

Jobs by outcome, job seconds, frames, queue depth, worker restarts, and GPU memory when NVML
(pynvml) is importable and answers. Written atomically by `prometheus_client.write_to_textfile`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

OUTCOMES = ("done", "failed", "duplicate", "recovered")
JOB_SECONDS_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


class Metrics:
    """The daemon's metrics; `write()` replaces the textfile atomically."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("sealfuse_jobs", "Jobs finished, by outcome and reason", ["outcome", "reason"],
                            registry=r)
        self.job_seconds = Histogram("sealfuse_job_seconds", "Wall time of a job in the worker",
                                     ["outcome"], buckets=JOB_SECONDS_BUCKETS, registry=r)
        self.frames = Counter("sealfuse_frames", "Video frames and images processed", registry=r)
        self.queue_depth = Gauge("sealfuse_queue_depth", "Drops waiting in the inbox", registry=r)
        self.running = Gauge("sealfuse_jobs_running", "Jobs running in workers now", registry=r)
        self.worker_restarts = Counter("sealfuse_worker_restarts", "Worker processes restarted",
                                       ["reason"], registry=r)
        self.up = Gauge("sealfuse_up", "1 while the daemon is serving", registry=r)
        self.last_success = Gauge("sealfuse_last_success_timestamp_seconds",
                                  "Unix time of the last job written to outbox", registry=r)
        for outcome in ("done", "failed"):
            self.job_seconds.labels(outcome)
        self.gpu_used = Gauge("sealfuse_gpu_memory_used_bytes", "GPU memory in use (NVML)", ["gpu"],
                              registry=r)
        self.gpu_total = Gauge("sealfuse_gpu_memory_total_bytes", "GPU memory size (NVML)", ["gpu"],
                               registry=r)
        self._nvml: Any = _init_nvml()

    def job_finished(self, outcome: str, reason: str, seconds: float | None, frames: int = 0) -> None:
        self.jobs.labels(outcome, reason).inc()
        if seconds is not None and outcome in ("done", "failed"):
            self.job_seconds.labels(outcome).observe(seconds)
        if frames:
            self.frames.inc(frames)

    def sample_gpu(self) -> None:
        if self._nvml is None:
            return
        try:
            for i in range(self._nvml.nvmlDeviceGetCount()):
                mem = self._nvml.nvmlDeviceGetMemoryInfo(self._nvml.nvmlDeviceGetHandleByIndex(i))
                self.gpu_used.labels(str(i)).set(mem.used)
                self.gpu_total.labels(str(i)).set(mem.total)
        except Exception:  # NVML errors (driver gone, GPU lost) must not stop the daemon
            self._nvml = None

    def write(self) -> None:
        if self.path is None:
            return
        self.sample_gpu()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(self.path), self.registry)
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o644)

    def sweep_stale(self) -> list[Path]:
        """Remove temp files a killed writer left beside the textfile (name.prom.<pid>.<tid>)."""
        if self.path is None or not self.path.parent.is_dir():
            return []
        removed = []
        for p in self.path.parent.glob(self.path.name + ".*"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
        return removed


def _init_nvml() -> Any:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        pynvml.nvmlDeviceGetCount()
        return pynvml
    except Exception:  # not installed, no driver, no GPU: GPU metrics are simply absent
        return None
