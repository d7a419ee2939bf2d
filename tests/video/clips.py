"""Tiny generated video clips for tests and benchmarks: real face photos moving over a background.

Everything is made with PyAV in memory and muxed to the path given; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np


def sample_images() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def hanks_face() -> np.ndarray:
    """The real portrait Tom_Hanks_54745.png (BGR), a 112x112 aligned face."""
    img = cv2.imread(str(sample_images() / "Tom_Hanks_54745.png"), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def t1_faces(boxes: Sequence[Sequence[float]], margin: float = 0.35) -> list[np.ndarray]:
    """Crops (BGR) around the given face boxes of insightface's t1.jpg, with a margin."""
    img = cv2.imread(str(sample_images() / "t1.jpg"), cv2.IMREAD_COLOR)
    crops = []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        xa, ya = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
        xb, yb = int(min(img.shape[1], x2 + margin * w)), int(min(img.shape[0], y2 + margin * h))
        crops.append(img[ya:yb, xa:xb].copy())
    return crops


def background(w: int, h: int, seed: int = 7) -> np.ndarray:
    """A smooth, textured background (gradients and soft blobs; no faces)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack([60 + 80 * xx / w, 90 + 60 * yy / h, 120 + 40 * np.sin(xx / 37.0) * np.cos(yy / 29.0)], axis=2)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.2) * min(w, h)
        col = rng.uniform(40, 220, 3)
        d = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        bg = bg * (1 - 0.6 * d) + col * 0.6 * d
    return np.clip(bg, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Sprite:
    """A face image moving linearly from `start` to `end` (top-left corners, pixels) with size `size`."""

    image: np.ndarray
    start: tuple[float, float]
    end: tuple[float, float]
    size: int

    def at(self, k: float) -> tuple[int, int]:
        return (round(self.start[0] + (self.end[0] - self.start[0]) * k),
                round(self.start[1] + (self.end[1] - self.start[1]) * k))


def compose(bg: np.ndarray, sprites: Sequence[Sprite], k: float) -> np.ndarray:
    """One frame: sprites pasted in order (later ones in front) at progress k in 0..1."""
    frame = bg.copy()
    h, w = frame.shape[:2]
    for s in sprites:
        img = cv2.resize(s.image, (s.size, round(s.size * s.image.shape[0] / s.image.shape[1])),
                         interpolation=cv2.INTER_AREA)
        x, y = s.at(k)
        xa, ya, xb, yb = max(0, x), max(0, y), min(w, x + img.shape[1]), min(h, y + img.shape[0])
        if xb > xa and yb > ya:
            frame[ya:yb, xa:xb] = img[ya - y:yb - y, xa - x:xb - x]
    return frame


def make_clip(path: Path, *, width: int = 320, height: int = 240, frames: int = 20, fps: int = 15,
              sprites: Sequence[Sprite] | None = None, audio: str | None = "aac", codec: str = "libx264",
              pix_fmt: str = "yuv420p", rotation: int | None = None, color_range: int | None = None,
              colorspace: int | None = None, render: Callable[[int], np.ndarray] | None = None,
              options: dict[str, str] | None = None) -> Path:
    """Write a clip: a face (by default the real Hanks portrait) moving over a background, plus a tone."""
    bg = background(width, height)
    if sprites is None:
        size = min(width, height) // 2
        sprites = [Sprite(hanks_face(), (width * 0.1, height * 0.2), (width * 0.5, height * 0.3), size)]
    fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}[path.suffix]
    with av.open(str(path), "w", format=fmt) as c:
        vs = c.add_stream(codec, rate=fps, options=options or ({"preset": "ultrafast", "crf": "18"}
                                                               if codec.startswith("libx26") else {}))
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        cc = vs.codec_context
        if color_range is not None:
            cc.color_range = color_range
        if colorspace is not None:
            cc.colorspace = cc.color_primaries = cc.color_trc = colorspace
        if rotation is not None:
            vs.set_display_rotation(rotation)
        a = None
        if audio is not None:
            a = c.add_stream(audio, rate=48000)
            a.layout = "stereo"
        for i in range(frames):
            img = render(i) if render is not None else compose(bg, sprites, i / max(1, frames - 1))
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf = vf.reformat(format=pix_fmt, dst_colorspace=1 if colorspace == 1 else None,
                             dst_color_range=color_range)
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        if a is not None:
            n = int(48000 * frames / fps)
            t = np.arange(n) / 48000.0
            tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
            step = 960
            for s in range(0, n, step):
                chunk = np.ascontiguousarray(tone[:, s:s + step])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate = 48000
                af.pts = s
                af.time_base = Fraction(1, 48000)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


def audio_digests(path: Path) -> list[str]:
    """sha256 of each audio packet payload of the first audio stream, in order."""
    import hashlib

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [hashlib.sha256(bytes(p)).hexdigest() for p in c.demux(c.streams.audio[0]) if p.size]


def decode_frames(path: Path) -> list[np.ndarray]:
    """Every video frame as BGR."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def engine_standins() -> Any:
    """tests/engine/standins.py (the ONNX stand-ins with production signatures)."""
    from tests.engine import standins

    return standins
