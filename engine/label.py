"""The visible disclosure label (EU AI Act Article 50(4)): white text on a dark box in a corner.

The patch is rendered once per output size and blended into each image or video frame; video
frames kept as YUV 4:2:0 get it in YUV directly (the label is grey, so the blend is exact there).
"""

from __future__ import annotations

import cv2
import numpy as np

from sealfuse.engine.errors import ConfigError
from sealfuse.engine.options import LABEL_CORNERS as CORNERS
from sealfuse.engine.yuv import YuvMatrix, planes

MAX_LABEL_CHARS = 100
BOX_OPACITY = 0.65
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def check_label(text: str | None, corner: str = "bottom-right") -> str | None:
    """The label text, or a ConfigError naming what is wrong (printable ASCII, 1-100 characters)."""
    if corner not in CORNERS:
        raise ConfigError(f"label corner {corner!r}: choose one of {', '.join(CORNERS)}", corner=corner)
    if text is None:
        return None
    if not 1 <= len(text.strip()) <= MAX_LABEL_CHARS or not all(32 <= ord(c) < 127 for c in text):
        raise ConfigError(f"--label must be 1-{MAX_LABEL_CHARS} printable ASCII characters "
                          "(the label font has no other glyphs)", length=len(text))
    return text.strip()


class Label:
    """A rendered label for frames of one size: alpha and premultiplied grey value per pixel."""

    def __init__(self, text: str, width: int, height: int, corner: str = "bottom-right") -> None:
        text = check_label(text, corner) or ""
        self.text, self.corner = text, corner
        short = min(width, height)
        scale = max(0.35, short / 720 * 0.75)
        thickness = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
        pad = max(4, round(th * 0.45))
        bw, bh = min(tw + 2 * pad, width), min(th + base + 2 * pad, height)
        bw, bh = bw - (bw & 1), bh - (bh & 1)  # even, so chroma blocks line up
        mask = np.zeros((bh, bw), np.uint8)
        cv2.putText(mask, text, (pad, pad + th), _FONT, scale, 255, thickness, cv2.LINE_AA)
        t = mask.astype(np.float32) / 255.0
        self.alpha = 1.0 - (1.0 - BOX_OPACITY) * (1.0 - t)  # a dark box, then white text over it
        self.grey = 255.0 * t  # premultiplied grey value
        margin = max(2, round(short * 0.02))
        margin += margin & 1
        x = width - bw - margin if corner.endswith("right") else margin
        y = height - bh - margin if corner.startswith("bottom") else margin
        self.x, self.y = max(0, x - (x & 1)), max(0, y - (y & 1))
        self.w, self.h = bw, bh
        self.width, self.height = width, height
        a = self.alpha
        self.alpha_c = a.reshape(bh // 2, 2, bw // 2, 2).mean(axis=(1, 3))

    def apply_bgr(self, img: np.ndarray) -> np.ndarray:
        """A copy of `img` with the label drawn."""
        out = img.copy()
        roi = out[self.y:self.y + self.h, self.x:self.x + self.w].astype(np.float32)
        roi = roi * (1.0 - self.alpha[..., None]) + self.grey[..., None]
        out[self.y:self.y + self.h, self.x:self.x + self.w] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
        return out

    def apply_yuv(self, arr: np.ndarray, matrix: YuvMatrix) -> np.ndarray:
        """A copy of a yuv420p frame (PyAV layout) with the label drawn, blended in Y'CbCr."""
        out = arr.copy()
        y, u, v = planes(out, self.height, self.width)
        black = float(matrix.to_yuv[0, 3])  # Y' of BGR (0, 0, 0)
        per_level = float(matrix.to_yuv[0, :3].sum())  # Y' per grey level
        ys = slice(self.y, self.y + self.h)
        xs = slice(self.x, self.x + self.w)
        roi = y[ys, xs].astype(np.float32)
        roi = roi * (1.0 - self.alpha) + black * self.alpha + self.grey * per_level
        y[ys, xs] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
        cys, cxs = slice(self.y // 2, (self.y + self.h) // 2), slice(self.x // 2, (self.x + self.w) // 2)
        for plane in (u, v):
            c = plane[cys, cxs].astype(np.float32)
            plane[cys, cxs] = np.clip(c * (1.0 - self.alpha_c) + 128.0 * self.alpha_c + 0.5, 0, 255).astype(np.uint8)
        return out
