"""The still-image pipeline on real photos: mesh swap, inswapper-signature stand-in, masks, enhancer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sealfuse.engine.api import Engine
from sealfuse.engine.errors import ModelMissingError, NoReferenceMatchError
from sealfuse.engine.imageio import read_image
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Models, Pipeline, make_registry


def _landmarks_sane(face) -> bool:
    x1, y1, x2, y2 = face.bbox
    le, re, nose, lm, rm = face.kps
    inside = all(x1 - 2 <= x <= x2 + 2 and y1 - 2 <= y <= y2 + 2 for x, y in face.kps)
    return bool(inside and le[0] < re[0] and lm[0] < rm[0] and max(le[1], re[1]) < nose[1] < min(lm[1], rm[1]))


def test_six_faces_on_t1_with_sane_landmarks(cpu_options, hanks_png, t1_frame):
    pipe = Pipeline(cpu_options, hanks_png)
    faces = pipe.detect(t1_frame)
    assert len(faces) == 6
    assert all(_landmarks_sane(f) for f in faces)
    assert all(f.score >= cpu_options.face_detector_score for f in faces)


def test_mesh_swap_changes_pixels_only_inside_the_union_of_face_masks(cpu_options, hanks_png, t1_frame):
    pipe = Pipeline(cpu_options, hanks_png)
    faces = pipe.select(pipe.detect(t1_frame), t1_frame)
    out, union = pipe.render_with_mask(t1_frame, faces)
    changed = np.any(out != t1_frame, axis=2)
    assert changed.sum() > 6 * 500, "every face should change visibly"
    assert not np.any(changed & (union <= 0)), "a pixel outside every face mask changed"
    # each face's centre (between its eyes and mouth corners) lies in the changed area
    for f in faces:
        x, y = np.round(f.kps[[0, 1, 3, 4]].mean(0)).astype(int)
        assert union[y, x] > 0.5


def test_one_mode_swaps_only_the_largest_face(cpu_options, hanks_png, t1_frame):
    pipe = Pipeline(cpu_options.with_(face_selector_mode="one"), hanks_png)
    faces = pipe.detect(t1_frame)
    selected = pipe.select(faces, t1_frame)
    assert len(selected) == 1 and selected[0].size == max(f.size for f in faces)


def _standin_options(models: Path, **kw) -> SwapOptions:
    return SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model="inswapper_128", **kw)


def test_inswapper_standin_blend_zero_leaves_the_image_unchanged(standin_models, hanks_png, t1_frame):
    pipe = Pipeline(_standin_options(standin_models, blend_ratio=0.0), hanks_png)
    faces = pipe.detect(t1_frame)
    out = pipe.render(t1_frame, pipe.select(faces, t1_frame))
    assert np.array_equal(out, t1_frame)


def test_inswapper_standin_blend_one_shows_the_standin_output_in_the_face(standin_models, hanks_png, t1_frame):
    pipe = Pipeline(_standin_options(standin_models, blend_ratio=1.0), hanks_png)
    assert pipe.models.swapper_name == "inswapper_128"
    faces = pipe.select(pipe.detect(t1_frame), t1_frame)
    out, union = pipe.render_with_mask(t1_frame, faces)
    core = union > 0.999
    assert core.sum() > 6 * 200
    # The stand-in inverts the aligned crop, so inside the mask out ~= 255 - in (two warps blur a little).
    err = np.abs(out[core].astype(np.float32) + t1_frame[core].astype(np.float32) - 255.0).mean()
    assert err < 12.0, err
    # and outside every mask nothing moved
    assert np.array_equal(out[union <= 0], t1_frame[union <= 0])


def test_enhancer_standin_runs_after_the_swap_inside_the_face(standin_models, hanks_png, t1_frame):
    opts = _standin_options(standin_models, frame_processors=("face_enhancer",), face_enhancer_blend=1.0)
    pipe = Pipeline(opts, hanks_png)
    faces = pipe.select(pipe.detect(t1_frame), t1_frame)
    out, union = pipe.render_with_mask(t1_frame, faces[:1])
    core = union > 0.999
    err = np.abs(out[core].astype(np.float32) + t1_frame[core].astype(np.float32) - 255.0).mean()
    assert core.sum() > 200 and err < 12.0


def test_region_mask_limits_the_swap_to_the_parsed_face_region(standin_models, hanks_png, t1_frame):
    base = Pipeline(_standin_options(standin_models, face_mask_types=("box",)), hanks_png)
    region = Pipeline(_standin_options(standin_models, face_mask_types=("box", "region")), hanks_png)
    faces = base.select(base.detect(t1_frame), t1_frame)
    _, union_box = base.render_with_mask(t1_frame, faces)
    _, union_region = region.render_with_mask(t1_frame, faces)
    assert 0 < (union_region > 0).sum() < 0.8 * (union_box > 0).sum()


def test_reference_mode_selects_the_face_closest_to_the_reference(standin_models, hanks_png, t1_frame, tmp_path):
    import cv2

    probe = Pipeline(_standin_options(standin_models), hanks_png)
    faces = sorted(probe.detect(t1_frame), key=lambda f: float(f.bbox[0]))
    x1, y1, x2, y2 = faces[2].bbox.astype(int)
    pad = int((x2 - x1) * 0.6)
    ref = t1_frame[max(y1 - pad, 0):y2 + pad, max(x1 - pad, 0):x2 + pad]
    cv2.imwrite(str(tmp_path / "ref.png"), ref)
    opts = _standin_options(standin_models, face_selector_mode="reference",
                            reference_face_image=tmp_path / "ref.png", reference_face_distance=2.0)
    pipe = Pipeline(opts, hanks_png)
    embedded = pipe.select(faces, t1_frame)
    dists = pipe.reference_distances(embedded)
    best = int(np.argmin(dists))
    assert best == 2
    second = sorted(dists)[1]
    tight = Pipeline(opts.with_(reference_face_distance=(dists[best] + second) / 2), hanks_png)
    picked = tight.select(faces, t1_frame)
    assert len(picked) == 1 and np.allclose(picked[0].bbox, faces[2].bbox)
    none = Pipeline(opts.with_(reference_face_distance=dists[best] / 2 - 1e-6), hanks_png)
    assert none.select(faces, t1_frame) == []


def test_reference_without_match_is_a_specific_error(standin_models, hanks_png, t1_jpg, tmp_path):
    opts = _standin_options(standin_models, face_selector_mode="reference", reference_face_image=hanks_png,
                            reference_face_distance=1e-9)
    with pytest.raises(NoReferenceMatchError):
        Engine(opts).swap_file(hanks_png, t1_jpg, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_inswapper_without_a_recognizer_names_the_missing_model(tmp_path, hanks_png):
    from tests.engine.standins import models_dir

    models = models_dir(tmp_path / "m", recognizer=False)
    with pytest.raises(ModelMissingError) as info:
        Pipeline(_standin_options(models), hanks_png)
    assert "w600k_r50.onnx" in str(info.value) and "arcface_w600k_r50" in str(info.value)


def test_reference_mode_without_a_recognizer_names_the_missing_model(cpu_options, hanks_png):
    opts = cpu_options.with_(face_selector_mode="reference", reference_face_image=hanks_png,
                             face_swapper_model="mesh")
    with pytest.raises(ModelMissingError, match="w600k_r50.onnx"):
        Pipeline(opts, hanks_png)


def test_engine_report_lists_faces_models_with_sha256_and_timings(standin_models, hanks_png, t1_jpg, tmp_path):
    report = Engine(_standin_options(standin_models)).swap_file(hanks_png, t1_jpg, tmp_path / "out.webp")
    assert len(report["faces"]) == 6 and all(f["selected"] for f in report["faces"])
    names = {m["name"]: m for m in report["models"]}
    assert {"inswapper_128", "arcface_w600k_r50", "blazeface_full_range", "facemesh_468"} <= set(names)
    assert all(len(m["sha256"]) == 64 for m in names.values())
    assert {"detect", "swap", "paste", "decode", "encode", "total"} <= set(report["timings_ms"])
    out = read_image(tmp_path / "out.webp", max_pixels=10**8)
    assert out.shape == (886, 1280, 3)


def test_scrfd_is_used_when_supplied_and_its_detections_map_back_to_the_frame(tmp_path):
    from tests.engine.standins import models_dir, scrfd_expected

    models = models_dir(tmp_path / "m", swapper=False, recognizer=False, detector=True)
    frame = np.full((960, 1280, 3), 128, np.uint8)
    opts = SwapOptions(models_dir=models, execution_providers=("cpu",))
    m = Models(opts, make_registry(opts))
    assert m.detector_name == "scrfd_10g" and m.mesher_name == "facemesh_468"
    faces = m.detector().detect(frame)  # the stand-in reports its one face in any image
    assert len(faces) == 1
    box, kps = scrfd_expected()
    scale = 1280 / 640  # SCRFD letterboxes 1280x960 into its 640x640 input
    assert np.allclose(faces[0].bbox, box * scale, atol=1.0)
    assert np.allclose(faces[0].kps, kps * scale, atol=1.0)
    assert faces[0].score == pytest.approx(0.9, abs=1e-3)


def test_a_warm_engine_detects_a_repeated_source_face_once(cpu_options, hanks_png, t1_jpg, tmp_path):
    engine = Engine(cpu_options)
    models = engine.models_for(cpu_options)
    detector = models.detector()
    calls: list[tuple[int, int]] = []
    original = detector.detect

    def counting(image):
        calls.append(image.shape[:2])
        return original(image)

    detector.detect = counting  # type: ignore[method-assign]
    for name in ("a.png", "b.png"):
        engine.swap_file(hanks_png, t1_jpg, tmp_path / name)
    source_shape = read_image(hanks_png, max_pixels=10**8).shape[:2]
    assert calls.count(source_shape) == 1, calls  # the source once, the target every job
    assert calls.count((886, 1280)) == 2
    changed = tmp_path / "other.png"
    changed.write_bytes(hanks_png.read_bytes() + b"\0")  # another file (digest), same pixels
    engine.swap_file(changed, t1_jpg, tmp_path / "c.png")
    assert calls.count(source_shape) == 2
