"""Metric names follow Prometheus conventions; GPU series come from NVML only when a GPU answers."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sealfuse.appliance import metrics as M

UNIT_SUFFIXES = ("_seconds", "_bytes", "_ratio", "_info", "_total", "_jobs", "_up", "_depth",
                 "_running")


def _families(path: Path) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(path.read_text())}


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(path.read_text()) for s in f.samples}


def test_every_metric_is_named_in_base_units_and_counters_end_in_total(tmp_path: Path) -> None:
    m = M.Metrics(tmp_path / "s.prom", spool=tmp_path, backend="slurm")
    m.job_finished("done", "ok", 1.5, frames=3)
    m.job_finished("failed", "timeout", 900)
    m.job_started(0.2)
    m.worker_restarts.labels("worker_crashed").inc()
    m.slurm_resubmits.labels("node_fail").inc()
    m.slurm_errors.labels("squeue").inc()
    m.write()
    fams = _families(tmp_path / "s.prom")
    assert fams, "nothing written"
    for name, fam in fams.items():
        assert name.startswith("sealfuse_"), name
        assert not re.search(r"(_ms|_mb|_gb|_percent|_milliseconds|_kb)(_|$)", name), name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name
        elif fam.type == "histogram":
            assert name.endswith("_seconds"), name
        else:
            assert name.endswith(UNIT_SUFFIXES), name
    assert fams["sealfuse_job_duration_seconds"].type == "histogram"
    assert fams["sealfuse_job_queue_wait_seconds"].type == "histogram"


def test_histogram_buckets_are_fine_enough_for_p50_and_p99() -> None:
    for buckets in (M.JOB_DURATION_BUCKETS, M.QUEUE_WAIT_BUCKETS):
        finite = [b for b in buckets if b != float("inf")]
        assert finite == sorted(finite) and buckets[-1] == float("inf")
        ratios = [hi / lo for lo, hi in zip(finite[1:], finite[2:], strict=False)]
        assert max(ratios) <= 2.5, "neighbouring buckets too far apart to interpolate a quantile"
        assert finite[-1] >= 3600


def test_queue_states_failures_by_reason_and_slurm_states_are_series(tmp_path: Path) -> None:
    m = M.Metrics(tmp_path / "s.prom", backend="slurm", version="9.9")
    m.set_queue(pending=4, queued=2, running=1)
    m.job_finished("failed", "no_face_in_target", 2.0)
    m.job_finished("failed", "no_face_in_target", 3.0)
    m.set_slurm_states({"PENDING": 2, "RUNNING": 1})
    m.write()
    s = _samples(tmp_path / "s.prom")
    assert s[("sealfuse_queue_jobs", (("state", "pending"),))] == 4
    assert s[("sealfuse_queue_jobs", (("state", "queued"),))] == 2
    assert s[("sealfuse_queue_jobs", (("state", "running"),))] == 1
    assert s[("sealfuse_queue_depth", ())] == 6
    assert s[("sealfuse_jobs_total", (("outcome", "failed"), ("reason", "no_face_in_target")))] == 2
    assert s[("sealfuse_jobs_total", (("outcome", "done"), ("reason", "ok")))] == 0  # exists at zero
    assert s[("sealfuse_slurm_jobs", (("state", "pending"),))] == 2
    assert s[("sealfuse_slurm_jobs", (("state", "node_fail"),))] == 0
    assert s[("sealfuse_build_info", (("backend", "slurm"), ("version", "9.9")))] == 1
    m.set_slurm_states({"RUNNING": 3})
    m.write()
    s = _samples(tmp_path / "s.prom")
    assert s[("sealfuse_slurm_jobs", (("state", "pending"),))] == 0
    assert s[("sealfuse_slurm_jobs", (("state", "running"),))] == 3


def test_local_backend_has_no_slurm_state_series(tmp_path: Path) -> None:
    M.Metrics(tmp_path / "s.prom").write()
    assert not [k for k in _samples(tmp_path / "s.prom") if k[0].startswith("sealfuse_slurm_jobs")]


def test_spool_filesystem_bytes_match_statvfs(tmp_path: Path) -> None:
    import os

    m = M.Metrics(tmp_path / "s.prom", spool=tmp_path)
    m.write()
    st = os.statvfs(tmp_path)
    s = _samples(tmp_path / "s.prom")
    assert s[("sealfuse_spool_filesystem_size_bytes", ())] == st.f_blocks * st.f_frsize
    assert 0 < s[("sealfuse_spool_filesystem_avail_bytes", ())] <= st.f_blocks * st.f_frsize


def test_without_a_gpu_there_is_no_gpu_series(tmp_path: Path) -> None:
    """The real pynvml (nvidia-ml-py, in the test extra) finds no NVML library or GPU here."""
    pytest.importorskip("pynvml")
    if M._init_nvml() is not None:
        pytest.skip("this machine has a GPU that NVML answers for")
    m = M.Metrics(tmp_path / "s.prom")
    m.write()
    assert not [k for k in _samples(tmp_path / "s.prom") if k[0].startswith("sealfuse_gpu_")]


class StandInNVML:
    """A stand-in for pynvml (no GPU here): two boards, the second without encoder counters."""

    class NotSupported(Exception):
        pass

    def __init__(self) -> None:
        self.fail = False

    def nvmlDeviceGetCount(self) -> int:
        if self.fail:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-stand-in-{h}".encode()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        total = (h + 1) * 16 * 1024**3
        return SimpleNamespace(total=total, used=3 * 1024**3, free=total - 3 * 1024**3)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=37 + h, memory=12)

    def nvmlDeviceGetEncoderUtilization(self, h: int) -> list[int]:
        if h == 1:
            raise self.NotSupported("NVML_ERROR_NOT_SUPPORTED")
        return [25, 167000]

    def nvmlDeviceGetDecoderUtilization(self, h: int) -> list[int]:
        return [50, 167000]


def test_nvml_readings_become_dcgm_named_series_in_base_units(tmp_path: Path) -> None:
    nv = StandInNVML()
    m = M.Metrics(tmp_path / "s.prom", nvml=nv)
    m.write()
    s = _samples(tmp_path / "s.prom")
    g0 = (("gpu", "0"), ("uuid", "GPU-stand-in-0"))
    g1 = (("gpu", "1"), ("uuid", "GPU-stand-in-1"))
    assert s[("sealfuse_gpu_utilization_ratio", g0)] == pytest.approx(0.37)
    assert s[("sealfuse_gpu_utilization_ratio", g1)] == pytest.approx(0.38)
    assert s[("sealfuse_gpu_mem_copy_utilization_ratio", g0)] == pytest.approx(0.12)
    assert s[("sealfuse_gpu_fb_used_bytes", g0)] == 3 * 1024**3
    assert s[("sealfuse_gpu_fb_free_bytes", g1)] == 32 * 1024**3 - 3 * 1024**3
    assert s[("sealfuse_gpu_fb_total_bytes", g1)] == 32 * 1024**3
    assert s[("sealfuse_gpu_enc_utilization_ratio", g0)] == pytest.approx(0.25)
    assert ("sealfuse_gpu_enc_utilization_ratio", g1) not in s  # not supported: absent, not zero
    assert s[("sealfuse_gpu_dec_utilization_ratio", g1)] == pytest.approx(0.5)
    help_text = (tmp_path / "s.prom").read_text()
    for field in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                  "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL"):
        assert field in help_text


def test_a_lost_gpu_stops_gpu_sampling_but_not_the_writer(tmp_path: Path) -> None:
    nv = StandInNVML()
    m = M.Metrics(tmp_path / "s.prom", nvml=nv)
    nv.fail = True
    m.write()  # must not raise
    assert m._nvml is None
    m.job_finished("done", "ok", 1.0)
    m.write()
    assert _samples(tmp_path / "s.prom")[("sealfuse_jobs_total", (("outcome", "done"), ("reason", "ok")))] == 1


def test_every_quarantine_reason_of_the_daemon_has_a_zero_series_from_the_start(tmp_path: Path) -> None:
    """increase() cannot see a counter's first step when the series appears at 1."""
    from sealfuse.appliance.watch import errors as E

    startup = getattr(E, "StartupError", None)  # the daemon's own start failures are no job's
    reasons = {c.reason for c in vars(E).values()
               if isinstance(c, type) and isinstance(getattr(c, "reason", None), str)
               and not (startup and issubclass(c, startup))}
    reasons -= {"bad_drop", "duplicate"}  # the base class; duplicates are their own outcome
    assert {"empty_file", "worker_crashed", "timeout"} <= reasons
    M.Metrics(tmp_path / "s.prom").write()
    zero = {dict(labels)["reason"] for (name, labels), v in _samples(tmp_path / "s.prom").items()
            if name == "sealfuse_jobs_total" and dict(labels)["outcome"] == "failed" and v == 0}
    assert reasons | {"node_fail", "cancelled", "slurm_failed", "no_face_in_target"} <= zero, reasons - zero
