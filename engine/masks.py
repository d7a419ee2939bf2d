"""Face masks in crop space: box (padded, feathered), ellipse, and region (face parser).

Masks are float32 in 0..1 at the crop's size; several types combine by their minimum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

# BiSeNet face-parser classes kept by the region mask: skin, brows, eyes, nose, mouth, lips.
REGION_CLASSES = (1, 2, 3, 4, 5, 10, 11, 12, 13)


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


def region_mask(parser: Any, crop_bgr: np.ndarray, blur: float) -> np.ndarray:
    """Skin, brows, eyes, nose and mouth from a BiSeNet face parser ([1,3,512,512] -> [1,19,512,512])."""
    size = crop_bgr.shape[0]
    inp = parser.get_inputs()[0]
    rgb = cv2.resize(crop_bgr, (512, 512))[:, :, ::-1].astype(np.float32) / 255.0
    rgb = (rgb - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    blob = rgb.transpose(2, 0, 1)[None].astype(np.float32)
    labels = parser.run(None, {inp.name: blob})[0][0].argmax(0)
    mask = np.isin(labels, REGION_CLASSES).astype(np.float32)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    blur_px = max(int(size * 0.5 * blur * 0.5), 1)
    return cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25).clip(0, 1)


def combine(masks: Sequence[np.ndarray]) -> np.ndarray:
    out = np.asarray(masks[0])
    for m in masks[1:]:
        out = np.minimum(out, m)
    return np.clip(out, 0.0, 1.0)
