"""Face swappers behind one interface: the pipeline calls every family the same way.

The interface (`base.py`):

- `Source`: one identity to put in: the source image(s), the face found in each (landmarks, and
  the recognizer's embedding when one ran), their mean embedding, and a `key` (the files'
  digests) under which per-source work is cached.
- `Swapper.prepare(source) -> identity`: the per-source work, done once per source (a warm
  engine and every frame of a video reuse it). A learned family returns its `source` vector
  (the embedding after the family's converter); an image-based swapper (the mesh warp)
  returns whatever it derives from the source pixels and landmarks.
- `Swapper.swap(frame, target_face, identity) -> SwapResult(crop, matrix, mask)`: the swapped
  face in crop space and the frame->crop transform; the pipeline masks, blends and pastes back.
  `mask`, when given, is multiplied into the pipeline's blend mask.
- `Swapper.needs_embedding`: whether the pipeline must load a face recognizer for this family.

Learned families subclass `LearnedSwapper`: a `CropFormat` per model (alignment template, crop
size, mean/std normalisation, output range) and `source_vector(embedding)`; crop, blob, run and
un-normalise are shared.

Adding a family is one file in this package: a `Swapper` subclass with `family`, `specs()` (the
catalog entries of its files: name, file, licence, ONNX I/O signature), `load(name, registry)`
(sessions come from the pinning `ModelRegistry`), `prepare` and `swap`. Every module here is
imported at start-up and every `Swapper` subclass with a `family` is registered; its model
names become `--face-swapper-model` choices and rows of `sealfuse models list`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from sealfuse.engine.errors import ConfigError
from sealfuse.engine.swappers.base import (
    TEMPLATES,
    CropFormat,
    LearnedSwapper,
    Source,
    Swapper,
    SwapResult,
    array_key,
)

if TYPE_CHECKING:
    from sealfuse.engine.catalog import ModelSpec

__all__ = ["TEMPLATES", "CropFormat", "LearnedSwapper", "Source", "SwapResult", "Swapper", "array_key",
           "family_of", "swapper_names", "swapper_specs"]


def _families() -> dict[str, type[Swapper]]:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Swapper]] = {}
    todo = list(Swapper.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "family" in cls.__dict__:
            for name in cls.model_names():
                found[name] = cls
    return found


_BY_NAME: dict[str, type[Swapper]] = _families()


def swapper_names() -> list[str]:
    """Every --face-swapper-model choice (without "auto")."""
    return sorted(_BY_NAME)


def swapper_specs() -> list[ModelSpec]:
    """Catalog entries of every file a swapper family uses (each once)."""
    seen: dict[str, ModelSpec] = {}
    for cls in sorted(set(_BY_NAME.values()), key=lambda c: c.family):
        for spec in cls.specs():
            seen.setdefault(spec.name, spec)
    return list(seen.values())


def family_of(name: str) -> type[Swapper]:
    """The Swapper class serving a --face-swapper-model name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown face swapper {name!r}; choose from {', '.join(swapper_names())}",
                          face_swapper_model=name) from None
