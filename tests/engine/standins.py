"""Stand-in ONNX models with the exact I/O signatures of the production models.

They are STAND-INS, not face models: each computes something simple that a test can check.
- inswapper_128 stand-in: output = 1 - target (colour inversion of the aligned crop); the
  `source` latent is consumed (times zero) and `emap` is the graph's last initializer (identity).
- ArcFace w600k_r50 stand-in: embedding = fixed projection of the crop's 4x4 mean-colour grid,
  so the same face gives the same embedding and different faces differ.
- GFPGAN 1.4 stand-in: output = -input (inversion in -1..1).
- BiSeNet stand-in: class 1 (skin) in the central square of the crop, class 0 elsewhere.
- Learned swapper stand-ins (ghost, simswap, hyperswap, inswapper_128_fp16), each with its family's
  normalisation built in: output = inversion of the target crop in pixel space + SOURCE_GAIN *
  source[0:3] per RGB channel (in the model's output space). The engine gets the inverted crop only
  if its template, size and mean/std match the family, and the colour offset shows which source
  vector it fed.
- Embedding converter stand-ins: crossface_ghost = GHOST_CONVERTER @ x (scaled reversal),
  crossface_simswap = SIMSWAP_CONVERTER @ x (scaled negation).
- RestoreFormer++ stand-in: output = 0.5 * input (halves contrast around mid-grey); CodeFormer
  stand-in: output = weight * input (weight 0 gives flat mid-grey, 1 the input).
- SCRFD det_10g stand-in: SCRFD's 9 outputs (scores, box and landmark distances for strides
  8/16/32, two anchors per cell) describing exactly one face, SCRFD_FACE, in its 640x640 input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="sealfuse-test-standin")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def inswapper(path: Path) -> Path:
    target = helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128])
    source = helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    emap = numpy_helper.from_array(np.eye(512, dtype=np.float32), "emap")  # last initializer
    nodes = [
        helper.make_node("Sub", ["one", "target"], ["inv"]),
        helper.make_node("ReduceSum", ["source"], ["ssum"], keepdims=0),
        helper.make_node("Mul", ["ssum", "zero"], ["szero"]),
        helper.make_node("Add", ["inv", "szero"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "inswapper_128_standin", [target, source], [out],
                              initializer=[one, zero, emap])
    return _save(graph, path)


def arcface(path: Path) -> Path:
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])
    rng = np.random.default_rng(20261124)
    proj = numpy_helper.from_array(rng.standard_normal((48, 512)).astype(np.float32), "proj")
    shape = numpy_helper.from_array(np.array([-1, 48], np.int64), "shape")
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "proj"], ["683"]),
    ]
    graph = helper.make_graph(nodes, "arcface_standin", [inp], [out], initializer=[proj, shape])
    return _save(graph, path)


def gfpgan(path: Path) -> Path:
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])
    graph = helper.make_graph([helper.make_node("Neg", ["input"], ["output"])], "gfpgan_standin", [inp], [out])
    return _save(graph, path)


def bisenet(path: Path) -> Path:
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 19, 512, 512])
    logits = np.zeros((1, 19, 8, 8), np.float32)
    logits[0, 0] = 1.0
    logits[0, 1, 2:6, 2:6] = 2.0  # skin in the central square
    init = [numpy_helper.from_array(logits, "logits"),
            numpy_helper.from_array(np.array([1, 1, 64, 64], np.float32), "scales"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("Resize", ["logits", "", "scales"], ["big"], mode="nearest"),
        helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["mz"]),
        helper.make_node("Add", ["big", "mz"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "bisenet_standin", [inp], [out], initializer=init)
    return _save(graph, path)


# The one face the SCRFD stand-in reports, in its 640x640 input: stride 32, cell (x=10, y=8).
SCRFD_CELL, SCRFD_STRIDE = (10, 8), 32
SCRFD_BOX_DIST = (2.0, 2.5, 2.0, 2.5)  # left, top, right, bottom, in strides
SCRFD_KPS_DIST = ((-0.7, -0.8), (0.7, -0.8), (0.0, 0.0), (-0.6, 0.9), (0.6, 0.9))
SCRFD_SCORE = 0.9


def scrfd_expected() -> tuple[np.ndarray, np.ndarray]:
    """(box, landmarks) of the stand-in's face in its 640x640 input."""
    cx, cy = SCRFD_CELL[0] * SCRFD_STRIDE, SCRFD_CELL[1] * SCRFD_STRIDE
    d = np.array(SCRFD_BOX_DIST) * SCRFD_STRIDE
    box = np.array([cx - d[0], cy - d[1], cx + d[2], cy + d[3]], np.float32)
    kps = np.array([[cx + dx * SCRFD_STRIDE, cy + dy * SCRFD_STRIDE] for dx, dy in SCRFD_KPS_DIST], np.float32)
    return box, kps


def scrfd(path: Path) -> Path:
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])
    outs, init, nodes = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero")], []
    nodes += [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0),
              helper.make_node("Mul", ["m", "zero"], ["mz"])]
    names = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            n = (640 // stride) ** 2 * 2
            value = np.zeros((n, width), np.float32)
            if stride == SCRFD_STRIDE:
                idx = (SCRFD_CELL[1] * (640 // stride) + SCRFD_CELL[0]) * 2
                value[idx] = {"score": [SCRFD_SCORE], "bbox": list(SCRFD_BOX_DIST),
                              "kps": [c for p in SCRFD_KPS_DIST for c in p]}[kind]
            name = f"{kind}_{stride}"
            init.append(numpy_helper.from_array(value, f"{name}_c"))
            nodes.append(helper.make_node("Add", [f"{name}_c", "mz"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
            names.append(name)
    graph = helper.make_graph(nodes, "scrfd_standin", [inp], outs, initializer=init)
    return _save(graph, path)


SOURCE_GAIN = 2.0
INSWAPPER_EMAP = (2.0 * np.roll(np.eye(512, dtype=np.float32), 1, axis=1)).copy()  # the fp16 stand-in's emap
GHOST_CONVERTER = (0.02 * np.eye(512, dtype=np.float32)[::-1]).copy()  # reverse the vector, scale 0.02
SIMSWAP_CONVERTER = (-3.0 * np.eye(512, dtype=np.float32)).copy()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How each family's stand-in inverts its normalised input: "half" (mean/std 0.5 in and out),
# "imagenet" (ImageNet mean/std in, 0..1 out), "unit" (mean 0 std 1 in, 0..1 out).
SWAPPER_STANDINS = {
    "ghost_1_256": (256, "half"), "ghost_2_256": (256, "half"), "ghost_3_256": (256, "half"),
    "hyperswap_1a_256": (256, "half"), "hyperswap_1b_256": (256, "half"), "hyperswap_1c_256": (256, "half"),
    "simswap_256": (256, "imagenet"), "simswap_unofficial_512": (512, "unit"),
    "inswapper_128_fp16": (128, "unit"),
}


def learned_swapper(path: Path, name: str) -> Path:
    """A swapper stand-in with the family's exact I/O: inputs `target` [1,3,S,S] and `source` [1,512]."""
    size, mode = SWAPPER_STANDINS[name]
    elem = TensorProto.FLOAT16 if name.endswith("_fp16") else TensorProto.FLOAT
    target = helper.make_tensor_value_info("target", elem, [1, 3, size, size])
    source = helper.make_tensor_value_info("source", elem, [1, 512])
    out = helper.make_tensor_value_info("output", elem, [1, 3, size, size])
    init = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(SOURCE_GAIN, np.float32), "gain"),
            numpy_helper.from_array(np.array([0], np.int64), "s0"),
            numpy_helper.from_array(np.array([3], np.int64), "s3"),
            numpy_helper.from_array(np.array([1], np.int64), "ax1"),
            numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "c4"),
            numpy_helper.from_array(np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1), "mean"),
            numpy_helper.from_array(np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1), "std")]
    nodes = [helper.make_node("Cast", ["target"], ["t"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["source"], ["s"], to=TensorProto.FLOAT),
             helper.make_node("Slice", ["s", "s0", "s3", "ax1"], ["s_rgb"]),
             helper.make_node("Reshape", ["s_rgb", "c4"], ["s_4d"]),
             helper.make_node("Mul", ["s_4d", "gain"], ["offset"])]
    if mode == "half":
        nodes.append(helper.make_node("Neg", ["t"], ["img"]))
    elif mode == "imagenet":
        nodes += [helper.make_node("Mul", ["t", "std"], ["ts"]), helper.make_node("Add", ["ts", "mean"], ["tu"]),
                  helper.make_node("Sub", ["one", "tu"], ["img"])]
    else:
        nodes.append(helper.make_node("Sub", ["one", "t"], ["img"]))
    nodes += [helper.make_node("Add", ["img", "offset"], ["y"]),
              helper.make_node("Cast", ["y"], ["output"], to=elem)]
    if name.startswith("inswapper"):
        init.append(numpy_helper.from_array(INSWAPPER_EMAP, "emap"))  # the graph's last initializer
    graph = helper.make_graph(nodes, f"{name}_standin", [target, source], [out], initializer=init)
    return _save(graph, path)


def converter(path: Path, matrix: np.ndarray) -> Path:
    """An embedding-converter stand-in: `input` [1,512] -> `output` [1,512] = input @ matrix.T."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 512])
    init = [numpy_helper.from_array(np.ascontiguousarray(matrix.T, np.float32), "m")]
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "m"], ["output"])], "converter_standin",
                              [inp], [out], initializer=init)
    return _save(graph, path)


def restoreformer(path: Path) -> Path:
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])
    init = [numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    graph = helper.make_graph([helper.make_node("Mul", ["input", "half"], ["output"])], "restoreformer_standin",
                              [inp], [out], initializer=init)
    return _save(graph, path)


def codeformer(path: Path) -> Path:
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])
    weight = helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])
    nodes = [helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["input", "w"], ["output"])]
    graph = helper.make_graph(nodes, "codeformer_standin", [inp, weight], [out])
    return _save(graph, path)


def standin_for(name: str) -> Any:
    """The function that writes `name`'s stand-in to a path."""
    if name in SWAPPER_STANDINS:
        return lambda path: learned_swapper(path, name)
    return {"inswapper_128": inswapper, "arcface_w600k_r50": arcface, "gfpgan_1.4": gfpgan,
            "bisenet_resnet_34": bisenet, "scrfd_10g": scrfd, "restoreformer_plus_plus": restoreformer,
            "codeformer": codeformer,
            "crossface_ghost": lambda path: converter(path, GHOST_CONVERTER),
            "crossface_simswap": lambda path: converter(path, SIMSWAP_CONVERTER)}[name]


def wrong_signature(path: Path) -> Path:
    """A model with one 64x64 input: not any family's signature."""
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "wrong", [inp], [out])
    return _save(graph, path)


def models_dir(root: Path, *, swapper: bool = True, recognizer: bool = True, enhancer: bool = False,
               parser: bool = False, detector: bool = False, extra: tuple[str, ...] = ()) -> Path:
    """A models directory with the starter models, the requested stand-ins and a models.lock.json pinning them.

    `extra` names further catalog entries to add as stand-ins (e.g. "ghost_1_256", "crossface_ghost").
    """
    from sealfuse.engine.registry import CATALOG, sha256_file, write_lock
    from tests.starter_models import add_starter

    add_starter(root)
    wanted = {"inswapper_128": swapper, "arcface_w600k_r50": recognizer, "gfpgan_1.4": enhancer,
              "bisenet_resnet_34": parser, "scrfd_10g": detector, **dict.fromkeys(extra, True)}
    entries = []
    for name, on in wanted.items():
        if not on:
            continue
        spec = CATALOG[name]
        path = standin_for(name)(root / spec.file)
        entries.append({"name": name, "file": spec.file, "sha256": sha256_file(path),
                        "size": path.stat().st_size, "licence": "stand-in (test only)"})
    write_lock(root, entries)
    return root
