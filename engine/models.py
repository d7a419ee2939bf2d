"""The models one job needs (`Models`: resolved names, family objects, per-source caches) and the
option checks, stage timer and registry factory the pipeline builds on.

`Models` is shared by every job with the same model choices, so a warm engine loads each session,
detects each source face and prepares each source identity once.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sealfuse.engine.detect_blazeface import BlazeFaceDetector
from sealfuse.engine.detect_facemesh import FaceMesher
from sealfuse.engine.errors import ConfigError, ModelMissingError
from sealfuse.engine.face import Face
from sealfuse.engine.families import (
    ENHANCER_FAMILIES,
    ArcFaceFamily,
    MTCNNFamily,
    RestorerFamily,
    SCRFDFamily,
)
from sealfuse.engine.options import (
    FRAME_PROCESSORS,
    MASK_REGIONS,
    MASK_TYPES,
    SELECTOR_MODES,
    SwapOptions,
)
from sealfuse.engine.providers import resolve_providers
from sealfuse.engine.registry import CATALOG, ModelRegistry
from sealfuse.engine.swappers import Source, Swapper, family_of


class StageTimer:
    """Milliseconds spent per stage, summed over calls (thread-safe)."""

    def __init__(self) -> None:
        self._ms: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = (time.perf_counter() - t0) * 1000.0
            with self._lock:
                self._ms[name] += dt

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 2) for k, v in self._ms.items()}


def validate(options: SwapOptions) -> None:
    bad = [p for p in options.frame_processors if p not in FRAME_PROCESSORS]
    if bad or not options.frame_processors:
        raise ConfigError(f"unknown frame processor {bad}; choose from {', '.join(FRAME_PROCESSORS)}")
    bad = [m for m in options.face_mask_types if m not in MASK_TYPES]
    if bad or not options.face_mask_types:
        raise ConfigError(f"unknown face mask type {bad}; choose from {', '.join(MASK_TYPES)}")
    if options.face_selector_mode not in SELECTOR_MODES:
        raise ConfigError(f"unknown face selector mode {options.face_selector_mode!r}")
    if not 0.0 <= options.blend_ratio <= 1.0:
        raise ConfigError("--blend-ratio must be within 0..1", blend_ratio=options.blend_ratio)
    if not 0.0 <= options.face_enhancer_weight <= 1.0:
        raise ConfigError("--face-enhancer-weight must be within 0..1",
                          face_enhancer_weight=options.face_enhancer_weight)
    if not 0.0 <= options.face_mask_blur <= 1.0:
        raise ConfigError("--face-mask-blur must be within 0..1", face_mask_blur=options.face_mask_blur)
    if len(options.face_mask_padding) != 4 or any(not 0 <= p <= 100 for p in options.face_mask_padding):
        raise ConfigError("--face-mask-padding takes 1, 2 or 4 percentages within 0..100")
    if options.face_selector_mode == "reference" and options.reference_face_image is None:
        raise ConfigError("--face-selector-mode reference needs --reference-face-image")
    if options.face_map and options.face_selector_mode != "many":
        raise ConfigError(f"--face-map selects faces by their mapping; it cannot be combined with "
                          f"--face-selector-mode {options.face_selector_mode}")
    bad = [r for r in options.face_mask_regions if r not in MASK_REGIONS]
    if bad or not options.face_mask_regions:
        raise ConfigError(f"unknown face mask region {bad}; choose from {', '.join(MASK_REGIONS)}")
    if options.detect_every < 1:
        raise ConfigError("--detect-every must be at least 1")


def make_registry(options: SwapOptions) -> ModelRegistry:
    providers = resolve_providers(options.execution_providers, max_memory_gb=options.max_memory_gb,
                                  threads=options.execution_threads, device_id=options.gpu_device_id,
                                  arena_extend_strategy=options.gpu_arena_extend_strategy)
    return ModelRegistry(options.models_dir, providers)


class Models:
    """Resolves which models an options object needs and builds their family objects (cached)."""

    def __init__(self, options: SwapOptions, registry: ModelRegistry) -> None:
        validate(options)
        self.options = options
        self.registry = registry
        o = options
        self.detector_name = o.face_detector_model
        if self.detector_name == "auto":
            usable = registry.present("scrfd_10g") and registry.allowed("scrfd_10g")
            self.detector_name = "scrfd_10g" if usable else "blazeface"
        self.swapper_name = o.face_swapper_model
        if self.swapper_name == "auto":
            usable = registry.present("inswapper_128") and registry.allowed("inswapper_128")
            self.swapper_name = "inswapper_128" if usable else "mesh"
        self.swapper_family = family_of(self.swapper_name)
        # FaceMesh gives every face its 468-point mesh and the five alignment points: required
        # behind BlazeFace (whose own points are coarse), by the mesh swapper and by the mesh's
        # region mask; used with the other detectors whenever present.
        needs_mesh = (self.detector_name == "blazeface"
                      or "facemesh_468" in getattr(self.swapper_family, "needs_models", ())
                      or ("region" in o.face_mask_types and not registry.present("bisenet_resnet_34")))
        self.mesher_name: str | None = None
        if needs_mesh or registry.present("facemesh_468"):
            self.mesher_name = "facemesh_468"
        needs_embedding = self.swapper_family.needs_embedding
        need_recognizer = needs_embedding or o.face_selector_mode == "reference" or bool(o.face_map)
        self.recognizer_name = o.face_recognizer_model if need_recognizer else None
        if self.recognizer_name:
            self._family(self.recognizer_name, "arcface", "--face-recognizer-model")
            if not registry.present(self.recognizer_name):
                why = (f"the {self.swapper_family.family} family" if needs_embedding
                       else "--face-map" if o.face_map else "--face-selector-mode reference")
                spec = CATALOG[self.recognizer_name]
                raise ModelMissingError(
                    f"{why} needs a face recognizer: model {self.recognizer_name} ({spec.file}) is missing "
                    f"from {registry.models_dir}; add it to the bundle (sealfuse bundle build --models DIR)",
                    model=self.recognizer_name, file=registry.path_of(spec))
        self.enhancer_name = o.face_enhancer_model if "face_enhancer" in o.frame_processors else None
        if self.enhancer_name:
            self._family(self.enhancer_name, ENHANCER_FAMILIES, "--face-enhancer-model")
        # region mask: the BiSeNet face parser when supplied, else the regions of the face's mesh
        self.parser_name = ("bisenet_resnet_34" if "region" in o.face_mask_types
                            and registry.present("bisenet_resnet_34") else None)
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Source and reference faces by file digest: a warm worker that serves many jobs with one
        # preset's face detects (and embeds) that face once.
        self._faces: OrderedDict[tuple[str, str], tuple[np.ndarray, Face, list[str]]] = OrderedDict()
        # Prepared identities by source key: each source's per-swapper work is done once.
        self._identities: OrderedDict[str, Any] = OrderedDict()

    def identity(self, source: Source) -> Any:
        """The swapper's prepared identity for `source`, computed once per source key."""
        with self._lock:
            hit = self._identities.get(source.key)
            if hit is not None:
                self._identities.move_to_end(source.key)
                return hit
        value = self.swapper().prepare(source)
        with self._lock:
            self._identities[source.key] = value
            while len(self._identities) > FACE_CACHE_SIZE:
                self._identities.popitem(last=False)
        return value

    def cached_face(self, path: Path, role: str) -> tuple[np.ndarray, Face, list[str]] | None:
        with self._lock:
            key = (_digest(path), role)
            hit = self._faces.get(key)
            if hit is not None:
                self._faces.move_to_end(key)
            return hit

    def remember_face(self, path: Path, role: str, value: tuple[np.ndarray, Face, list[str]]) -> None:
        with self._lock:
            self._faces[(_digest(path), role)] = value
            while len(self._faces) > FACE_CACHE_SIZE:
                self._faces.popitem(last=False)

    @staticmethod
    def _family(name: str, family: str | tuple[str, ...], flag: str) -> None:
        spec = ModelRegistry.spec(name)
        allowed = (family,) if isinstance(family, str) else family
        if spec.family not in allowed:
            raise ConfigError(f"{flag} {name} is a {spec.family} model, not {' or '.join(allowed)}",
                              model=name)

    def _get(self, key: str, build: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def detector(self) -> MTCNNFamily | SCRFDFamily | BlazeFaceDetector:
        r = self.registry
        if self.detector_name == "blazeface":
            return self._get("det", lambda: BlazeFaceDetector(r.tflite("blazeface_full_range"),
                                                              r.tflite("blazeface_short_range"),
                                                              self.options.face_detector_score))
        if self.detector_name == "mtcnn":
            return self._get("det", lambda: MTCNNFamily(r.session("mtcnn_pnet"), r.session("mtcnn_rnet"),
                                                         r.session("mtcnn_onet"), self.options.face_detector_score))
        self._family(self.detector_name, "scrfd", "--face-detector-model")
        return self._get("det", lambda: SCRFDFamily(r.resolve(self.detector_name).path,
                                                     r.session(self.detector_name), self.options.face_detector_score))

    def mesher(self) -> FaceMesher | None:
        if not self.mesher_name:
            return None
        return self._get("mesh", lambda: FaceMesher(self.registry.tflite("facemesh_468")))

    def recognizer(self) -> ArcFaceFamily | None:
        if not self.recognizer_name:
            return None
        r, n = self.registry, self.recognizer_name
        return self._get("rec", lambda: ArcFaceFamily(r.resolve(n).path, r.session(n)))

    def swapper(self) -> Swapper:
        return self._get("swap", lambda: self.swapper_family.load(self.swapper_name, self.registry))

    def enhancer(self) -> RestorerFamily | None:
        if not self.enhancer_name:
            return None
        name, weight = self.enhancer_name, self.options.face_enhancer_weight
        return self._get("enh", lambda: RestorerFamily(self.registry.session(name), weight))

    def parser(self) -> Any:
        if not self.parser_name:
            return None
        return self.registry.session(self.parser_name)

    def load_all(self) -> None:
        """Create every session these options need (the daemon does this before READY=1)."""
        self.detector()
        self.mesher()
        self.recognizer()
        self.swapper()
        self.enhancer()
        self.parser()


FACE_CACHE_SIZE = 16


def _digest(path: Path) -> str:
    """sha256 of a file's bytes (the cache key of its face); unreadable files are read_image's to report."""
    h = hashlib.sha256()
    try:
        # O_NONBLOCK and a regular-file check first: a FIFO would block the open, /dev/zero never end
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return f"unreadable:{path}"
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return f"unreadable:{path}"
    return h.hexdigest()
