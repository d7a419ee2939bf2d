"""Face masks in crop space: box (padded, feathered), ellipse, and region (face parser, or the face's mesh).

Masks are float32 in 0..1 at the crop's size; several types combine by their minimum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

# BiSeNet face-parser classes of FaceFusion's --face-mask-regions names.
PARSER_CLASSES = {"skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5, "glasses": 6,
                  "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13}
DEFAULT_REGIONS = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "nose", "mouth",
                   "upper-lip", "lower-lip")
# kept for callers of the parser mask: skin, brows, eyes, nose, mouth, lips
REGION_CLASSES = tuple(PARSER_CLASSES[r] for r in DEFAULT_REGIONS)


@functools.lru_cache(maxsize=64)
def box_mask(size: int, blur: float, padding: tuple[int, int, int, int]) -> np.ndarray:
    """A box over the whole crop minus `padding` percent per side, feathered by `blur` (0..1).

    Cached: the same arguments return the same read-only array.
    """
    top, right, bottom, left = padding
    blur_px = int(size * 0.5 * blur)
    edge = max(blur_px // 2, 1)
    mask = np.ones((size, size), np.float32)
    mask[: max(edge, int(size * top / 100)), :] = 0
    mask[size - max(edge, int(size * bottom / 100)):, :] = 0
    mask[:, : max(edge, int(size * left / 100))] = 0
    mask[:, size - max(edge, int(size * right / 100)):] = 0
    if blur_px > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25)
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=64)
def ellipse_mask(size: int, blur: float) -> np.ndarray:
    """An ellipse around the aligned face (forehead to chin), feathered. Cached, read-only."""
    mask = np.zeros((size, size), np.float32)
    center = (int(size * 0.5), int(size * 0.54))
    axes = (int(size * 0.36), int(size * 0.44))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    blur_px = int(size * 0.5 * max(blur, 0.05))
    mask = cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25)
    mask.flags.writeable = False
    return mask


def region_mask(parser: Any, crop_bgr: np.ndarray, blur: float,
                regions: Sequence[str] = DEFAULT_REGIONS) -> np.ndarray:
    """The `regions` (default: skin, brows, eyes, nose, mouth, lips) from a BiSeNet face parser
    ([1,3,512,512] -> [1,19,512,512])."""
    size = crop_bgr.shape[0]
    inp = parser.get_inputs()[0]
    rgb = cv2.resize(crop_bgr, (512, 512))[:, :, ::-1].astype(np.float32) / 255.0
    rgb = (rgb - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    blob = rgb.transpose(2, 0, 1)[None].astype(np.float32)
    labels = parser.run(None, {inp.name: blob})[0][0].argmax(0)
    mask = np.isin(labels, [PARSER_CLASSES[r] for r in regions]).astype(np.float32)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    blur_px = max(int(size * 0.5 * blur * 0.5), 1)
    return cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25).clip(0, 1)


def _mesh_parts(xy: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Each named region of a face as a uint8 0/1 image, from its mesh points in crop pixels."""
    from sealfuse.engine import mesh_topology as topo

    face_w = float(np.ptp(xy[list(topo.FACE_OVAL), 0])) or 1.0

    def poly(idx: Sequence[int], *, hull: bool = False, grow: float = 0.0) -> np.ndarray:
        m = np.zeros((size, size), np.uint8)
        pts = np.round(xy[list(idx)] * 16).astype(np.int32)
        if hull:
            pts = cv2.convexHull(pts)
        cv2.fillPoly(m, [pts], 1, cv2.LINE_8, 4)
        r = int(round(face_w * grow))
        if r > 0:
            m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        return m

    parts = {
        # the subject's left eye and brow are on the image's right in a frontal view
        "left-eye": poly(topo.LEFT_EYE, grow=0.025), "right-eye": poly(topo.RIGHT_EYE, grow=0.025),
        "left-eyebrow": poly(topo.LEFT_BROW, grow=0.01), "right-eyebrow": poly(topo.RIGHT_BROW, grow=0.01),
        "nose": poly(topo.NOSE, hull=True),
        "mouth": poly(topo.LIPS_INNER),
        "upper-lip": poly(topo.UPPER_LIP), "lower-lip": poly(topo.LOWER_LIP),
        "glasses": np.zeros((size, size), np.uint8),  # the mesh does not see glasses
    }
    skin = poly(topo.FACE_OVAL)
    for name, m in parts.items():
        if name != "glasses":
            skin &= 1 - m
    parts["skin"] = skin
    return parts


def mesh_region_mask(xy: np.ndarray, size: int, blur: float, regions: Sequence[str] = DEFAULT_REGIONS) -> np.ndarray:
    """The `regions` of a face from its 468 mesh points (`xy` in crop pixels): no parser model needed."""
    parts = _mesh_parts(np.asarray(xy, np.float64), size)
    mask = np.zeros((size, size), np.uint8)
    for r in regions:
        mask |= parts[r]
    out = mask.astype(np.float32)
    blur_px = max(int(size * 0.5 * blur * 0.5), 1)
    return cv2.GaussianBlur(out, (0, 0), blur_px * 0.25).clip(0, 1)


def combine(masks: Sequence[np.ndarray]) -> np.ndarray:
    out = np.asarray(masks[0])
    for m in masks[1:]:
        out = np.minimum(out, m)
    return np.clip(out, 0.0, 1.0)
