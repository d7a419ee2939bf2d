"""classic: the demo-grade swap on starter models only (5-point alignment, colour transfer, feathering).

No model and no recognizer: the source crop is recoloured to each target's skin statistics and
blended through a feathered face ellipse that stays inside the source image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from sealfuse.engine.face import Face
from sealfuse.engine.masks import ellipse_mask
from sealfuse.engine.swappers.base import Source, Swapper, SwapResult
from sealfuse.engine.warp import align, arcface_template

if TYPE_CHECKING:
    from sealfuse.engine.registry import ModelRegistry

SIZE = 256


@dataclass(frozen=True)
class ClassicIdentity:
    lab: np.ndarray  # the source crop in Lab, float32
    mean: np.ndarray
    std: np.ndarray
    feather: np.ndarray  # blend weights: face ellipse inside the source image


class ClassicSwapper(Swapper):
    family = "classic"
    needs_embedding = False
    size = SIZE

    def __init__(self, name: str = "classic") -> None:
        super().__init__(name)
        self.template = arcface_template(SIZE)
        self._core = _core_region(SIZE)

    @classmethod
    def model_names(cls) -> tuple[str, ...]:
        return ("classic",)

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> ClassicSwapper:
        return cls(name)

    def prepare(self, source: Source) -> ClassicIdentity:
        image = source.image
        crop, m = align(image, source.face.kps, self.template, SIZE, border=cv2.BORDER_REPLICATE)
        # Where the source crop reaches past the source image, it holds smeared border pixels:
        # keep those out of the blend.
        inside = cv2.warpAffine(np.ones(image.shape[:2], np.float32), m, (SIZE, SIZE),
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        inside = cv2.erode(inside, np.ones((9, 9), np.uint8))
        inside = cv2.GaussianBlur(inside, (0, 0), 4.0)
        lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
        core_px = lab[self._core]
        return ClassicIdentity(lab, core_px.mean(0), core_px.std(0) + 1e-3, ellipse_mask(SIZE, 0.3) * inside)

    def swap(self, frame: np.ndarray, target: Face, identity: Any) -> SwapResult:
        ident: ClassicIdentity = identity
        tgt_crop, m = align(frame, target.kps, self.template, SIZE, border=cv2.BORDER_REPLICATE)
        tgt_lab = cv2.cvtColor(tgt_crop, cv2.COLOR_BGR2LAB).astype(np.float32)
        core_px = tgt_lab[self._core]
        t_mean, t_std = core_px.mean(0), core_px.std(0) + 1e-3
        lab = (ident.lab - ident.mean) * (t_std / ident.std) + t_mean
        out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
        return SwapResult(out, m, ident.feather)


def _core_region(size: int) -> np.ndarray:
    """Cheek-to-chin area of the aligned crop used for colour statistics."""
    yy, xx = np.mgrid[0:size, 0:size]
    return ((xx - size * 0.5) / (size * 0.28)) ** 2 + ((yy - size * 0.56) / (size * 0.32)) ** 2 <= 1.0
