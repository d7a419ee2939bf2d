"""Planar YUV 4:2:0 <-> BGR for video frames, with the stream's own matrix and range.

The streaming swap keeps each decoded frame's YUV planes and converts back only the pixels a face
blend touched, so everything else passes through bit-exact and no full frame is converted on the
way out. Conversions run in OpenCV (which releases the GIL), so they overlap across threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# (Kr, Kb) per AVColorSpace: 1 BT.709, 5/6 BT.601 (BT.470BG / SMPTE 170M), 9/10 BT.2020.
# Unspecified (2) is decoded as BT.601, as FFmpeg's swscale does.
_KRKB = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)
FAST_PIX_FMTS = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class YuvMatrix:
    """Affine maps between 8-bit Y'CbCr and BGR for one colour space and range."""

    to_bgr: np.ndarray  # 3x4
    to_yuv: np.ndarray  # 3x4

    @classmethod
    def for_stream(cls, colorspace: int | None, full_range: bool) -> YuvMatrix:
        kr, kb = _KRKB.get(colorspace or 2, _BT601)
        kg = 1.0 - kr - kb
        if full_range:
            ys, yo, cs = 255.0 / 255.0, 0.0, 255.0 / 255.0
        else:
            ys, yo, cs = 255.0 / 219.0, 16.0, 255.0 / 224.0
        # rows: B, G, R; columns: Y, Cb, Cr (Cb/Cr centred on 128)
        a = np.array([
            [ys, cs * 2 * (1 - kb), 0.0],
            [ys, -cs * 2 * kb * (1 - kb) / kg, -cs * 2 * kr * (1 - kr) / kg],
            [ys, 0.0, cs * 2 * (1 - kr)],
        ])
        offset = -a @ np.array([yo, 128.0, 128.0])
        inv = np.linalg.inv(a)
        to_bgr = np.hstack([a, offset[:, None]]).astype(np.float32)
        to_yuv = np.hstack([inv, (-inv @ offset)[:, None]]).astype(np.float32)
        return cls(to_bgr, to_yuv)


def planes(arr: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of Y, U, V in PyAV's yuv420p ndarray layout (planes concatenated, shape (H*3/2, W))."""
    flat = arr.reshape(-1)
    n_y, n_c = height * width, (height // 2) * (width // 2)
    y = flat[:n_y].reshape(height, width)
    u = flat[n_y:n_y + n_c].reshape(height // 2, width // 2)
    v = flat[n_y + n_c:n_y + 2 * n_c].reshape(height // 2, width // 2)
    return y, u, v


def to_bgr(arr: np.ndarray, height: int, width: int, m: YuvMatrix) -> np.ndarray:
    """A whole yuv420p frame to BGR (chroma upsampled bilinearly)."""
    y, u, v = planes(arr, height, width)
    up = (width, height)
    yuv = cv2.merge([y, cv2.resize(u, up, interpolation=cv2.INTER_LINEAR),
                     cv2.resize(v, up, interpolation=cv2.INTER_LINEAR)])
    return cv2.transform(yuv, m.to_bgr)


def write_back(arr: np.ndarray, height: int, width: int, bgr: np.ndarray,
               box: tuple[int, int, int, int], alpha: np.ndarray, m: YuvMatrix) -> None:
    """Write the BGR pixels of `box` back into the planes, only where `alpha` > 0.

    Luma changes per pixel; chroma per 2x2 block that any touched pixel falls into. Pixels the
    blend did not touch keep their decoded values exactly.
    """
    x0, y0, x1, y1 = box
    ex0, ey0 = x0 - (x0 & 1), y0 - (y0 & 1)
    ex1, ey1 = min(x1 + (x1 & 1), width), min(y1 + (y1 & 1), height)
    if ex1 - ex0 < 2 or ey1 - ey0 < 2:
        return
    touched = np.zeros((ey1 - ey0, ex1 - ex0), bool)
    touched[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0] = alpha > 0
    yuv = cv2.transform(bgr[ey0:ey1, ex0:ex1], m.to_yuv)
    y, u, v = planes(arr, height, width)
    y_roi = y[ey0:ey1, ex0:ex1]
    np.copyto(y_roi, yuv[..., 0], where=touched)
    half = (touched.shape[1] // 2, touched.shape[0] // 2)
    block = touched.reshape(half[1], 2, half[0], 2).any(axis=(1, 3))
    cy0, cy1, cx0, cx1 = ey0 // 2, ey0 // 2 + half[1], ex0 // 2, ex0 // 2 + half[0]
    for plane, ch in ((u, 1), (v, 2)):
        small = cv2.resize(np.ascontiguousarray(yuv[..., ch]), half, interpolation=cv2.INTER_AREA)
        np.copyto(plane[cy0:cy1, cx0:cx1], small, where=block)
