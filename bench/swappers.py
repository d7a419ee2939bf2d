"""Model loading and per-face swap cost of the learned families, on stand-ins with their exact I/O.

1. Signature check and emap read on an inswapper-sized file (~550 MB of weights): sealfuse reads the
   graph's inputs, outputs and last initializer from a memory map; the baseline is `onnx.load`
   (what insightface's INSwapper does to get its emap).
2. Per-face swap milliseconds per family at its crop size (stand-in graphs cost almost nothing, so
   this is the crop, normalisation, un-normalisation and copy work of each family), against
   inswapper_128 in the same run.

    .venv/bin/python bench/swappers.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sealfuse.engine.onnxinfo import last_initializer, read_io  # noqa: E402
from sealfuse.engine.options import SwapOptions  # noqa: E402
from sealfuse.engine.pipeline import Pipeline  # noqa: E402
from tests.engine import standins  # noqa: E402


def timeit(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def big_inswapper(path: Path) -> Path:
    """An inswapper-signature stand-in carrying ~550 MB of unused weights before its emap."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    target = helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128])
    source = helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])
    ballast = [numpy_helper.from_array(np.full((1024, 1024, 34), i, np.float32), f"w{i}") for i in range(4)]
    emap = numpy_helper.from_array(np.eye(512, dtype=np.float32), "emap")
    graph = helper.make_graph([helper.make_node("Identity", ["target"], ["output"])], "big", [target, source],
                              [out], initializer=[*ballast, emap])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = big_inswapper(Path(tmp) / "big.onnx")
        size_mb = path.stat().st_size / 1e6

        def ours() -> None:
            read_io(path)
            last_initializer(path)

        def onnx_load() -> None:
            import onnx
            from onnx import numpy_helper

            numpy_helper.to_array(onnx.load(str(path)).graph.initializer[-1])

        t_ours, t_onnx = timeit(ours, 5), timeit(onnx_load, 3)
        print(f"signature + emap of a {size_mb:.0f} MB model (median):")
        print(f"  onnx.load + initializer (insightface's way): {t_onnx:9.1f} ms")
        print(f"  sealfuse memory-mapped graph read:            {t_ours:9.1f} ms")
        print(f"  ratio sealfuse / onnx.load:                   {t_ours / t_onnx:9.4f}x")
        path.unlink()

        from sealfuse.engine.imageio import read_image

        names = ["inswapper_128", "inswapper_128_fp16", "ghost_1_256", "simswap_256", "simswap_unofficial_512",
                 "hyperswap_1a_256"]
        models = standins.models_dir(Path(tmp) / "models", extra=(*names[1:], "crossface_ghost", "crossface_simswap"))
        import importlib.util

        spec = importlib.util.find_spec("insightface")
        assert spec is not None and spec.submodule_search_locations
        samples = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
        frame = read_image(samples / "t1.jpg", max_pixels=10**8)
        base = None
        print(f"\nper-face swap (crop, normalise, run the stand-in, un-normalise), median of {args.repeat}:")
        for name in names:
            opts = SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                               face_swapper_model=name)
            pipe = Pipeline(opts, samples / "Tom_Hanks_54745.png")
            face = max(pipe.detect(frame), key=lambda f: f.size)
            swapper = pipe.models.swapper()
            identity = pipe.models.identity(pipe.source)
            ms = timeit(lambda s=swapper, f=face, i=identity: s.swap(frame, f, i), args.repeat)
            base = base or ms
            print(f"  {name:<24} {ms:8.2f} ms   {ms / base:6.2f}x inswapper_128")


if __name__ == "__main__":
    main()
