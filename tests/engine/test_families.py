"""Each learned swapper family and restorer through its stand-in: template, crop size, normalisation,
source vector and paste-back, checked against numbers written here (FaceFusion 3.8.1's table)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sealfuse.engine.errors import ModelMissingError, ModelSignatureError
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Pipeline
from sealfuse.engine.registry import CATALOG, LOCK_FILE, ModelRegistry, sha256_file
from tests.engine import standins
from tests.engine.standins import (
    GHOST_CONVERTER,
    INSWAPPER_EMAP,
    SIMSWAP_CONVERTER,
    SOURCE_GAIN,
    SWAPPER_STANDINS,
)

# Five-point templates in units of the crop size.
ARCFACE_112_V1 = np.array([[0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
                           [0.37913393, 0.77687500], [0.62086607, 0.77687500]])
ARCFACE_128 = np.array([[0.36167656, 0.40387734], [0.63696719, 0.40235469], [0.50019687, 0.56044219],
                        [0.38710391, 0.72160547], [0.61507734, 0.72034453]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# name -> (template, crop size, what the family feeds as `source` given the raw embedding)
FAMILIES = {
    "ghost_1_256": (ARCFACE_112_V1, 256, lambda e: GHOST_CONVERTER @ e),
    "ghost_2_256": (ARCFACE_112_V1, 256, lambda e: GHOST_CONVERTER @ e),
    "ghost_3_256": (ARCFACE_112_V1, 256, lambda e: GHOST_CONVERTER @ e),
    "simswap_256": (ARCFACE_112_V1, 256, lambda e: _unit(SIMSWAP_CONVERTER @ e)),
    "simswap_unofficial_512": (ARCFACE_112_V1, 512, lambda e: _unit(SIMSWAP_CONVERTER @ e)),
    "hyperswap_1a_256": (ARCFACE_128, 256, _unit),
    "hyperswap_1b_256": (ARCFACE_128, 256, _unit),
    "hyperswap_1c_256": (ARCFACE_128, 256, _unit),
    "inswapper_128_fp16": (ARCFACE_128, 128, lambda e: _unit(_unit(e) @ INSWAPPER_EMAP)),
}
NEEDS = {"ghost": ("crossface_ghost",), "simswap": ("crossface_simswap",)}


def _models(root: Path, name: str) -> Path:
    return standins.models_dir(root, swapper=False, extra=(name, *NEEDS.get(CATALOG[name].family, ())))


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = list(FAMILIES) + ["crossface_ghost", "crossface_simswap", "restoreformer_plus_plus", "codeformer"]
    return standins.models_dir(tmp_path_factory.mktemp("families"), swapper=False, extra=tuple(names))


def _options(models: Path, name: str, **kw) -> SwapOptions:
    return SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model=name, **kw)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst by a plain linear solve (independent of the engine's code)."""
    a = np.zeros((2 * len(src), 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))]
    p, *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])


def _offset_px(name: str, vector: np.ndarray) -> np.ndarray:
    """Per-BGR-channel pixel offset the stand-in adds for `vector` (its first three entries are R, G, B)."""
    scale = 127.5 if SWAPPER_STANDINS[name][1] == "half" else 255.0  # "half" outputs are un-normalised by 0.5
    return (scale * SOURCE_GAIN * vector[:3])[::-1]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_crop_normalisation_and_source_vector(name, family_models, hanks_png, t1_frame):
    template, size, source_of = FAMILIES[name]
    pipe = Pipeline(_options(family_models, name), hanks_png)
    swapper = pipe.models.swapper()
    assert swapper.family == CATALOG[name].family
    embedding = pipe.source.embedding
    vector = np.asarray(pipe.models.identity(pipe.source)).reshape(-1)
    assert np.allclose(vector, source_of(embedding), rtol=1e-3, atol=1e-4)
    offset = _offset_px(name, vector)
    assert np.abs(offset).max() > 2, "the source must visibly move the stand-in's output"
    checked = 0
    for face in pipe.detect(t1_frame)[:3]:
        result = swapper.swap(t1_frame, face, vector.reshape(1, -1))
        assert result.crop.shape == (size, size, 3) and result.crop.dtype == np.uint8
        m = _similarity(face.kps.astype(np.float64), template * size)
        assert np.allclose(result.matrix, m, atol=1e-2 * max(1.0, np.abs(m).max())), (result.matrix, m)
        border = cv2.BORDER_CONSTANT if name.startswith("inswapper") else cv2.BORDER_REPLICATE
        crop = cv2.warpAffine(t1_frame, m.astype(np.float32), (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=border).astype(np.float32)
        expected = 255.0 - crop + offset
        ok = (expected > 8) & (expected < 247)
        assert ok.mean() > 0.5
        err = np.abs(result.crop.astype(np.float32) - expected)[ok].mean()
        assert err < 2.0, (name, err)
        checked += 1
    assert checked == 3


@pytest.mark.parametrize("name", ["ghost_1_256", "simswap_256", "simswap_unofficial_512", "hyperswap_1a_256",
                                  "inswapper_128_fp16"])
def test_family_paste_back_changes_only_the_masked_face(name, family_models, hanks_png, t1_frame):
    pipe = Pipeline(_options(family_models, name), hanks_png)
    faces = pipe.select(pipe.detect(t1_frame), t1_frame)
    out, union = pipe.render_with_mask(t1_frame, faces)
    assert np.array_equal(out[union <= 0], t1_frame[union <= 0])
    core = union > 0.999
    assert core.sum() > len(faces) * 200
    vector = np.asarray(pipe.models.identity(pipe.source)).reshape(-1)
    expected = 255.0 - t1_frame.astype(np.float32) + _offset_px(name, vector)
    ok = core[..., None] & (expected > 8) & (expected < 247)
    err = np.abs(out.astype(np.float32) - expected)[ok].mean()
    assert err < 12.0, err


def test_ghost_without_its_converter_names_the_missing_file(tmp_path, hanks_png):
    models = standins.models_dir(tmp_path / "m", swapper=False, extra=("ghost_1_256",))
    with pytest.raises(ModelMissingError, match="crossface_ghost.onnx"):
        Pipeline(_options(models, "ghost_1_256"), hanks_png)


@pytest.mark.parametrize("name, impostor", [("ghost_1_256", "inswapper_128"), ("crossface_ghost", "arcface_w600k_r50"),
                                            ("simswap_unofficial_512", "simswap_256"),
                                            ("codeformer", "gfpgan_1.4")])
def test_a_file_with_another_signature_is_refused_before_any_session(name, impostor, tmp_path, monkeypatch):
    import onnxruntime

    path = standins.standin_for(impostor)(tmp_path / CATALOG[name].file)
    _pin(path)

    def no_session(*_a, **_k):
        raise AssertionError("a session was created before the signature check")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    with pytest.raises(ModelSignatureError, match=f"does not have the {CATALOG[name].family} signature") as info:
        ModelRegistry(tmp_path, standins_cpu()).session(name)
    assert info.value.evidence["inputs"], "the evidence lists the file's actual inputs"


def test_a_file_that_is_not_onnx_is_a_signature_error(tmp_path):
    path = tmp_path / CATALOG["ghost_1_256"].file
    path.write_bytes(b"\x08\x07garbage-not-a-model" * 10)
    _pin(path)
    with pytest.raises(ModelSignatureError, match="not a readable ONNX model"):
        ModelRegistry(tmp_path, standins_cpu()).session("ghost_1_256")


def _pin(path: Path) -> None:
    entry = {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}
    (path.parent / LOCK_FILE).write_text(json.dumps({"models": [entry]}))


def standins_cpu():
    from sealfuse.engine.providers import resolve_providers

    return resolve_providers(["cpu"], threads=1)


def _enhanced(models: Path, hanks_png: Path, frame: np.ndarray, name: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    opts = _options(models, "mesh", frame_processors=("face_enhancer",), face_enhancer_model=name,
                    face_enhancer_blend=1.0, **kw)
    pipe = Pipeline(opts, hanks_png)
    faces = pipe.select(pipe.detect(frame), frame)[:1]
    return pipe.render_with_mask(frame, faces)


def test_restoreformer_standin_halves_contrast_inside_the_face(family_models, hanks_png, t1_frame):
    out, union = _enhanced(family_models, hanks_png, t1_frame, "restoreformer_plus_plus")
    core = union > 0.999
    expected = 127.5 + (t1_frame.astype(np.float32) - 127.5) * 0.5
    assert core.sum() > 200
    assert np.abs(out[core].astype(np.float32) - expected[core]).mean() < 3.0
    assert np.array_equal(out[union <= 0], t1_frame[union <= 0])


def test_codeformer_gets_the_fidelity_weight(family_models, hanks_png, t1_frame):
    flat, union = _enhanced(family_models, hanks_png, t1_frame, "codeformer", face_enhancer_weight=0.0)
    same, _ = _enhanced(family_models, hanks_png, t1_frame, "codeformer", face_enhancer_weight=1.0)
    core = union > 0.999
    assert np.abs(flat[core].astype(np.float32) - 127.5).max() <= 1.0  # weight 0: flat mid-grey
    assert np.abs(same[core].astype(np.float32) - t1_frame[core]).mean() < 3.0  # weight 1: the input back


def test_the_light_onnx_reader_agrees_with_the_onnx_package(family_models):
    import onnx
    from onnx import numpy_helper

    from sealfuse.engine.onnxinfo import ELEM_TYPES, last_initializer, read_io

    files = sorted(family_models.glob("*.onnx"))
    assert len(files) >= 12
    for path in files:
        model = onnx.load(str(path))
        inits = {i.name for i in model.graph.initializer}
        io = read_io(path)

        def dims(vi):
            return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                         for d in vi.type.tensor_type.shape.dim)

        want_in = [(v.name, ELEM_TYPES[v.type.tensor_type.elem_type], dims(v))
                   for v in model.graph.input if v.name not in inits]
        assert [(t.name, t.elem_type, t.shape) for t in io.inputs] == want_in, path.name
        assert [t.name for t in io.outputs] == [v.name for v in model.graph.output], path.name
        if model.graph.initializer:
            expected = numpy_helper.to_array(model.graph.initializer[-1])
            assert np.array_equal(last_initializer(path), expected), path.name
