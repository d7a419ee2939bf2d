"""The `Swapper` interface, the `Source` it is given, and the shared base of the learned families.

See the package docstring (`sealfuse.engine.swappers`) for how the pieces fit and how a family
is added.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from sealfuse.engine.errors import ModelSignatureError, NoFaceInSourceError
from sealfuse.engine.face import Face
from sealfuse.engine.warp import ARCFACE_112, align

if TYPE_CHECKING:
    from sealfuse.engine.catalog import ModelSpec
    from sealfuse.engine.registry import ModelRegistry

# Five-point alignment templates in units of the crop size (image-left eye, right eye, nose,
# mouth corners). arcface_128 is insightface's 112 template shifted 8 px right in a 128 crop;
# arcface_112_v1 is the older, slightly wider template that SimSwap and GHOST were trained on.
TEMPLATES: dict[str, np.ndarray] = {
    "arcface_128": ((ARCFACE_112 + (8.0, 0.0)) / 128.0).astype(np.float32),
    "arcface_112_v2": (ARCFACE_112 / 112.0).astype(np.float32),
    "arcface_112_v1": np.array(
        [[0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
         [0.37913393, 0.77687500], [0.62086607, 0.77687500]], np.float32),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Source:
    """One identity to put in: the face(s) found in one or more source images.

    `faces[i]` was found in `images[i]` (landmarks, and an embedding when a recognizer ran).
    `key` identifies the source files (their digests), so per-source work can be cached.
    """

    images: tuple[np.ndarray, ...]
    faces: tuple[Face, ...]
    key: str

    @property
    def image(self) -> np.ndarray:
        """The first (primary) source image, for swappers that work from pixels."""
        return self.images[0]

    @property
    def face(self) -> Face:
        return self.faces[0]

    @cached_property
    def embedding(self) -> np.ndarray | None:
        """The identity: the mean of the faces' raw recognizer embeddings (None without a recognizer)."""
        embs = [f.embedding for f in self.faces if f.embedding is not None]
        if not embs:
            return None
        return np.mean(np.stack(embs).astype(np.float32), axis=0)


def array_key(image: np.ndarray) -> str:
    """A cache key for a source given as pixels rather than a file."""
    return "pixels:" + hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


@dataclass(frozen=True)
class SwapResult:
    """A swapped face in crop space: `crop` (BGR uint8, size x size), `matrix` (2x3, frame -> crop).

    `mask` (float32 0..1 at the crop's size, optional) is multiplied into the pipeline's blend mask:
    a swapper that knows where its output is valid (a feathered ellipse, a predicted mask) says so.
    """

    crop: np.ndarray
    matrix: np.ndarray
    mask: np.ndarray | None = None


class Swapper(ABC):
    """One swap model (or model-less method), called the same way for every family.

    `prepare(source)` does the per-source work once (an identity vector, a source crop, a mesh);
    `swap(frame, target, identity)` swaps one target face with a prepared identity. Both are
    safe to call from several threads at once.
    """

    family: ClassVar[str]
    # Whether `prepare` needs `Source.embedding` (a face recognizer must be loaded).
    needs_embedding: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def model_names(cls) -> tuple[str, ...]:
        """The --face-swapper-model names this family serves (its catalog entries by default)."""
        return tuple(s.name for s in cls.specs() if s.family == cls.family)

    @classmethod
    def specs(cls) -> tuple[ModelSpec, ...]:
        """Catalog entries of every file this family uses (swap models and helpers)."""
        return ()

    @classmethod
    @abstractmethod
    def load(cls, name: str, registry: ModelRegistry) -> Swapper:
        """Build the swapper for catalog name `name`, its sessions from the (pinning) registry."""

    @abstractmethod
    def prepare(self, source: Source) -> Any:
        """Per-source work, done once per source and cached by the caller under `source.key`."""

    @abstractmethod
    def swap(self, frame: np.ndarray, target: Face, identity: Any) -> SwapResult:
        """Swap the identity into `target` of `frame` (not modified); the paste-back is the caller's."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family}


@dataclass(frozen=True)
class CropFormat:
    """How a learned family sees a face: template, crop size, normalisation, output range."""

    template: str
    size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # True: the model's output is in the normalised range (x * std + mean gives 0..1 RGB);
    # False: the model's output is 0..1 RGB already.
    denormalise_output: bool = False
    border: int = cv2.BORDER_REPLICATE
    template_px: np.ndarray = field(init=False, repr=False, compare=False)
    _in: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)
    _out: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "template_px", TEMPLATES[self.template] * float(self.size))
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        # per RGB channel: blob = x * scale_in - offset_in; pixel = out * scale_out + offset_out
        object.__setattr__(self, "_in", (np.float32(1.0 / 255.0) / std, mean / std))
        out_scale, out_offset = (255.0 * std, 255.0 * mean) if self.denormalise_output else (np.full(3, 255.0), np.zeros(3))
        object.__setattr__(self, "_out", (out_scale.astype(np.float32), out_offset.astype(np.float32)))

    def crop(self, frame: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
        return align(frame, face.kps, self.template_px, self.size, border=self.border)

    def to_blob(self, crop_bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 crop -> [1, 3, size, size] float32 RGB, (x / 255 - mean) / std."""
        scale, offset = self._in
        planes = np.empty((1, 3, self.size, self.size), np.float32)
        for c in range(3):  # RGB plane c is BGR channel 2 - c
            np.multiply(crop_bgr[:, :, 2 - c], scale[c], out=planes[0, c], dtype=np.float32)
            if offset[c]:
                planes[0, c] -= offset[c]
        return planes

    def from_output(self, out: np.ndarray) -> np.ndarray:
        """[3, size, size] model output -> BGR uint8 crop (x * std + mean when the output is normalised)."""
        scale, offset = self._out
        bgr = np.empty((self.size, self.size, 3), np.uint8)
        plane = np.empty((self.size, self.size), np.float32)
        for c in range(3):
            np.multiply(out[c], scale[c], out=plane, dtype=np.float32)
            if offset[c]:
                plane += offset[c]
            np.clip(plane, 0, 255, out=plane)
            bgr[:, :, 2 - c] = plane  # truncates like astype(uint8)
        return bgr


def _dtype_of(onnx_type: str) -> type:
    return np.float16 if "float16" in onnx_type else np.float32


class LearnedSwapper(Swapper):
    """A learned family: aligned target crop + source vector in, swapped crop out.

    Subclasses set `family` and `formats` (catalog name -> CropFormat) and implement
    `source_vector` (the family's embedding conversion); everything else is shared.
    """

    formats: ClassVar[dict[str, CropFormat]]

    def __init__(self, name: str, session: Any, fmt: CropFormat) -> None:
        super().__init__(name)
        self.session = session
        self.format = fmt
        inputs = {i.name: i for i in session.get_inputs()}
        if "target" not in inputs or "source" not in inputs:
            raise ModelSignatureError(
                f"model {name} does not have the {self.family} signature: its inputs are "
                f"{sorted(inputs)}, expected 'target' and 'source'", model=name, inputs=sorted(inputs))
        self._target_dtype = _dtype_of(inputs["target"].type)
        self._source_dtype = _dtype_of(inputs["source"].type)
        self._output = session.get_outputs()[0].name

    @property
    def size(self) -> int:
        return self.format.size

    @abstractmethod
    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        """The family's `source` input ([1, D] float32) from a raw recognizer embedding."""

    def prepare(self, source: Source) -> np.ndarray:
        if source.embedding is None:
            raise NoFaceInSourceError(f"the {self.family} family needs the source face's embedding, "
                                      f"and no recognizer embedded it", role="source")
        vec = self.source_vector(np.asarray(source.embedding, np.float32).reshape(-1))
        return np.ascontiguousarray(vec.reshape(1, -1), dtype=np.float32)

    def swap(self, frame: np.ndarray, target: Face, identity: Any) -> SwapResult:
        crop, m = self.format.crop(frame, target)
        blob = self.format.to_blob(crop).astype(self._target_dtype, copy=False)
        feed = {"target": blob, "source": np.asarray(identity).astype(self._source_dtype, copy=False)}
        out = self.session.run([self._output], feed)[0][0]
        return SwapResult(self.format.from_output(out), np.asarray(m, np.float32))

    def describe(self) -> dict[str, Any]:
        f = self.format
        return {"name": self.name, "family": self.family, "template": f.template, "size": f.size,
                "mean": list(f.mean), "std": list(f.std)}


def normalise(vec: np.ndarray) -> np.ndarray:
    return vec / (np.linalg.norm(vec) + 1e-12)


def converter_spec(name: str, licence: str, note: str = "") -> ModelSpec:
    """Catalog entry of an embedding converter: `input` [1,512] recognizer embedding -> [1,512]."""
    from sealfuse.engine.catalog import ModelSpec

    return ModelSpec(name, "embedding_converter", f"{name}.onnx", licence, ((1, 512),), 1,
                     input_names=("input",), output_shape=(1, 512), note=note)


class EmbeddingConverter:
    """An embedding converter session: maps a raw ArcFace embedding into a family's identity space."""

    def __init__(self, name: str, session: Any) -> None:
        self.name = name
        self.session = session
        self._dtype = _dtype_of(session.get_inputs()[0].type)
        self._output = session.get_outputs()[0].name

    def __call__(self, embedding: np.ndarray) -> np.ndarray:
        feed = {"input": np.asarray(embedding, self._dtype).reshape(1, -1)}
        return np.asarray(self.session.run([self._output], feed)[0], np.float32).reshape(-1)
