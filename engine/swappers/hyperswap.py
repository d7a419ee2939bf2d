"""HyperSwap 1a/1b/1c (FaceFusion, ResearchRAIL): arcface_128 crops of 256 px, mean/std 0.5 in and out.

The source is the recognizer's normalised embedding; no converter. The published files may carry
further outputs after the swapped image; only the first is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from sealfuse.engine.catalog import ModelSpec
from sealfuse.engine.swappers.base import CropFormat, LearnedSwapper, normalise

if TYPE_CHECKING:
    from sealfuse.engine.registry import ModelRegistry

LICENCE = "ResearchRAIL"
FORMAT = CropFormat("arcface_128", 256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), denormalise_output=True)
NAMES = ("hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256")


class HyperSwapSwapper(LearnedSwapper):
    family = "hyperswap"
    formats: ClassVar[dict[str, CropFormat]] = dict.fromkeys(NAMES, FORMAT)

    @classmethod
    def specs(cls) -> tuple[ModelSpec, ...]:
        return tuple(ModelSpec(n, "hyperswap", f"{n}.onnx", LICENCE, ((1, 3, 256, 256), (1, 512)), 1,
                               input_names=("target", "source"), output_shape=(1, 3, 256, 256),
                               extra_outputs=True)
                     for n in NAMES)

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> HyperSwapSwapper:
        return cls(name, registry.session(name), cls.formats[name])

    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        return normalise(embedding)
