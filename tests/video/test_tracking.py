"""Face tracks across frames: stable ids when two real faces cross, sticky reference selection, smoothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Pipeline
from sealfuse.engine.track import FaceTracker, OneEuro, TrackSelector, _assign
from sealfuse.engine.video import swap_video, transcode_video
from tests.video.clips import (
    Sprite,
    background,
    compose,
    decode_frames,
    engine_standins,
    make_clip,
    t1_faces,
)

W, H, N, FPS = 320, 240, 30, 15
SIZE = 110  # sprite width in pixels


@pytest.fixture(scope="module")
def crossing(pipeline: Pipeline, t1_jpg: Path) -> dict:
    """Two real faces cut from t1.jpg crossing paths (B passes in front of A's lower half)."""
    img = cv2.imread(str(t1_jpg))
    faces = sorted(pipeline.detect(img), key=lambda f: float(f.bbox[0]))
    boxes = [faces[0].bbox, faces[4].bbox]
    crops = t1_faces(boxes)
    sprites = [Sprite(crops[0], (0, 0), (W - SIZE, 50), SIZE), Sprite(crops[1], (W - SIZE, 110), (0, 50), SIZE)]
    # where each real face's centre sits inside its crop, in sprite pixels
    centres = []
    for box, crop in zip(boxes, crops, strict=True):
        x1, y1, x2, y2 = box
        s = SIZE / crop.shape[1]
        margin_x, margin_y = 0.35 * (x2 - x1), 0.35 * (y2 - y1)
        centres.append((s * (margin_x + (x2 - x1) / 2), s * (margin_y + (y2 - y1) / 2), s * (x2 - x1)))
    bg = background(W, H)
    frames = [compose(bg, sprites, i / (N - 1)) for i in range(N)]

    def truth(i: int) -> list[tuple[float, float]]:
        out = []
        for sp, (cx, cy, _) in zip(sprites, centres, strict=True):
            x, y = sp.at(i / (N - 1))
            out.append((x + cx, y + cy))
        return out

    def rect(i: int, which: int) -> tuple[float, float, float, float]:
        sp = sprites[which]
        x, y = sp.at(i / (N - 1))
        return x, y, x + SIZE, y + SIZE * sp.image.shape[0] / sp.image.shape[1]

    return {"frames": frames, "truth": truth, "rect": rect, "crops": crops, "sprites": sprites,
            "face_w": centres[0][2]}


def _who(face, truth: list[tuple[float, float]]) -> int:
    c = ((face.bbox[0] + face.bbox[2]) / 2, (face.bbox[1] + face.bbox[3]) / 2)
    return int(np.argmin([np.hypot(c[0] - x, c[1] - y) for x, y in truth]))


@pytest.mark.parametrize("every", [1, 3])
def test_track_ids_hold_when_two_real_faces_cross(pipeline, crossing, every):
    tracker = FaceTracker()
    owner: dict[int, int] = {}
    first_ids: set[int] = set()
    last_ids: set[int] = set()
    for i, frame in enumerate(crossing["frames"]):
        t = i / FPS
        faces = tracker.detect(frame, pipeline.detect(frame), t) if i % every == 0 else tracker.follow(frame, t)
        truth = crossing["truth"](i)
        for f in faces:
            who = _who(f, truth)
            assert owner.setdefault(f.track_id, who) == who, f"track {f.track_id} jumped to the other face at frame {i}"
            x, y = truth[who]
            err = np.hypot((f.bbox[0] + f.bbox[2]) / 2 - x, (f.bbox[1] + f.bbox[3]) / 2 - y)
            assert err < 0.35 * crossing["face_w"], f"frame {i}: box centre {err:.1f}px off the real face"
        if i == 0:
            first_ids = {f.track_id for f in faces}
        if i == N - 1:
            last_ids = {f.track_id for f in faces}
    assert len(first_ids) == 2
    assert last_ids == first_ids, "both faces keep their ids through the crossing"


def test_reference_face_stays_selected_through_the_crossing(crossing, hanks_png, tmp_path):
    """Stand-in recognizer picks face A; the stand-in swapper inverts colours, so we can see who was swapped."""
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), crossing["crops"][0])
    models = engine_standins().models_dir(tmp_path / "models", swapper=True, recognizer=True)
    frames = crossing["frames"]
    clip = make_clip(tmp_path / "cross.mp4", width=W, height=H, frames=N, fps=FPS, render=lambda i: frames[i],
                     audio=None)
    opts = SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model="inswapper_128", face_selector_mode="reference",
                       reference_face_image=ref, reference_face_distance=0.1)
    pipe = Pipeline(opts, hanks_png)
    # the stand-in recognizer separates the two faces at this size
    dists = pipe.reference_distances(pipe._recognizer.embed(frames[0], pipe.detect(frames[0])))
    assert min(dists) < 0.05 < 0.1 < max(dists), dists
    report = swap_video(pipe, clip, tmp_path / "out.mp4")
    transcode_video(opts, clip, tmp_path / "base.mp4")
    out, base = decode_frames(tmp_path / "out.mp4"), decode_frames(tmp_path / "base.mp4")
    fw = crossing["face_w"]
    r = int(0.25 * fw)
    checked_a: list[int] = []
    checked_b: list[int] = []
    for i in range(N):
        (ax, ay), (bx, by) = (map(int, p) for p in crossing["truth"](i))
        diff = np.abs(out[i].astype(int) - base[i].astype(int)).mean(axis=2)
        x1, y1, x2, y2 = crossing["rect"](i, 1)  # B's sprite is in front of A
        a_hidden = x1 - fw < ax < x2 + fw and y1 - 0.7 * fw < ay < y2 + 0.7 * fw
        if not a_hidden:
            checked_a.append(i)
            assert diff[ay - r:ay + r, ax - r:ax + r].mean() > 40, f"frame {i}: the reference face was not swapped"
        if abs(ax - bx) > 1.6 * fw or abs(ay - by) > 1.6 * fw:  # B clear of A's paste area
            checked_b.append(i)
            assert diff[by - r:by + r, bx - r:bx + r].mean() < 3, f"frame {i}: the non-reference face was swapped"
    # checked on both sides of the crossing: the choice made before it holds after it
    for checked in (checked_a, checked_b):
        assert len(checked) >= 10 and min(checked) < 8 and max(checked) > N - 8, checked
    assert report["tracks"] == 2


def test_selector_one_keeps_its_choice_while_the_track_lives():
    from sealfuse.engine.face import Face

    def face(tid: int, x: float, size: float) -> Face:
        return Face(bbox=np.array([x, 0, x + size, size], np.float32), kps=np.zeros((5, 2), np.float32),
                    score=1.0, track_id=tid)

    sel = TrackSelector("one", lambda faces, _f: [max(faces, key=lambda f: f.size)])
    frame = np.zeros((10, 10, 3), np.uint8)
    assert [f.track_id for f in sel.choose([face(1, 0, 50), face(2, 100, 40)], frame, detect_frame=True,
                                           alive={1, 2})] == [1]
    # face 2 grows larger, but the choice holds while track 1 lives
    assert [f.track_id for f in sel.choose([face(1, 0, 50), face(2, 100, 60)], frame, detect_frame=True,
                                           alive={1, 2})] == [1]
    assert [f.track_id for f in sel.choose([face(2, 100, 60)], frame, detect_frame=True, alive={2})] == [2]


def test_one_euro_removes_jitter_without_lagging_behind_motion():
    rng = np.random.default_rng(3)
    f = OneEuro()
    still = [f(np.array([100.0, 50.0]) + rng.normal(0, 1.5, 2), i / 30, 100.0) for i in range(120)]
    assert np.std(np.array(still[30:]), axis=0).max() < 0.75  # at least halves the raw 1.5 px jitter
    g = OneEuro()
    moving = [g(np.array([10.0 * i, 0.0]), i / 30, 100.0) for i in range(60)]
    assert abs(moving[-1][0] - 590.0) < 10.0  # 10 px per frame; lag well under one frame's motion


def test_assignment_is_the_minimum_cost_one_scipy_finds() -> None:
    """The exhaustive small-problem assignment equals scipy's total cost (gated pairs included), one
    column per row, on every shape up to 7 x 7 and past the exhaustive limit (scipy then does it)."""
    linear_sum_assignment = pytest.importorskip("scipy.optimize").linear_sum_assignment
    rng = np.random.default_rng(7)
    shapes = [(int(n), int(m)) for n, m in rng.integers(1, 8, (400, 2))] + [(9, 9), (3, 12)]
    for n, m in shapes:
        cost = rng.random((n, m))
        cost[rng.random((n, m)) < 0.3] = 10.0
        rows, cols = _assign(cost)
        r2, c2 = linear_sum_assignment(cost)
        assert len(rows) == len(cols) == min(n, m)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert list(rows) == sorted(rows)
        assert cost[rows, cols].sum() == pytest.approx(cost[r2, c2].sum())
