"""BlazeFace face detector (Google, Apache-2.0) on LiteRT: the starter detector.

Both models run and their detections merge: full range (192x192 input, one 48x48 anchor grid) on
the whole image plus overlapping 640-px tiles finds the small faces of a group photo; short range
(128x128) on the whole image finds the large, close-up faces that full range scores low. Boxes come
from the models; the six keypoints are coarse, so the pipeline replaces the five alignment points
with FaceMesh's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sealfuse.engine.face import Face
from sealfuse.engine.tflite import TFLiteModel

__all__ = ["BlazeFaceDetector", "BlazeFaceVariant", "FULL_RANGE", "SHORT_RANGE", "weighted_nms"]


@dataclass(frozen=True)
class BlazeFaceVariant:
    """Input size and SSD anchor layout of one BlazeFace model."""

    size: int
    # (stride, anchors per grid cell) for each anchor layer, in output order
    layers: tuple[tuple[int, int], ...]

    def anchors(self) -> np.ndarray:
        """Anchor centres (N, 2) in 0..1 of the input, in the model's output order."""
        out = []
        for stride, per_cell in self.layers:
            n = int(np.ceil(self.size / stride))
            ys, xs = np.mgrid[0:n, 0:n]
            centres = np.stack([(xs.ravel() + 0.5) / n, (ys.ravel() + 0.5) / n], axis=1)
            out.append(np.repeat(centres, per_cell, axis=0))
        return np.concatenate(out).astype(np.float32)


# MediaPipe's SSD anchor options: short range, strides 8/16/16/16 (the three 16s merged, two
# anchors each); full range, one stride-4 layer with one anchor per cell.
SHORT_RANGE = BlazeFaceVariant(128, ((8, 2), (16, 6)))
FULL_RANGE = BlazeFaceVariant(192, ((4, 1),))
NMS_IOU = 0.3
TILE = 640


def _iou_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray,
                 iou: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: each cluster averages its boxes by score."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = _iou_many(boxes[i], boxes) > iou
        cluster = np.flatnonzero(alive & overlap)
        cluster = np.union1d(cluster, [i])
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kp = (kps[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box.astype(np.float32), kp.astype(np.float32), float(scores[i])))
        alive[cluster] = False
    return out


def five_points(kp6: np.ndarray) -> np.ndarray:
    """BlazeFace's eyes, nose tip and mouth centre -> the pipeline's five points (mouth corners estimated)."""
    r_eye, l_eye, nose, mouth = kp6[0], kp6[1], kp6[2], kp6[3]
    half = (l_eye - r_eye) * 0.4
    return np.stack([r_eye, l_eye, nose, mouth - half, mouth + half]).astype(np.float32)


class _Pass:
    """One BlazeFace model and its anchors."""

    def __init__(self, model: TFLiteModel, variant: BlazeFaceVariant) -> None:
        self.model, self.variant = model, variant
        self.anchors = variant.anchors()


class BlazeFaceDetector:
    """Faces (box, five coarse points, score) from BlazeFace full range (tiled) and short range."""

    def __init__(self, full: TFLiteModel | None, short: TFLiteModel | None, score: float = 0.6,
                 tile: bool = True) -> None:
        self.full = _Pass(full, FULL_RANGE) if full is not None else None
        self.short = _Pass(short, SHORT_RANGE) if short is not None else None
        self.score = float(score)
        self.tile = tile

    def _run(self, p: _Pass, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over `image_rgb` letterboxed into the model input: boxes, 6 keypoints, scores in its pixels."""
        h, w = image_rgb.shape[:2]
        size = p.variant.size
        scale = size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image_rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        px, py = (size - nw) // 2, (size - nh) // 2
        canvas = np.zeros((size, size, 3), np.float32)
        canvas[py:py + nh, px:px + nw] = resized.astype(np.float32) * (2.0 / 255.0) - 1.0
        raw = p.model.run(canvas[None])
        reg = next(r for r in raw if r.shape[-1] == 16)[0]
        logits = next(r for r in raw if r.shape[-1] == 1)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = np.flatnonzero(scores >= self.score)
        if keep.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
        reg, scores, anchors = reg[keep], scores[keep], p.anchors[keep]
        cx = reg[:, 0] / size + anchors[:, 0]
        cy = reg[:, 1] / size + anchors[:, 1]
        bw, bh = reg[:, 2] / size, reg[:, 3] / size
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) * size
        kps = (reg[:, 4:16].reshape(-1, 6, 2) / size + anchors[:, None, :]) * size
        # letterbox pixels -> image pixels
        off = np.array([px, py], np.float32)
        boxes = (boxes.reshape(-1, 2, 2) - off).reshape(-1, 4) / scale
        kps = (kps - off) / scale
        return boxes.astype(np.float32), kps.astype(np.float32), scores.astype(np.float32)

    def _windows(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """The whole image, plus overlapping TILE-px tiles (half a tile apart) when it is larger."""
        wins = [(0, 0, w, h)]
        if not self.tile or max(h, w) <= TILE * 1.25:
            return wins
        tw, th = min(TILE, w), min(TILE, h)

        def starts(n: int, t: int) -> list[int]:
            if n <= t:
                return [0]
            k = int(np.ceil((n - t) / (t / 2))) + 1
            return sorted({round(i * (n - t) / (k - 1)) for i in range(k)})

        wins += [(x, y, x + tw, y + th) for y in starts(h, th) for x in starts(w, tw)]
        return wins

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        h, w = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        all_boxes, all_kps, all_scores = [], [], []
        runs = [(self.full, win) for win in self._windows(h, w)] if self.full is not None else []
        if self.short is not None:
            runs.append((self.short, (0, 0, w, h)))
        for p, (x0, y0, x1, y1) in runs:
            boxes, kps, scores = self._run(p, rgb[y0:y1, x0:x1])
            if not len(scores):
                continue
            boxes = boxes + np.array([x0, y0, x0, y0], np.float32)
            kps = kps + np.array([x0, y0], np.float32)
            if (x1 - x0, y1 - y0) != (w, h):
                # a face cut by a tile's inner edge is found whole by a neighbouring tile
                margin = 2.0
                inner = ((boxes[:, 0] > x0 + margin) | (x0 == 0)) & ((boxes[:, 2] < x1 - margin) | (x1 == w)) \
                    & ((boxes[:, 1] > y0 + margin) | (y0 == 0)) & ((boxes[:, 3] < y1 - margin) | (y1 == h))
                boxes, kps, scores = boxes[inner], kps[inner], scores[inner]
            all_boxes.append(boxes)
            all_kps.append(kps)
            all_scores.append(scores)
        if not all_boxes:
            return []
        merged = weighted_nms(np.concatenate(all_boxes), np.concatenate(all_kps), np.concatenate(all_scores))
        faces = []
        for box, kp6, score in merged:
            box = np.array([max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])],
                           np.float32)
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                continue
            faces.append(Face(bbox=box, kps=five_points(kp6), score=score))
        return sorted(faces, key=lambda f: -f.score)
