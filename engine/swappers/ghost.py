"""GHOST 1/2/3 (ai-forever, Apache-2.0): arcface_112_v1 crops of 256 px, mean/std 0.5 in and out.

The source is the recognizer's raw embedding passed through the `crossface_ghost` embedding
converter (its own ONNX model), not normalised afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sealfuse.engine.catalog import ModelSpec
from sealfuse.engine.swappers.base import (
    CropFormat,
    EmbeddingConverter,
    LearnedSwapper,
    converter_spec,
)

if TYPE_CHECKING:
    from sealfuse.engine.registry import ModelRegistry

LICENCE = "Apache-2.0"
CONVERTER = "crossface_ghost"
CONVERTER_LICENCE = "unknown (published by FaceFusion without a stated licence)"
FORMAT = CropFormat("arcface_112_v1", 256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), denormalise_output=True)
NAMES = ("ghost_1_256", "ghost_2_256", "ghost_3_256")


class GhostSwapper(LearnedSwapper):
    family = "ghost"
    formats: ClassVar[dict[str, CropFormat]] = dict.fromkeys(NAMES, FORMAT)

    def __init__(self, name: str, session: Any, converter: EmbeddingConverter) -> None:
        super().__init__(name, session, self.formats[name])
        self.converter = converter

    @classmethod
    def specs(cls) -> tuple[ModelSpec, ...]:
        return (*(ModelSpec(n, "ghost", f"{n}.onnx", LICENCE, ((1, 3, 256, 256), (1, 512)), 1,
                            input_names=("target", "source"), output_shape=(1, 3, 256, 256))
                  for n in NAMES),
                converter_spec(CONVERTER, CONVERTER_LICENCE, note="ArcFace embedding -> GHOST identity"))

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> GhostSwapper:
        return cls(name, registry.session(name), EmbeddingConverter(CONVERTER, registry.session(CONVERTER)))

    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        return self.converter(embedding)
