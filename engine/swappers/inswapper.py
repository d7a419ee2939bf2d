"""inswapper_128 (insightface): arcface_128 crops of 128 px in 0..1 RGB; source = normalise(normed embedding @ emap).

`emap` is the graph's last initializer; the output is 0..1 RGB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from sealfuse.engine.catalog import NONCOMMERCIAL, ModelSpec
from sealfuse.engine.errors import ModelSignatureError
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
        return (
            ModelSpec("inswapper_128", "inswapper", "inswapper_128.onnx", NONCOMMERCIAL, SIGNATURE, 1),
            ModelSpec("inswapper_128_fp16", "inswapper", "inswapper_128_fp16.onnx", NONCOMMERCIAL, SIGNATURE, 1),
        )

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> InswapperSwapper:
        session = registry.session(name)
        return cls(name, session, last_initializer(str(registry.resolve(name).path)))

    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        return normalise(normalise(embedding) @ self.emap)


def last_initializer(path: str) -> np.ndarray:
    """The graph's last initializer as an array (inswapper's emap)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    return numpy_helper.to_array(model.graph.initializer[-1])
