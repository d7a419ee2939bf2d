"""The daemon's [gpu] config reaches ONNX Runtime's CUDA provider options (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealfuse.appliance.watch.config import WatchConfigError, load_config
from sealfuse.appliance.watch.worker import to_options_kwargs
from sealfuse.engine import providers
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import make_registry

GPU_HOST = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _options(tmp_path: Path, toml: str) -> SwapOptions:
    path = tmp_path / "watch.toml"
    path.write_text(toml)
    return SwapOptions(**to_options_kwargs(load_config(path).engine_options()))


def test_gpu_memory_limit_arena_and_device_reach_the_cuda_provider(tmp_path, monkeypatch):
    monkeypatch.setattr(providers, "available_providers", lambda: GPU_HOST)
    opts = _options(tmp_path, '[engine]\nexecution_providers = ["cuda", "cpu"]\n'
                              '[gpu]\nmemory_limit_gb = 2.5\narena_extend_strategy = "kNextPowerOfTwo"\n'
                              'device_id = 1\n')
    cfg = make_registry(opts).providers
    assert cfg.names == ("CUDAExecutionProvider", "CPUExecutionProvider")
    cuda = cfg.options[0]
    assert cuda["gpu_mem_limit"] == int(2.5 * 1024**3)
    assert cuda["arena_extend_strategy"] == "kNextPowerOfTwo"
    assert cuda["device_id"] == 1


def test_default_gpu_arena_is_bounded_and_the_limit_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(providers, "available_providers", lambda: GPU_HOST)
    cuda = make_registry(_options(tmp_path, "")).providers.options[0]
    assert cuda["arena_extend_strategy"] == "kSameAsRequested" and "gpu_mem_limit" not in cuda


@pytest.mark.parametrize("table", ['arena_extend_strategy = "kGrowForever"', "memory_limit_gb = 0",
                                   "device_id = -1", "vram = 4"])
def test_bad_gpu_config_is_a_startup_error_naming_the_key(tmp_path, table):
    path = tmp_path / "watch.toml"
    path.write_text(f"[gpu]\n{table}\n")
    with pytest.raises(WatchConfigError, match="gpu"):
        load_config(path)
