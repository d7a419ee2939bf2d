"""The face pipeline: detect -> select -> align -> swap -> mask -> blend (-> enhance).

One `Pipeline` per job holds the source face; sessions come from a shared `ModelRegistry`, so a
warm daemon loads each model once. `detect`, `select` and `render` are safe to call from several
threads at once (ONNX Runtime sessions are, and per-call state stays on the stack).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sealfuse.engine import masks as masklib
from sealfuse.engine.detect_blazeface import BlazeFaceDetector
from sealfuse.engine.detect_facemesh import FaceMesher
from sealfuse.engine.errors import (
    ConfigError,
    ModelMissingError,
    NoFaceInSourceError,
)
from sealfuse.engine.face import Face
from sealfuse.engine.families import (
    ENHANCER_FAMILIES,
    ArcFaceFamily,
    MTCNNFamily,
    RestorerFamily,
    SCRFDFamily,
)
from sealfuse.engine.imageio import read_image
from sealfuse.engine.options import FRAME_PROCESSORS, MASK_TYPES, SELECTOR_MODES, SwapOptions
from sealfuse.engine.providers import resolve_providers
from sealfuse.engine.registry import CATALOG, ModelRegistry
from sealfuse.engine.swappers import Source, Swapper, array_key, family_of
from sealfuse.engine.warp import paste_back

Touched = tuple[tuple[int, int, int, int], np.ndarray]


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
            self.detector_name = "scrfd_10g" if registry.present("scrfd_10g") else "blazeface"
        # FaceMesh gives every face its 468-point mesh and the five alignment points: required
        # behind BlazeFace (whose own points are coarse), used with the other detectors when present.
        self.mesher_name: str | None = None
        if self.detector_name == "blazeface" or registry.present("facemesh_468"):
            self.mesher_name = "facemesh_468"
        self.swapper_name = o.face_swapper_model
        if self.swapper_name == "auto":
            self.swapper_name = "inswapper_128" if registry.present("inswapper_128") else "classic"
        self.swapper_family = family_of(self.swapper_name)
        needs_embedding = self.swapper_family.needs_embedding
        need_recognizer = needs_embedding or o.face_selector_mode == "reference"
        self.recognizer_name = o.face_recognizer_model if need_recognizer else None
        if self.recognizer_name:
            self._family(self.recognizer_name, "arcface", "--face-recognizer-model")
            if not registry.present(self.recognizer_name):
                why = (f"the {self.swapper_family.family} family" if needs_embedding
                       else "--face-selector-mode reference")
                spec = CATALOG[self.recognizer_name]
                raise ModelMissingError(
                    f"{why} needs a face recognizer: model {self.recognizer_name} ({spec.file}) is missing "
                    f"from {registry.models_dir}; add it to the bundle (sealfuse bundle build --models DIR)",
                    model=self.recognizer_name, file=registry.path_of(spec))
        self.enhancer_name = o.face_enhancer_model if "face_enhancer" in o.frame_processors else None
        if self.enhancer_name:
            self._family(self.enhancer_name, ENHANCER_FAMILIES, "--face-enhancer-model")
        self.parser_name = "bisenet_resnet_34" if "region" in o.face_mask_types else None
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
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return f"unreadable:{path}"
    return h.hexdigest()


def largest(faces: list[Face]) -> Face:
    return max(faces, key=lambda f: f.size)


class Pipeline:
    """detect / select / render for one job (one source face)."""

    def __init__(self, options: SwapOptions, source: Path | np.ndarray, *,
                 registry: ModelRegistry | None = None, models: Models | None = None) -> None:
        self.options = options
        self.registry = registry or (models.registry if models else make_registry(options))
        self.models = models or Models(options, self.registry)
        self.timer = StageTimer()
        self._detector = self.models.detector()
        self._mesher = self.models.mesher()
        self._recognizer = self.models.recognizer()
        self._swapper = self.models.swapper()
        self._enhancer = self.models.enhancer()
        self._parser = self.models.parser()
        self.warnings: list[str] = list(self.registry.providers.warnings) + list(self.registry.warnings)
        src_img, self.source_face = self._face_of(source, "source")
        key = array_key(source) if isinstance(source, np.ndarray) else _digest(Path(source))
        self.source = Source((src_img,), (self.source_face,), key)
        with self.timer.stage("prepare"):
            self._identity = self.models.identity(self.source)
        self.reference_face: Face | None = None
        if options.face_selector_mode == "reference":
            assert options.reference_face_image is not None
            _, self.reference_face = self._face_of(options.reference_face_image, "reference")

    def _face_of(self, source: Path | np.ndarray, role: str) -> tuple[np.ndarray, Face]:
        """The image and its largest face, from the models' cache when the file was seen before."""
        if isinstance(source, np.ndarray):
            return source, self._pick(source, role, source)
        hit = self.models.cached_face(Path(source), role)
        if hit is None:
            image = read_image(Path(source), max_pixels=self.options.max_pixels)
            before = len(self.warnings)
            face = self._pick(image, role, source)
            hit = (image, face, self.warnings[before:])
            self.models.remember_face(Path(source), role, hit)
        else:
            self.warnings.extend(hit[2])
        return hit[0], hit[1]

    def _pick(self, image: np.ndarray, role: str, origin: object) -> Face:
        faces = self.detect(image)
        if not faces:
            raise NoFaceInSourceError(f"no face found in the {role} image {origin if not isinstance(origin, np.ndarray) else ''}".strip(),
                                      role=role)
        face = largest(faces)
        if len(faces) > 1:
            self.warnings.append(f"the {role} image has {len(faces)} faces; using the largest (box {face.to_dict()['box']})")
        if self._recognizer is not None:
            with self.timer.stage("recognize"):
                face = self._recognizer.embed(image, [face])[0]
        return face

    # -- the three calls video streaming builds on ------------------------------------------------
    def detect(self, frame: np.ndarray, *, mesh: bool = True) -> list[Face]:
        """Every face in `frame`; with `mesh` (and FaceMesh loaded) each carries its mesh and mesh points."""
        with self.timer.stage("detect"):
            faces = self._detector.detect(frame)
        return self.refine(frame, faces) if mesh else faces

    def refine(self, frame: np.ndarray, faces: list[Face]) -> list[Face]:
        """Faces with FaceMesh's 468 points and the five alignment points taken from them (when loaded)."""
        if self._mesher is None or not faces:
            return faces
        with self.timer.stage("mesh"):
            return self._mesher.refine(frame, faces)

    def select(self, faces: list[Face], frame: np.ndarray) -> list[Face]:
        mode = self.options.face_selector_mode
        if not faces:
            return []
        if mode == "one":
            return [largest(faces)]
        if mode == "many":
            return sorted(faces, key=lambda f: float(f.bbox[0]))
        assert self.reference_face is not None and self._recognizer is not None
        with self.timer.stage("recognize"):
            todo = [f for f in faces if f.embedding is None]
            done = [f for f in faces if f.embedding is not None] + self._recognizer.embed(frame, todo)
        ref = self.reference_face.normed_embedding
        picked = [f for f in done if 1.0 - float(np.dot(f.normed_embedding, ref)) < self.options.reference_face_distance]
        return sorted(picked, key=lambda f: float(f.bbox[0]))

    def reference_distances(self, faces: list[Face]) -> list[float]:
        if self.reference_face is None:
            return []
        ref = self.reference_face.normed_embedding
        return [round(1.0 - float(np.dot(f.normed_embedding, ref)), 4) for f in faces if f.embedding is not None]

    def render(self, frame: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Swap (and enhance) `faces`; returns a new frame. Touches only each face's box."""
        out = frame.copy()
        self._render_into(out, faces, [])
        return out

    def render_touched(self, frame: np.ndarray, faces: list[Face]) -> tuple[np.ndarray, list[Touched]]:
        """Like render, plus each blend's box (x0, y0, x1, y1) and its weights inside the box."""
        out = frame.copy()
        touched: list[Touched] = []
        self._render_into(out, faces, touched)
        return out, touched

    def render_with_mask(self, frame: np.ndarray, faces: list[Face]) -> tuple[np.ndarray, np.ndarray]:
        """Like render, plus the union of the blend masks (0..1) in frame space (for tests and reports)."""
        out, touched = self.render_touched(frame, faces)
        union = np.zeros(frame.shape[:2], np.float32)
        for (x0, y0, x1, y1), alpha in touched:
            np.maximum(union[y0:y1, x0:x1], alpha, out=union[y0:y1, x0:x1])
        return out, union

    def _render_into(self, out: np.ndarray, faces: list[Face], touched: list[Touched]) -> None:
        o = self.options

        def keep(result: Touched | None) -> None:
            if result is not None:
                touched.append(result)

        for face in faces:
            if "face_swapper" in o.frame_processors:
                with self.timer.stage("swap"):
                    result = self._swapper.swap(out, face, self._identity)
                with self.timer.stage("mask"):
                    mask = self._mask(result.crop)
                    if result.mask is not None:
                        mask = mask * result.mask
                    if o.blend_ratio != 1.0:
                        mask = mask * o.blend_ratio
                with self.timer.stage("paste"):
                    keep(paste_back(out, result.crop, mask, result.matrix))
            if self._enhancer is not None:
                with self.timer.stage("enhance"):
                    crop, m = self._enhancer.enhance(out, face)
                    mask = masklib.box_mask(crop.shape[0], o.face_mask_blur, (0, 0, 0, 0)) * o.face_enhancer_blend
                    keep(paste_back(out, crop, mask, m))

    def _mask(self, crop: np.ndarray) -> np.ndarray:
        o = self.options
        size = crop.shape[0]
        if o.face_mask_types == ("box",):
            return masklib.box_mask(size, float(o.face_mask_blur), tuple(o.face_mask_padding))
        parts = []
        for kind in o.face_mask_types:
            if kind == "box":
                parts.append(masklib.box_mask(size, float(o.face_mask_blur), tuple(o.face_mask_padding)))
            elif kind == "ellipse":
                parts.append(masklib.ellipse_mask(size, o.face_mask_blur))
            else:
                parts.append(masklib.region_mask(self._parser, crop, o.face_mask_blur))
        return masklib.combine(parts)

    # -- report -------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "detector": self.models.detector_name,
            "landmarker": self.models.mesher_name,
            "swapper": self.models.swapper_name,
            "recognizer": self.models.recognizer_name,
            "enhancer": self.models.enhancer_name,
            "providers": self.registry.providers.short,
            "models": self.registry.used(),
        }
