"""Benchmark: the cost of C2PA signing inside the atomic write, per image and per minute of video.

Image: a 1280x720 JPEG written by `write_image` unsigned vs signed (median of --repeat runs each).
Video: one minute (--seconds) of 720p with AAC audio, re-encoded by `transcode_video` with the
engine's default settings unsigned vs signed; the signing step alone is timed too. Prints
milliseconds and the signed/unsigned ratios measured in this run.
Usage: .venv/bin/python bench/provenance.py [--repeat 30] [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from sealfuse.bundle.provenance import init
from sealfuse.engine.imageio import write_image
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.provenance import Claim, Provenance, ProvenanceConfig
from sealfuse.engine.video import transcode_video

CLAIM = Claim("bench", ({"name": "inswapper_128", "file": "inswapper_128.onnx", "sha256": "0" * 64},),
              {"blend_ratio": 1.0}, "image")


def frame(i: int, w: int = 1280, h: int = 720) -> np.ndarray:
    """A moving gradient with texture (compresses like a real frame, not like a flat colour)."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rng = np.random.default_rng(i % 7)
    noise = rng.normal(0, 12, (h, w)).astype(np.float32)
    b = (x + 3 * i) % 256 + noise
    g = (y + 2 * i) % 256 + noise
    r = ((x + y) / 2 + i) % 256
    return np.clip(np.stack([b, g, r], axis=-1), 0, 255).astype(np.uint8)


def make_clip(path: Path, seconds: float, fps: int = 25) -> Path:
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        v.width, v.height, v.pix_fmt = 1280, 720, "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        base = [frame(i) for i in range(8)]
        for i in range(int(seconds * fps)):
            img = np.roll(base[i % 8], i * 4, axis=1)
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            c.mux(v.encode(vf))
        c.mux(v.encode(None))
        n = int(48000 * seconds)
        for s in range(0, n, 1024):
            t = (np.arange(s, min(n, s + 1024)) / 48000.0).astype(np.float32)
            tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)])
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, s, Fraction(1, 48000)
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    return path


def bench_image(tmp: Path, prov: Provenance, repeat: int) -> None:
    img = frame(3)
    out = tmp / "out.jpg"
    unsigned, signed, sign_only = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        write_image(out, img)
        unsigned.append(time.perf_counter() - t0)
        report: dict = {}
        t0 = time.perf_counter()
        write_image(out, img, before_commit=prov.sealing(out, CLAIM, report))
        signed.append(time.perf_counter() - t0)
        sign_only.append(report["sign_ms"] / 1000)
    u, s, o = (statistics.median(x) * 1000 for x in (unsigned, signed, sign_only))
    print(f"image 1280x720 JPEG ({out.stat().st_size // 1024} KiB): unsigned write {u:.1f} ms, signed {s:.1f} ms "
          f"(signing itself {o:.1f} ms, plus sha256 of the result): ratio {s / u:.2f}x, +{s - u:.1f} ms per image")


def bench_video(tmp: Path, prov: Provenance, seconds: float) -> None:
    clip = make_clip(tmp / "clip.mp4", seconds)
    opts = SwapOptions(execution_providers=("cpu",), models_dir=tmp)
    out = tmp / "out.mp4"
    t0 = time.perf_counter()
    transcode_video(opts, clip, out)
    unsigned = time.perf_counter() - t0
    report: dict = {}
    t0 = time.perf_counter()
    transcode_video(opts, clip, out, before_commit=prov.sealing(out, Claim("bench", (), {}, "video"), report))
    signed = time.perf_counter() - t0
    size = out.stat().st_size / 1e6
    per_min = 60 / seconds
    print(f"video 720p25 + AAC, {seconds:.0f} s, output {size:.1f} MB: unsigned write {unsigned:.2f} s, "
          f"signed {signed:.2f} s: ratio {signed / unsigned:.3f}x; signing itself {report['sign_ms']:.0f} ms "
          f"= {report['sign_ms'] * per_min:.0f} ms per minute of video "
          f"({report['sign_ms'] / 1000 / unsigned * 100:.2f}% of the unsigned write)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="10 s of video, 10 image runs")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.seconds = 10, 10.0
    with tempfile.TemporaryDirectory(prefix="sealfuse-bench-") as name:
        tmp = Path(name)
        pki = init(tmp / "pki", organization="Bench Studio", appliance="bench")
        prov = Provenance(ProvenanceConfig(pki.key, pki.chain, require=True))
        cv2.setNumThreads(1)
        bench_image(tmp, prov, args.repeat)
        bench_video(tmp, prov, args.seconds)


if __name__ == "__main__":
    main()
