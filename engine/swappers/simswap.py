"""SimSwap (neuralchen, non-commercial): arcface_112_v1 crops; 256 px with ImageNet mean/std, or the
unofficial 512 px model with mean 0 / std 1. The output is 0..1 RGB for both.

The source is the raw embedding through the `crossface_simswap` converter, then normalised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sealfuse.engine.catalog import ModelSpec
from sealfuse.engine.swappers.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropFormat,
    EmbeddingConverter,
    LearnedSwapper,
    converter_spec,
    normalise,
)

if TYPE_CHECKING:
    from sealfuse.engine.registry import ModelRegistry

LICENCE = "non-commercial (SimSwap model licence)"
CONVERTER = "crossface_simswap"
CONVERTER_LICENCE = "unknown (published by FaceFusion without a stated licence)"
FORMATS = {
    "simswap_256": CropFormat("arcface_112_v1", 256, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "simswap_unofficial_512": CropFormat("arcface_112_v1", 512),
}


class SimSwapSwapper(LearnedSwapper):
    family = "simswap"
    formats: ClassVar[dict[str, CropFormat]] = FORMATS

    def __init__(self, name: str, session: Any, converter: EmbeddingConverter) -> None:
        super().__init__(name, session, self.formats[name])
        self.converter = converter

    @classmethod
    def specs(cls) -> tuple[ModelSpec, ...]:
        return (*(ModelSpec(n, "simswap", f"{n}.onnx", LICENCE, ((1, 3, f.size, f.size), (1, 512)), 1,
                            input_names=("target", "source"), output_shape=(1, 3, f.size, f.size))
                  for n, f in FORMATS.items()),
                converter_spec(CONVERTER, CONVERTER_LICENCE, note="ArcFace embedding -> SimSwap identity"))

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> SimSwapSwapper:
        return cls(name, registry.session(name), EmbeddingConverter(CONVERTER, registry.session(CONVERTER)))

    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        return normalise(self.converter(embedding))
