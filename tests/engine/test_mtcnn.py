"""The MTCNN starter detector on real ONNX Runtime sessions and real photos from insightface's wheel."""

from __future__ import annotations

import importlib.resources

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from sealfuse.engine.detect_mtcnn import (
    BadImageArrayError,
    Detection,
    MTCNNDetector,
    packaged_model_paths,
)
from sealfuse.engine.errors import ConfigError, InputError, ModelSignatureError

IMAGES = importlib.resources.files("insightface") / "data" / "images"


@pytest.fixture(scope="module")
def sessions() -> dict[str, ort.InferenceSession]:
    return {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for name, path in packaged_model_paths().items()}


@pytest.fixture(scope="module")
def detector(sessions: dict[str, ort.InferenceSession]) -> MTCNNDetector:
    return MTCNNDetector(sessions["pnet"], sessions["rnet"], sessions["onet"])


def _read(name: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


@pytest.fixture(scope="module")
def group() -> np.ndarray:
    return _read("t1.jpg")


@pytest.fixture(scope="module")
def group_faces(detector: MTCNNDetector, group: np.ndarray) -> list[Detection]:
    return detector.detect(group)


def _assert_same(a: list[Detection], b: list[Detection], tol: float) -> None:
    """Same faces in the same order, boxes and landmarks within tol pixels."""
    assert len(a) == len(b)
    for fa, fb in zip(a, b, strict=True):
        assert np.abs(fa.bbox - fb.bbox).max() <= tol, (fa.bbox, fb.bbox)
        assert np.abs(fa.kps - fb.kps).max() <= tol, (fa.kps, fb.kps)


def _assert_moved(moved: Detection, face: Detection, scale: float, shift: tuple[int, int]) -> None:
    """moved is face seen in a scaled, shifted image. MTCNN's boxes jitter by up to about 10 % of
    the face's width when the pixel grid moves; its landmarks by about 5 %."""
    width = scale * float(face.bbox[2] - face.bbox[0])
    expected_box = scale * face.bbox + np.tile(shift, 2)
    assert np.abs(moved.bbox - expected_box).max() < 0.15 * width, (moved.bbox, expected_box)
    expected_kps = scale * face.kps + np.asarray(shift)
    assert np.abs(moved.kps - expected_kps).max() < 0.08 * width, (moved.kps, expected_kps)


def _by_x(faces: list[Detection]) -> list[Detection]:
    return sorted(faces, key=lambda f: float(f.bbox[0]))


def test_finds_all_six_faces_in_group_photo_sorted_by_score(group_faces: list[Detection]) -> None:
    assert len(group_faces) == 6
    scores = [f.score for f in group_faces]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) > 0.9
    for face in group_faces:
        assert face.bbox.dtype == np.float32 and face.bbox.shape == (4,)
        assert face.kps.dtype == np.float32 and face.kps.shape == (5, 2)
        width, height = face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1]
        assert 60 < width < 160 and 60 < height < 200  # the six faces are about 100 px


def test_group_photo_faces_do_not_overlap(group_faces: list[Detection]) -> None:
    boxes = _by_x(group_faces)
    for a, b in zip(boxes, boxes[1:], strict=False):
        overlap_x = min(a.bbox[2], b.bbox[2]) - max(a.bbox[0], b.bbox[0])
        overlap_y = min(a.bbox[3], b.bbox[3]) - max(a.bbox[1], b.bbox[1])
        assert overlap_x <= 0 or overlap_y <= 0


def _assert_sane_landmarks(face: Detection) -> None:
    x1, y1, x2, y2 = face.bbox
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.kps
    assert np.all((face.kps[:, 0] >= x1) & (face.kps[:, 0] <= x2)), (face.bbox, face.kps)
    assert np.all((face.kps[:, 1] >= y1) & (face.kps[:, 1] <= y2)), (face.bbox, face.kps)
    assert lex < rex and lmx < rmx  # insightface order: image-left point first
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above nose above mouth corners
    eye_distance = float(np.hypot(rex - lex, rey - ley))
    assert 0.2 < eye_distance / float(x2 - x1) < 0.7


def test_group_photo_landmarks_are_in_anatomical_order_inside_their_box(
        group_faces: list[Detection]) -> None:
    for face in group_faces:
        _assert_sane_landmarks(face)


def test_finds_the_one_face_in_a_tight_portrait(detector: MTCNNDetector) -> None:
    faces = detector.detect(_read("Tom_Hanks_54745.png"))
    assert len(faces) == 1
    assert faces[0].score > 0.9
    _assert_sane_landmarks(faces[0])
    assert np.all(faces[0].bbox >= 0) and np.all(faces[0].bbox <= 112)  # clipped to the image


@pytest.mark.parametrize("kind", ["uniform_gray", "gradient", "smooth_noise", "tiny"])
def test_finds_no_face_where_there_is_none(detector: MTCNNDetector, kind: str) -> None:
    h, w = 480, 640
    if kind == "uniform_gray":
        image = np.full((h, w, 3), 128, np.uint8)
    elif kind == "gradient":
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :] + np.linspace(0, 60, h)[:, None]
        image = np.repeat(ramp.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    elif kind == "smooth_noise":
        noise = np.random.default_rng(7).integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        image = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        image = np.full((8, 8, 3), 200, np.uint8)  # smaller than any pyramid level
    assert detector.detect(image) == []


def test_detection_is_deterministic(detector: MTCNNDetector, group: np.ndarray,
                                    group_faces: list[Detection]) -> None:
    again = detector.detect(group.copy())
    assert len(again) == len(group_faces)
    for a, b in zip(again, group_faces, strict=True):
        assert np.array_equal(a.bbox, b.bbox) and np.array_equal(a.kps, b.kps)
        assert a.score == b.score


def test_bgra_input_gives_the_same_faces_as_bgr(detector: MTCNNDetector, group: np.ndarray,
                                                group_faces: list[Detection]) -> None:
    bgra = cv2.cvtColor(group, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 17  # alpha is ignored
    _assert_same(detector.detect(bgra), group_faces, tol=0.0)


def test_grayscale_input_finds_the_faces_in_any_channel_layout(detector: MTCNNDetector,
                                                               group: np.ndarray) -> None:
    gray = cv2.cvtColor(group, cv2.COLOR_BGR2GRAY)
    as_2d = detector.detect(gray)
    as_3ch = detector.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert len(as_2d) == 6
    for face in as_2d:
        _assert_sane_landmarks(face)
    _assert_same(detector.detect(gray[..., None]), as_2d, tol=0.0)
    _assert_same(as_3ch, as_2d, tol=0.0)


def test_results_follow_the_faces_when_the_image_is_padded(detector: MTCNNDetector,
                                                           group: np.ndarray,
                                                           group_faces: list[Detection]) -> None:
    dx, dy = 50, 30
    padded = cv2.copyMakeBorder(group, dy, 0, dx, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    moved = _by_x(detector.detect(padded))
    assert len(moved) == 6
    for m, f in zip(moved, _by_x(group_faces), strict=True):
        _assert_moved(m, f, 1.0, (dx, dy))


def test_max_side_maps_faces_of_a_huge_image_back_to_its_pixels(
        sessions: dict[str, ort.InferenceSession], group: np.ndarray,
        group_faces: list[Detection]) -> None:
    big = cv2.resize(group, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # 3840 x 2658
    capped = MTCNNDetector(sessions["pnet"], sessions["rnet"], sessions["onet"], max_side=1280)
    faces = _by_x(capped.detect(big))
    assert len(faces) == 6
    for f, ref in zip(faces, _by_x(group_faces), strict=True):
        _assert_moved(f, ref, 3.0, (0, 0))
        _assert_sane_landmarks(f)


def test_min_face_above_every_face_finds_none(sessions: dict[str, ort.InferenceSession],
                                              group: np.ndarray) -> None:
    picky = MTCNNDetector(sessions["pnet"], sessions["rnet"], sessions["onet"], min_face=300)
    assert picky.detect(group) == []


@pytest.mark.parametrize(("image", "evidence"), [
    (np.zeros((64, 64, 3), np.float32), "float32"),
    (np.zeros((64, 64, 3), np.uint16), "uint16"),
    (np.zeros((64, 64, 2), np.uint8), "[64, 64, 2]"),
    (np.zeros((0, 64, 3), np.uint8), "[0, 64, 3]"),
    (np.zeros((2, 64, 64, 3), np.uint8), "[2, 64, 64, 3]"),
    ([[0, 0], [0, 0]], "list"),
])
def test_rejects_arrays_that_are_not_8bit_images(detector: MTCNNDetector, image: object,
                                                 evidence: str) -> None:
    with pytest.raises(BadImageArrayError) as err:
        detector.detect(image)  # type: ignore[arg-type]
    assert isinstance(err.value, InputError) and err.value.code == 3
    assert evidence in str(err.value.evidence)


def test_refuses_sessions_that_are_not_the_matching_mtcnn_stage(
        sessions: dict[str, ort.InferenceSession]) -> None:
    with pytest.raises(ModelSignatureError) as err:
        MTCNNDetector(sessions["onet"], sessions["rnet"], sessions["pnet"])
    assert err.value.evidence["stage"] == "pnet"
    with pytest.raises(ModelSignatureError) as err:
        MTCNNDetector(sessions["pnet"], sessions["onet"], sessions["onet"])
    assert err.value.evidence["stage"] == "rnet"


@pytest.mark.parametrize("options", [
    {"min_face": 8},
    {"min_face": 20.5},
    {"thresholds": (0.6, 0.7)},
    {"thresholds": (0.6, 0.7, 1.5)},
    {"max_side": 10},
])
def test_rejects_options_that_cannot_work(sessions: dict[str, ort.InferenceSession],
                                          options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MTCNNDetector(sessions["pnet"], sessions["rnet"], sessions["onet"], **options)  # type: ignore[arg-type]
