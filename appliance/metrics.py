"""Prometheus textfile metrics of the watch-folder daemon (node_exporter's textfile collector).

Names follow Prometheus conventions (base units, `_total` counters, histograms); GPU figures come
from NVML (`nvidia-ml-py`, optional) and are named after DCGM's fields. docs/monitoring.md lists them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    write_to_textfile,
)

# No `*_created` series: a textfile's counters restart with the daemon and need no creation time.
disable_created_metrics()

OUTCOMES = ("done", "failed", "duplicate", "recovered")
QUEUE_STATES = ("pending", "queued", "running")
# Slurm job states the dispatcher reports (lower case, as squeue's long names).
SLURM_STATES = ("pending", "running", "completing", "completed", "failed", "timeout",
                "out_of_memory", "node_fail", "cancelled", "preempted", "boot_fail", "deadline",
                "suspended", "requeued", "unknown")
# Failure reasons whose counters exist from the start at zero, so that increase() and rate() see a
# reason's first failure (a counter series that appears at 1 has no increase). Others appear when
# they first happen. docs/watch-folder.md and docs/cluster.md explain each reason.
FAILURE_REASONS = (
    "bad_name", "symlink", "symlinked_folder", "foreign_filesystem", "hardlink", "fifo", "device_node", "socket", "directory",
    "unknown_preset", "empty_file", "input_too_large", "unsupported_extension",
    "manifest_too_large", "invalid_json", "schema_violation", "path_escape", "missing_media",
    "orphan_media", "truncated", "too_large", "not_media", "unreadable", "no_face_in_target",
    "no_face_in_source", "no_reference_match", "bad_options", "internal_error",
    "preset_source_unreadable", "worker_crashed", "timeout", "memory_limit", "attempts_exhausted",
    "claim_incomplete", "output_missing", "commit_failed", "recovery_failed",
    "node_fail", "cancelled", "slurm_failed", "submit_failed",
)
# Buckets about 1.5x apart from 0.1 s to an hour: histogram_quantile's linear interpolation inside
# a bucket is then off by well under a bucket's width, so p50 and p99 are recoverable.
JOB_DURATION_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120,
                        180, 300, 450, 600, 900, 1200, 1800, 2700, 3600, float("inf"))
QUEUE_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90,
                      120, 180, 300, 600, 1200, 1800, 3600, 7200, float("inf"))


class Metrics:
    """The daemon's metrics; `write()` replaces the textfile atomically.

    `spool` (optional) adds the free and total bytes of the spool's filesystem.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, spool: str | os.PathLike[str] | None = None,
                 backend: str = "local", version: str | None = None, nvml: Any = None) -> None:
        self.path = Path(path) if path else None
        self.spool = Path(spool) if spool else None
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("sealfuse_jobs", "Jobs finished, by outcome and reason (failures by reason: "
                            "outcome=\"failed\")", ["outcome", "reason"], registry=r)
        self.job_duration = Histogram(
            "sealfuse_job_duration_seconds", "Wall time of a job from start to its commit",
            ["outcome"], buckets=JOB_DURATION_BUCKETS, registry=r)
        self.job_seconds = self.job_duration  # the name the daemon used first
        self.queue_wait = Histogram(
            "sealfuse_job_queue_wait_seconds", "Time from claim to the start of a job's run",
            buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.frames = Counter("sealfuse_frames", "Video frames and images processed", registry=r)
        self.queue_jobs = Gauge("sealfuse_queue_jobs", "Jobs by queue state: pending (drops not yet "
                                "claimed), queued (claimed, waiting), running", ["state"], registry=r)
        self.queue_depth = Gauge("sealfuse_queue_depth", "Drops and claimed jobs waiting to run",
                                 registry=r)
        self.running = Gauge("sealfuse_jobs_running", "Jobs running now", registry=r)
        self.worker_restarts = Counter("sealfuse_worker_restarts", "Worker processes restarted",
                                       ["reason"], registry=r)
        self.up = Gauge("sealfuse_up", "1 while the daemon is serving", registry=r)
        self.start_time = Gauge("sealfuse_start_time_seconds",
                                "Unix time the daemon started (changes() counts service restarts)",
                                registry=r)
        self.last_success = Gauge("sealfuse_last_success_timestamp_seconds",
                                  "Unix time of the last job written to outbox", registry=r)
        self.build_info = Gauge("sealfuse_build_info", "Always 1; the release and dispatch backend",
                                ["version", "backend"], registry=r)
        self.spool_avail = Gauge("sealfuse_spool_filesystem_avail_bytes",
                                 "Bytes available to the daemon on the spool's filesystem", registry=r)
        self.spool_size = Gauge("sealfuse_spool_filesystem_size_bytes",
                                "Size of the spool's filesystem", registry=r)
        self.slurm_jobs = Gauge("sealfuse_slurm_jobs", "Slurm jobs of this daemon by Slurm state "
                                "(slurm backend only)", ["state"], registry=r)
        self.slurm_resubmits = Counter("sealfuse_slurm_resubmissions", "Jobs resubmitted to Slurm "
                                       "after a lost run, by reason", ["reason"], registry=r)
        self.slurm_errors = Counter("sealfuse_slurm_command_errors", "sbatch/squeue/scontrol/scancel "
                                    "calls that failed", ["command"], registry=r)
        # DCGM field names in the help text; values in base units (ratios, bytes).
        g = ["gpu", "uuid"]
        self.gpu_util = Gauge("sealfuse_gpu_utilization_ratio", "GPU utilisation 0..1 (DCGM_FI_DEV_GPU_UTIL)",
                              g, registry=r)
        self.gpu_mem_copy = Gauge("sealfuse_gpu_mem_copy_utilization_ratio",
                                  "Memory copy utilisation 0..1 (DCGM_FI_DEV_MEM_COPY_UTIL)", g, registry=r)
        self.gpu_fb_used = Gauge("sealfuse_gpu_fb_used_bytes", "Framebuffer memory used (DCGM_FI_DEV_FB_USED)",
                                 g, registry=r)
        self.gpu_fb_free = Gauge("sealfuse_gpu_fb_free_bytes", "Framebuffer memory free (DCGM_FI_DEV_FB_FREE)",
                                 g, registry=r)
        self.gpu_fb_total = Gauge("sealfuse_gpu_fb_total_bytes",
                                  "Framebuffer memory size (DCGM_FI_DEV_FB_TOTAL)", g, registry=r)
        self.gpu_enc = Gauge("sealfuse_gpu_enc_utilization_ratio",
                             "Video encoder utilisation 0..1 (DCGM_FI_DEV_ENC_UTIL)", g, registry=r)
        self.gpu_dec = Gauge("sealfuse_gpu_dec_utilization_ratio",
                             "Video decoder utilisation 0..1 (DCGM_FI_DEV_DEC_UTIL)", g, registry=r)
        # Series that alert rules compare against must exist from the start, at zero.
        for outcome in ("done", "failed"):
            self.job_duration.labels(outcome)
        self.jobs.labels("done", "ok")
        self.jobs.labels("duplicate", "duplicate")
        for reason in failure_reasons():
            self.jobs.labels("failed", reason)
        for state in QUEUE_STATES:
            self.queue_jobs.labels(state)
        self.start_time.set(time.time())
        if version is None:
            from sealfuse import __version__ as version
        self.backend = backend
        self.build_info.labels(version, backend).set(1)
        if backend == "slurm":
            for state in SLURM_STATES:
                self.slurm_jobs.labels(state)
            for command in ("sbatch", "squeue", "scontrol", "scancel"):
                self.slurm_errors.labels(command)
        self._nvml: Any = nvml if nvml is not None else _init_nvml()

    # ------------------------------------------------------------------------ updates
    def job_started(self, queue_wait_seconds: float | None) -> None:
        if queue_wait_seconds is not None and queue_wait_seconds >= 0:
            self.queue_wait.observe(queue_wait_seconds)

    def job_finished(self, outcome: str, reason: str, seconds: float | None, frames: int = 0) -> None:
        self.jobs.labels(outcome, reason).inc()
        if seconds is not None and outcome in ("done", "failed"):
            self.job_duration.labels(outcome).observe(seconds)
        if frames:
            self.frames.inc(frames)

    def set_queue(self, *, pending: int, queued: int, running: int) -> None:
        self.queue_jobs.labels("pending").set(pending)
        self.queue_jobs.labels("queued").set(queued)
        self.queue_jobs.labels("running").set(running)
        self.queue_depth.set(pending + queued)
        self.running.set(running)

    def set_slurm_states(self, counts: Mapping[str, int]) -> None:
        """Slurm job states (any case, e.g. "PENDING") -> how many of this daemon's jobs."""
        norm = {k.lower(): v for k, v in counts.items()}
        for state in {*SLURM_STATES, *norm}:
            self.slurm_jobs.labels(state).set(norm.get(state, 0))

    def sample_gpu(self) -> None:
        nv = self._nvml
        if nv is None:
            return
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(nv.nvmlDeviceGetUUID(h))
                labels = (str(i), uuid)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                self.gpu_fb_used.labels(*labels).set(mem.used)
                self.gpu_fb_free.labels(*labels).set(mem.free)
                self.gpu_fb_total.labels(*labels).set(mem.total)
                # A counter the board does not support (NVML_ERROR_NOT_SUPPORTED) stays absent.
                with contextlib.suppress(Exception):
                    util = nv.nvmlDeviceGetUtilizationRates(h)
                    self.gpu_util.labels(*labels).set(util.gpu / 100.0)
                    self.gpu_mem_copy.labels(*labels).set(util.memory / 100.0)
                with contextlib.suppress(Exception):
                    enc = nv.nvmlDeviceGetEncoderUtilization(h)[0] / 100.0
                    self.gpu_enc.labels(*labels).set(enc)
                with contextlib.suppress(Exception):
                    dec = nv.nvmlDeviceGetDecoderUtilization(h)[0] / 100.0
                    self.gpu_dec.labels(*labels).set(dec)
        except Exception:  # NVML errors (driver gone, GPU lost) must not stop the daemon
            self._nvml = None

    def sample_spool(self) -> None:
        if self.spool is None:
            return
        try:
            st = os.statvfs(self.spool)
        except OSError:
            return
        self.spool_avail.set(st.f_bavail * st.f_frsize)
        self.spool_size.set(st.f_blocks * st.f_frsize)

    def write(self) -> None:
        if self.path is None:
            return
        self.sample_gpu()
        self.sample_spool()
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


def failure_reasons() -> tuple[str, ...]:
    """FAILURE_REASONS plus every job-failure reason the watch service's errors module defines
    (so that a reason added there gets its zero series without touching this list)."""
    found: set[str] = set(FAILURE_REASONS)
    try:
        from sealfuse.appliance.watch import errors
    except ImportError:  # pragma: no cover - the watch package is part of the appliance
        return tuple(sorted(found))
    startup = getattr(errors, "StartupError", None)
    for obj in vars(errors).values():
        reason = getattr(obj, "reason", None)
        if isinstance(obj, type) and issubclass(obj, Exception) and isinstance(reason, str) \
                and not (startup is not None and issubclass(obj, startup)):
            found.add(reason)
    found -= {"bad_drop", "duplicate"}  # a base class; duplicates are their own outcome
    return tuple(sorted(found))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _init_nvml() -> Any:
    try:
        import pynvml  # type: ignore[import-not-found]  # from nvidia-ml-py

        pynvml.nvmlInit()
        pynvml.nvmlDeviceGetCount()
        return pynvml
    except Exception:  # not installed, no driver, no GPU: GPU metrics are simply absent
        return None
