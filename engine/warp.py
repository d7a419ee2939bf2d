"""Alignment to face templates and paste-back that touches only the face's bounding box.

Paste-back warps the swapped crop and its mask into the small region of the frame that the crop
covers, not into a full-frame canvas: at 720p that is about twenty times less work per face.
"""

from __future__ import annotations

import cv2
import numpy as np

# ArcFace 112x112 template (insightface), in pixels.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
# FFHQ template for 512x512 restorers (GFPGAN), normalised to 0..1.
FFHQ_UNIT = np.array(
    [[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
     [0.39308822, 0.72541100], [0.61150205, 0.72490465]], dtype=np.float32)


def arcface_template(size: int) -> np.ndarray:
    """The ArcFace template scaled to a crop of `size` (insightface's convention for 128-multiples)."""
    if size % 112 == 0:
        return ARCFACE_112 * (size / 112.0)
    ratio = size / 128.0
    tpl = ARCFACE_112 * ratio
    tpl[:, 0] += 8.0 * ratio
    return tpl


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst, 2x3."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    # Umeyama's closed form, no reflection.
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m.astype(np.float32)


def align(image: np.ndarray, kps: np.ndarray, template: np.ndarray, size: int,
          border: int = cv2.BORDER_CONSTANT) -> tuple[np.ndarray, np.ndarray]:
    """Warp the face to `template` in a size x size crop. Returns (crop, M frame->crop)."""
    m = similarity(kps, template)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    return crop, m


def crop_box_in_frame(m: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The frame rectangle (x0, y0, x1, y1) that a size x size crop maps back onto."""
    im = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float32)
    pts = corners @ im.T
    h, w = shape[:2]
    x0 = max(int(np.floor(pts[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray,
               m: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Blend `crop` (size x size) into `frame` in place through `mask` (0..1), bbox-local.

    Returns the touched box (x0, y0, x1, y1) and the blend weights inside it (float32), or None
    when the crop lies outside the frame. Nothing frame-sized is allocated.
    """
    size = crop.shape[0]
    box = crop_box_in_frame(m, size, frame.shape)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    im = cv2.invertAffineTransform(m)
    im[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop, im, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32, copy=False), im, dsize, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    roi = frame[y0:y1, x0:x1]
    roi[:] = cv2.blendLinear(warped, roi, alpha, 1.0 - alpha)
    return box, alpha


def paste_back_full_frame(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The common full-frame paste-back (warp crop and mask to the whole frame). Baseline for bench."""
    h, w = frame.shape[:2]
    im = cv2.invertAffineTransform(m)
    warped = cv2.warpAffine(crop, im, (w, h), borderValue=0.0)
    white = cv2.warpAffine(np.full(crop.shape[:2], 255, np.float32), im, (w, h), borderValue=0.0)
    alpha = cv2.warpAffine(mask.astype(np.float32), im, (w, h), borderValue=0.0)[..., None]
    del white
    out = alpha * warped + (1 - alpha) * frame.astype(np.float32)
    return out.astype(np.uint8)
