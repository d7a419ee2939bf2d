"""inswapper_128 (insightface): arcface_128 crops of 128 px in 0..1 RGB; source = normalise(normed embedding @ emap).

`emap` is the graph's last initializer; the output is 0..1 RGB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from sealfuse.engine.catalog import NONCOMMERCIAL, ModelSpec
from sealfuse.engine.errors import ModelSignatureError
from sealfuse.engine.onnxinfo import OnnxFormatError, last_initializer
from sealfuse.engine.swappers.base import CropFormat, LearnedSwapper, normalise

if TYPE_CHECKING:
    from sealfuse.engine.registry import ModelRegistry

SIGNATURE = ((1, 3, 128, 128), (1, 512))
# insightface pads the crop with black where it leaves the frame; kept for identical output.
FORMAT = CropFormat("arcface_128", 128, border=cv2.BORDER_CONSTANT)


class InswapperSwapper(LearnedSwapper):
    family = "inswapper"
    formats: ClassVar[dict[str, CropFormat]] = {"inswapper_128": FORMAT, "inswapper_128_fp16": FORMAT}

    def __init__(self, name: str, session: Any, emap: np.ndarray) -> None:
        super().__init__(name, session, self.formats[name])
        if emap.shape != (512, 512):
            raise ModelSignatureError(f"model {name}: its last initializer (emap) has shape {list(emap.shape)}, "
                                      f"expected [512, 512]", model=name)
        self.emap = emap.astype(np.float32)

    @classmethod
    def specs(cls) -> tuple[ModelSpec, ...]:
        return tuple(
            ModelSpec(name, "inswapper", f"{name}.onnx", NONCOMMERCIAL, SIGNATURE, 1,
                      input_names=("target", "source"), output_shape=(1, 3, 128, 128))
            for name in ("inswapper_128", "inswapper_128_fp16"))

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> InswapperSwapper:
        session = registry.session(name)
        path = registry.resolve(name).path
        try:
            emap = last_initializer(path)
        except OnnxFormatError as exc:
            raise ModelSignatureError(f"model {name}: no usable emap (last initializer) in {path}: {exc}",
                                      model=name, file=path) from exc
        return cls(name, session, emap)

    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        return normalise(normalise(embedding) @ self.emap)
