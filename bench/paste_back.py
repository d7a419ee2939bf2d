"""Paste-back cost at 1280x720: sealfuse's bbox-local paste-back vs insightface's full-frame one.

Both run in the same process on the same frame, face and swapped crop (from a stand-in model with
inswapper_128's signature, so the swap itself costs nearly nothing and the difference is the
paste-back). Also prints per-stage milliseconds for a swap on t1.jpg.

    .venv/bin/python bench/paste_back.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sealfuse.engine.api import Engine  # noqa: E402
from sealfuse.engine.masks import box_mask  # noqa: E402
from sealfuse.engine.options import SwapOptions  # noqa: E402
from sealfuse.engine.pipeline import Pipeline  # noqa: E402
from sealfuse.engine.warp import paste_back  # noqa: E402
from tests.engine.standins import models_dir  # noqa: E402


def images() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def timeit(fn, repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    img_dir = images()
    with tempfile.TemporaryDirectory() as tmp:
        models = models_dir(Path(tmp) / "models")
        opts = SwapOptions(models_dir=models, execution_providers=("cpu",), face_swapper_model="inswapper_128")
        pipe = Pipeline(opts, img_dir / "Tom_Hanks_54745.png")
        t1 = cv2.imread(str(img_dir / "t1.jpg"))
        frame = cv2.resize(t1, (1280, 720))
        face = max(pipe.detect(frame), key=lambda f: f.size)
        from insightface.model_zoo.inswapper import INSwapper

        registry = pipe.registry  # insightface's INSwapper on the stand-in session, for its paste-back
        inswapper = INSwapper(model_file=str(registry.resolve("inswapper_128").path),
                              session=registry.session("inswapper_128"))
        crop, m = inswapper.get(frame, face, pipe.source_face, paste_back=False)

        def ours() -> None:
            mask = box_mask(crop.shape[0], opts.face_mask_blur, opts.face_mask_padding)
            paste_back(frame.copy(), crop, mask, np.asarray(m, np.float32))

        def copy_only() -> None:
            frame.copy()

        def insightface_full() -> None:
            inswapper.get(frame, face, pipe.source_face, paste_back=True)

        def insightface_nopaste() -> None:
            inswapper.get(frame, face, pipe.source_face, paste_back=False)

        base_copy = timeit(copy_only, args.repeat)
        t_ours = timeit(ours, args.repeat) - base_copy
        t_full = timeit(insightface_full, args.repeat) - timeit(insightface_nopaste, args.repeat)
        print("paste-back at 1280x720, one face (median of", args.repeat, "runs)")
        print(f"  insightface full-frame paste-back: {t_full:8.2f} ms")
        print(f"  sealfuse bbox-local paste-back:    {t_ours:8.2f} ms  (incl. mask build)")
        print(f"  ratio sealfuse / insightface:      {t_ours / t_full:8.3f}x   (goal <= 0.1x)")

        print("\nper-stage ms, swap on t1.jpg (six faces), second run of a warm engine:")
        from tests.starter_models import add_starter

        starter_only = add_starter(Path(tmp) / "none")
        for label, o in (("mesh (starter models)", SwapOptions(models_dir=starter_only, execution_providers=("cpu",))),
                         ("inswapper_128 stand-in + ArcFace stand-in", opts)):
            engine = Engine(o)
            out = Path(tmp) / "out.jpg"
            engine.swap_file(img_dir / "Tom_Hanks_54745.png", img_dir / "t1.jpg", out)
            rep = engine.swap_file(img_dir / "Tom_Hanks_54745.png", img_dir / "t1.jpg", out)
            stages = "  ".join(f"{k}={v:.1f}" for k, v in rep["timings_ms"].items())
            print(f"  {label}: {stages}")


if __name__ == "__main__":
    main()
