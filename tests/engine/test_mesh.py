"""The starter mesh swap and the mesh's region mask on real photos; the default demo; mesh smoothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.engine import mesh_topology as topo
from sealfuse.engine.face import Face
from sealfuse.engine.masks import mesh_region_mask
from sealfuse.engine.pipeline import Pipeline
from sealfuse.engine.track import MeshSmoother


@pytest.fixture(scope="module")
def demo(cpu_options, t1_jpg):
    """The default demo's pipeline: t1.jpg's right-most face as the source."""
    return Pipeline(cpu_options.with_(source_face_position=5), t1_jpg)


def _hull(face: Face, shape: tuple[int, ...], grow: int = 2) -> np.ndarray:
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(face.mesh[:, :2]).astype(np.int32)), 1)
    return cv2.dilate(m, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0


def test_mesh_swap_changes_pixels_only_inside_the_target_faces_hulls(demo, t1_frame):
    faces = demo.detect(t1_frame)
    others = [f for f in faces if f is not max(faces, key=lambda g: float(g.bbox[0]))]
    out = demo.render(t1_frame, others)
    changed = np.any(out != t1_frame, axis=2)
    hulls = np.zeros(changed.shape, bool)
    for f in others:
        inside = _hull(f, t1_frame.shape)
        assert changed[inside].mean() > 0.4, "most of each face changes"
        hulls |= inside
    assert not np.any(changed & ~hulls), "a pixel outside every target face's hull changed"


def test_the_source_face_is_never_swapped_onto_itself_in_its_own_image(demo, t1_jpg, tmp_path):
    from sealfuse.engine.api import swap_image

    report = swap_image(demo, t1_jpg, tmp_path / "o.png")
    selected = [f for f in report["faces"] if f["selected"]]
    assert len(report["faces"]) == 6 and len(selected) == 5
    source_box = np.array(demo.source_face.bbox)
    assert not any(np.allclose(f["box"], source_box, atol=2) for f in selected)


def test_the_default_demo_swaps_t1s_right_most_face_into_the_other_five(t1_frame, tmp_path, empty_models):
    out = tmp_path / "demo.png"
    res = CliRunner().invoke(main, ["swap", "-o", str(out), "--models-dir", str(empty_models),
                                    "--execution-providers", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["swapper"] == "mesh" and report["detector"] == "blazeface"
    faces = sorted(report["faces"], key=lambda f: f["box"][0])
    assert [f["selected"] for f in faces] == [True] * 5 + [False]
    result = cv2.imread(str(out))
    x1, y1, x2, y2 = np.round(faces[-1]["box"]).astype(int)
    assert np.array_equal(result[y1:y2, x1:x2], t1_frame[y1:y2, x1:x2]), "the source face stays as it is"
    for f in faces[:-1]:
        x1, y1, x2, y2 = np.round(f["box"]).astype(int)
        diff = np.abs(result[y1:y2, x1:x2].astype(int) - t1_frame[y1:y2, x1:x2].astype(int)).mean()
        assert diff > 4, f"face at {f['box']} changed visibly"


def _points(face: Face, idx: tuple[int, ...]) -> np.ndarray:
    return face.mesh[list(idx), :2].mean(0)


def test_the_mesh_region_mask_leaves_out_the_eyes_and_mouth_when_asked(demo, t1_frame):
    face = max(demo.detect(t1_frame), key=lambda f: f.size)
    x0, y0 = np.floor(face.mesh[:, :2].min(0)).astype(int) - 20
    size = int(np.ceil(np.ptp(face.mesh[:, :2], axis=0).max())) + 40
    xy = face.mesh[:, :2] - (x0, y0)
    everything = mesh_region_mask(xy, size, 0.0)
    no_eyes_mouth = mesh_region_mask(xy, size, 0.0, ("skin", "nose", "left-eyebrow", "right-eyebrow"))
    eyes = [xy[list(topo.LEFT_EYE)].mean(0), xy[list(topo.RIGHT_EYE)].mean(0)]
    lips = xy[[13, 14]].mean(0)  # between the inner upper and lower lip
    cheek = (xy[topo.NOSE_TIP] + xy[234]) / 2  # half way from the nose tip to the face's edge
    at = lambda m, p: float(m[int(round(p[1])), int(round(p[0]))])  # noqa: E731
    for p in (*eyes, lips):
        assert at(everything, p) > 0.9 and at(no_eyes_mouth, p) < 0.1
    assert at(everything, cheek) > 0.9 and at(no_eyes_mouth, cheek) > 0.9


def test_a_region_mask_without_eyes_and_mouth_keeps_the_targets_own(demo, t1_frame):
    opts = demo.options.with_(face_mask_types=("box", "region"), face_mask_blur=0.0,
                              face_mask_regions=("skin", "nose", "left-eyebrow", "right-eyebrow"))
    pipe = Pipeline(opts, t1_frame, models=None)
    assert pipe.models.parser_name is None, "no BiSeNet here: the regions come from the mesh"
    faces = [f for f in pipe.detect(t1_frame) if f.size < max(g.size for g in pipe.detect(t1_frame))]
    out = pipe.render(t1_frame, faces)
    kept = changed = 0
    for f in faces:
        for p in (_points(f, topo.LEFT_EYE), _points(f, topo.RIGHT_EYE), f.mesh[[13, 14], :2].mean(0)):
            x, y = np.round(p).astype(int)
            kept += int(np.array_equal(out[y, x], t1_frame[y, x]))
        x, y = np.round((f.mesh[topo.NOSE_TIP, :2] + f.mesh[234, :2]) / 2).astype(int)
        changed += int(not np.array_equal(out[y, x], t1_frame[y, x]))
    assert kept == 3 * len(faces) and changed >= len(faces) - 1


def test_unknown_mask_region_is_an_option_error(tmp_path, empty_models):
    res = CliRunner().invoke(main, ["swap", "--face-mask-regions", "skin,ears", "-o", str(tmp_path / "o.png"),
                                    "--models-dir", str(empty_models)])
    assert res.exit_code == 2 and "ears" in res.output


def test_mesh_smoothing_takes_the_shimmer_out_of_a_still_face(demo, t1_frame):
    face = max(demo.detect(t1_frame), key=lambda f: f.size).with_(track_id=7)
    rng = np.random.default_rng(3)
    smoother = MeshSmoother()
    raw, smooth = [], []
    for i in range(60):
        noisy = face.mesh + rng.normal(0, 1.5, face.mesh.shape).astype(np.float32)
        raw.append(noisy)
        smooth.append(smoother([face.with_(mesh=noisy)], i / 30.0, alive={7})[0].mesh)
    jitter = lambda seq: float(np.abs(np.diff(np.stack(seq[10:]), axis=0)).mean())  # noqa: E731
    assert jitter(smooth) < 0.5 * jitter(raw)
    assert np.abs(smooth[-1] - face.mesh).mean() < 1.0, "no drift away from the face"
    assert smoother([], 3.0, alive=set()) == [] and smoother._filters == {}


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --net")
def test_the_default_demo_runs_inside_unshare_net(tmp_path, empty_models):
    out = tmp_path / "demo.jpg"
    res = subprocess.run(["unshare", "--net", sys.executable, "-c", "from sealfuse.cli import main; main()",
                          "swap", "-o", str(out), "--models-dir", str(empty_models), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["swapper"] == "mesh" and sum(f["selected"] for f in report["faces"]) == 5
    assert {m["name"] for m in report["models"]} >= {"blazeface_full_range", "blazeface_short_range",
                                                      "facemesh_468"}
    assert out.stat().st_size > 10_000


def test_mesh_priors_follow_the_tracked_box_so_one_pass_finds_the_next_mesh(demo, t1_frame):
    face = max(demo.detect(t1_frame), key=lambda f: f.size).with_(track_id=3)
    smoother = MeshSmoother()
    assert smoother.priors([face]) == {}, "a new track has no prior: two passes from its box"
    smoother([face], 0.0, alive={3})
    shift = np.array([12.0, -7.0], np.float32)
    moved_frame = np.roll(t1_frame, (-7, 12), axis=(0, 1))
    moved = face.with_(bbox=face.bbox + np.tile(shift, 2), mesh=None)
    (centre, _size, _angle), = smoother.priors([moved]).values()
    (was, _, _), _ = smoother._regions[3]
    assert np.allclose(centre - was, shift, atol=1e-3)
    (found,) = demo.refine(moved_frame, [moved], smoother.priors([moved]))
    assert found.mesh is not None
    # the one-pass mesh lands where the face moved to (eye distance units)
    iod = float(np.linalg.norm(face.kps[1] - face.kps[0]))
    assert np.abs(found.kps - (face.kps + shift)).max() / iod < 0.1
