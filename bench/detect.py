"""Face detection cost: the starter BlazeFace (+ FaceMesh) against MTCNN, on t1.jpg and at 720p.

Prints the median milliseconds of each detector (after a warm-up run) and the ratio to MTCNN,
measured in this one run:
  - t1.jpg (1280x886, six faces): BlazeFace full range whole image + 640-px tiles + short range
  - a 1280x720 frame (t1.jpg cut to 16:9) at full size, and scaled to 640 px as video detects it
  - FaceMesh per face (two passes) and the faces each detector finds

    .venv/bin/python bench/detect.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.starter_models import add_starter  # noqa: E402


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()

    from sealfuse.engine.cli import sample_images
    from sealfuse.engine.families import MTCNNFamily
    from sealfuse.engine.options import SwapOptions
    from sealfuse.engine.pipeline import Models, make_registry

    t1 = cv2.imread(str(sample_images() / "t1.jpg"))
    frame720 = cv2.resize(t1[83:803], (1280, 720))  # 1280x720 cut of t1 (all six faces)
    small720 = cv2.resize(frame720, (640, 360), interpolation=cv2.INTER_AREA)
    with tempfile.TemporaryDirectory() as tmp:
        opts = SwapOptions(models_dir=add_starter(Path(tmp)), execution_providers=("cpu",), execution_threads=1)
        reg = make_registry(opts)
        models = Models(opts, reg)
        blaze, mesher = models.detector(), models.mesher()
        assert mesher is not None
        mtcnn = MTCNNFamily(reg.session("mtcnn_pnet"), reg.session("mtcnn_rnet"), reg.session("mtcnn_onet"),
                            opts.face_detector_score)
        print(f"detection, median of {args.repeat} runs, one thread each (LiteRT; ONNX Runtime intra-op 1):")
        rows = []
        for label, img in (("t1.jpg 1280x886", t1), ("720p frame, full size", frame720),
                           ("720p frame scaled to 640 (video)", small720)):
            b = median_ms(lambda img=img: blaze.detect(img), args.repeat)
            m = median_ms(lambda img=img: mtcnn.detect(img), args.repeat)
            nb, nm = len(blaze.detect(img)), len(mtcnn.detect(img))
            rows.append((label, b, m))
            print(f"  {label:<34} blazeface {b:7.1f} ms ({nb} faces)   mtcnn {m:7.1f} ms ({nm} faces)   "
                  f"ratio {b / m:.2f}")
        faces = blaze.detect(t1)
        per_face = median_ms(lambda: [mesher.refine_one(t1, f) for f in faces], args.repeat) / len(faces)
        full = rows[0][1] + per_face * len(faces)
        print(f"  FaceMesh 468 (two passes) per face: {per_face:.1f} ms; t1.jpg detect + 6 meshes "
              f"{full:.1f} ms vs mtcnn {rows[0][2]:.1f} ms: ratio {full / rows[0][2]:.2f}")
        print(f"  (goal: starter detection well under MTCNN's cost; "
              f"t1 faces found: {len(faces)} of 6, MTCNN {len(mtcnn.detect(t1))})")


if __name__ == "__main__":
    main()
