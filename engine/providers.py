"""Execution providers for ONNX Runtime: CUDA/TensorRT when present, else CPU, with memory limits.

The CUDA provider gets `gpu_mem_limit` from --max-memory and a bounded arena
(`arena_extend_strategy=kSameAsRequested`), so one job cannot grow the GPU arena past its share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sealfuse.engine.errors import ConfigError, ProviderError

log = logging.getLogger("sealfuse.engine")

ORT_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GIB = 1024**3


@dataclass(frozen=True)
class ProviderConfig:
    """What every session of one engine is created with."""

    names: tuple[str, ...]  # ONNX Runtime provider names, in priority order
    options: tuple[dict[str, Any], ...]  # one options dict per provider
    threads: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def short(self) -> list[str]:
        rev = {v: k for k, v in ORT_NAMES.items()}
        return [rev.get(n, n) for n in self.names]


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


ARENA_STRATEGIES = ("kSameAsRequested", "kNextPowerOfTwo")


def cuda_options(max_memory_gb: float | None, device_id: int = 0,
                 arena_extend_strategy: str = "kSameAsRequested") -> dict[str, Any]:
    opts: dict[str, Any] = {
        "device_id": device_id,
        # Grow the arena by what is requested, not by powers of two: keeps usage near the need.
        "arena_extend_strategy": arena_extend_strategy,
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": True,
    }
    if max_memory_gb is not None:
        opts["gpu_mem_limit"] = int(max_memory_gb * GIB)
    return opts


def tensorrt_options(max_memory_gb: float | None, device_id: int = 0) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "device_id": device_id,
        "trt_fp16_enable": True,
        # An engine cache would write model-derived files to disk at run time; keep it off.
        "trt_engine_cache_enable": False,
    }
    if max_memory_gb is not None:
        opts["trt_max_workspace_size"] = int(max_memory_gb * GIB)
    return opts


def resolve_providers(
    requested: Sequence[str],
    *,
    max_memory_gb: float | None = None,
    threads: int = 1,
    device_id: int = 0,
    arena_extend_strategy: str = "kSameAsRequested",
    available: Sequence[str] | None = None,
) -> ProviderConfig:
    """Map user names (cuda, tensorrt, cpu) to ONNX Runtime providers and their options.

    Accelerators that this ONNX Runtime build lacks are dropped with one warning; CPU is
    always the last resort, so a GPU host and a CPU host run the same command.
    """
    unknown = [p for p in requested if p not in ORT_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown execution provider {', '.join(unknown)}; choose from {', '.join(ORT_NAMES)}",
            requested=list(requested),
        )
    if max_memory_gb is not None and max_memory_gb <= 0:
        raise ConfigError("--max-memory must be a positive number of GB", max_memory_gb=max_memory_gb)
    if threads < 1:
        raise ConfigError("--execution-threads must be at least 1", threads=threads)
    if arena_extend_strategy not in ARENA_STRATEGIES:
        raise ConfigError(f"GPU arena strategy must be one of {', '.join(ARENA_STRATEGIES)}",
                          arena_extend_strategy=arena_extend_strategy)
    have = set(available if available is not None else available_providers())
    names: list[str] = []
    options: list[dict[str, Any]] = []
    missing: list[str] = []
    for short in dict.fromkeys(requested):
        ort_name = ORT_NAMES[short]
        if ort_name not in have:
            if short != "cpu":
                missing.append(short)
            continue
        names.append(ort_name)
        if short == "cuda":
            options.append(cuda_options(max_memory_gb, device_id, arena_extend_strategy))
        elif short == "tensorrt":
            options.append(tensorrt_options(max_memory_gb, device_id))
        else:
            options.append({})
    warnings: list[str] = []
    if "CPUExecutionProvider" not in names:
        if "CPUExecutionProvider" not in have:  # pragma: no cover - every ORT build has it
            raise ProviderError("ONNX Runtime offers no CPU provider", available=sorted(have))
        names.append("CPUExecutionProvider")
        options.append({})
    if missing:
        warnings.append(
            f"execution provider {', '.join(missing)} not available in this ONNX Runtime "
            f"(available: {', '.join(sorted(have))}); running on CPU"
        )
    return ProviderConfig(tuple(names), tuple(options), threads, tuple(warnings))


def session_options(config: ProviderConfig) -> Any:
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = config.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: the engine reports its own warnings
    # Idle ORT threads spinning between runs compete with OpenCV and PyAV on small hosts
    # (measured 10-20% slower detection on 2 cores).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so
