"""The face pipeline: detect -> select -> align -> swap -> mask -> blend (-> enhance).

One `Pipeline` per job holds the source face; sessions come from a shared `ModelRegistry`, so a
warm daemon loads each model once. `detect`, `select` and `render` are safe to call from several
threads at once (ONNX Runtime sessions are, and per-call state stays on the stack).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sealfuse.engine import masks as masklib
from sealfuse.engine.errors import ConfigError, NoFaceInSourceError
from sealfuse.engine.face import Face
from sealfuse.engine.facemap import Mapping, TrackMapper, consistency, nearest
from sealfuse.engine.imageio import read_image
from sealfuse.engine.models import (  # re-exported: callers import them from the pipeline
    Models,
    StageTimer,
    _digest,
    make_registry,
    validate,
)
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.registry import ModelRegistry
from sealfuse.engine.swappers import Source, array_key
from sealfuse.engine.track import TrackSelector, iou
from sealfuse.engine.warp import paste_back

Touched = tuple[tuple[int, int, int, int], np.ndarray]
SourceArg = Path | np.ndarray | list[Path] | tuple[Path, ...]
# Below this pairwise cosine similarity, several source images probably show different people.
LOW_SOURCE_SIMILARITY = 0.3

__all__ = ["LOW_SOURCE_SIMILARITY", "Models", "Pipeline", "SourceArg", "StageTimer", "Touched", "make_registry",
           "validate"]


def _as_list(source: SourceArg | None) -> list[Path | np.ndarray]:
    if source is None:
        return []
    if isinstance(source, list | tuple):
        return list(source)
    return [source]


def largest(faces: list[Face]) -> Face:
    return max(faces, key=lambda f: f.size)


class Pipeline:
    """detect / select / render for one job: one source identity, or several mapped by reference face."""

    def __init__(self, options: SwapOptions, source: SourceArg | None, *,
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
        self._source_keys: set[str] = set()  # digests of the source images (to leave their own face alone)
        sources = _as_list(source)
        if options.face_map and sources:
            self.warnings.append("--source is not used with --face-map: each matched face gets its mapped "
                                 "source, unmatched faces stay untouched")
            sources = []
        if not sources and not options.face_map:
            raise ConfigError("give a source image (--source) or a face map (--face-map REFERENCE=SOURCE)")
        self.source: Source | None = self._source(sources) if sources else None
        self.source_face: Face | None = self.source.face if self.source else None
        self._identity: Any = None
        if self.source is not None:
            with self.timer.stage("prepare"):
                self._identity = self.models.identity(self.source)
        self.mappings: list[Mapping] = []
        for i, (ref, src) in enumerate(options.face_map):
            _, ref_face = self._face_of(ref, "reference")
            mapped = self._source([src])
            with self.timer.stage("prepare"):
                self.mappings.append(Mapping(i, str(ref), str(src), ref_face, mapped, self.models.identity(mapped)))
        self.track_mapper: TrackMapper | None = None
        self.reference_face: Face | None = None
        if options.face_selector_mode == "reference":
            assert options.reference_face_image is not None
            _, self.reference_face = self._face_of(options.reference_face_image, "reference")

    def _source(self, items: list[Path | np.ndarray]) -> Source:
        """One identity from one or more source images (their embeddings are averaged)."""
        images, faces, keys = [], [], []
        for item in items:
            image, face = self._face_of(item, "source")
            images.append(image)
            faces.append(face)
            keys.append(array_key(item) if isinstance(item, np.ndarray) else _digest(Path(item)))
        if len(items) > 1 and not self._swapper.needs_embedding:
            self.warnings.append(f"the {self._swapper.family} swapper uses the first source image only; "
                                 f"the embeddings of all {len(items)} are reported, not averaged")
        self._source_keys.update(keys)
        pos = self.options.source_face_position
        src = Source(tuple(images), tuple(faces), "+".join(keys) + ("" if pos is None else f"@{pos}"))
        report = consistency(src.faces)
        if report.get("min_cosine", 1.0) < LOW_SOURCE_SIMILARITY:
            self.warnings.append(f"the {len(items)} source images may not show one person: the lowest pairwise "
                                 f"cosine similarity of their faces is {report['min_cosine']}")
        return src

    def _face_of(self, source: Path | np.ndarray, role: str) -> tuple[np.ndarray, Face]:
        """The image and its largest face, from the models' cache when the file was seen before."""
        if isinstance(source, np.ndarray):
            return source, self._pick(source, role, source)
        pos = self.options.source_face_position if role == "source" else None
        slot = role if pos is None else f"{role}@{pos}"
        hit = self.models.cached_face(Path(source), slot)
        if hit is None:
            image = read_image(Path(source), max_pixels=self.options.max_pixels)
            before = len(self.warnings)
            face = self._pick(image, role, source)
            hit = (image, face, self.warnings[before:])
            self.models.remember_face(Path(source), slot, hit)
        else:
            self.warnings.extend(hit[2])
        return hit[0], hit[1]

    def _pick(self, image: np.ndarray, role: str, origin: object) -> Face:
        faces = self.detect(image)
        if not faces:
            raise NoFaceInSourceError(f"no face found in the {role} image {origin if not isinstance(origin, np.ndarray) else ''}".strip(),
                                      role=role)
        pos = self.options.source_face_position if role == "source" else None
        if pos is not None:
            if pos >= len(faces):
                raise NoFaceInSourceError(f"--source-face-position {pos}: the {role} image has only {len(faces)} "
                                          f"face(s) (positions 0..{len(faces) - 1}, from the left)",
                                          role=role, faces=len(faces), position=pos)
            face = sorted(faces, key=lambda f: float(f.bbox[0] + f.bbox[2]))[pos]
        else:
            face = largest(faces)
            if len(faces) > 1:
                self.warnings.append(f"the {role} image has {len(faces)} faces; using the largest "
                                     f"(box {face.to_dict()['box']})")
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

    def refine(self, frame: np.ndarray, faces: list[Face],
               priors: dict[int, tuple[np.ndarray, float, float]] | None = None) -> list[Face]:
        """Faces with FaceMesh's 468 points and the five alignment points taken from them (when loaded).

        `priors` (video): track id -> the region of that track's mesh in the previous frame.
        """
        if self._mesher is None or not faces:
            return faces
        with self.timer.stage("mesh"):
            return self._mesher.refine(frame, faces, priors)

    def select(self, faces: list[Face], frame: np.ndarray) -> list[Face]:
        mode = self.options.face_selector_mode
        if not faces:
            return []
        if mode == "one":
            return [largest(faces)]
        if self.mappings:
            return self._mapped(self.embed(frame, faces))
        if mode == "many":
            return sorted(faces, key=lambda f: float(f.bbox[0]))
        assert self.reference_face is not None and self._recognizer is not None
        done = self.embed(frame, faces)
        ref = self.reference_face.normed_embedding
        picked = [f for f in done if 1.0 - float(np.dot(f.normed_embedding, ref)) < self.options.reference_face_distance]
        return sorted(picked, key=lambda f: float(f.bbox[0]))

    def embed(self, frame: np.ndarray, faces: list[Face]) -> list[Face]:
        """`faces` with their recognizer embeddings (those that have one keep it)."""
        assert self._recognizer is not None
        todo = [f for f in faces if f.embedding is None]
        if not todo:
            return list(faces)
        with self.timer.stage("recognize"):
            done = iter(self._recognizer.embed(frame, todo))
        return [f if f.embedding is not None else next(done) for f in faces]

    def _mapped(self, faces: list[Face]) -> list[Face]:
        picked = []
        for f in faces:
            normed = f.normed_embedding
            assert normed is not None
            best, dist = nearest(self.mappings, normed)
            if dist < self.options.reference_face_distance:
                picked.append(f.with_(source_id=best))
        return sorted(picked, key=lambda f: float(f.bbox[0]))

    def mapping_of(self, face: Face) -> dict[str, Any]:
        """For the report: the nearest reference of an embedded face, its distance and the source it got."""
        if not self.mappings or face.embedding is None:
            return {}
        best, dist = nearest(self.mappings, face.normed_embedding)
        matched = dist < self.options.reference_face_distance
        return {"reference": self.mappings[best].reference_path, "distance": round(dist, 4),
                "source": self.mappings[best].source_path if matched else None}

    def track_selector(self) -> TrackSelector | TrackMapper:
        """The per-track selection video uses: the selector mode, or the face map per track."""
        if self.mappings:
            self.track_mapper = TrackMapper(self.mappings, self.embed, self.options.reference_face_distance)
            return self.track_mapper
        return TrackSelector(self.options.face_selector_mode, self.select)

    def for_video(self) -> None:
        """Keep per-frame work small for this (video) job: a swapper with a cheaper per-frame variant
        of its prepared identity (`for_video(identity)`, the mesh swap's feathered blend) uses it."""
        cheaper = getattr(self._swapper, "for_video", None)
        if cheaper is None:
            return
        if self._identity is not None:
            self._identity = cheaper(self._identity)
        self.mappings = [replace(m, identity=cheaper(m.identity)) for m in self.mappings]

    def not_the_source(self, faces: list[Face], target: Path) -> list[Face]:
        """`faces` without the source face itself when the target is the source image (it stays as it is)."""
        if self.source_face is None or _digest(Path(target)) not in self._source_keys:
            return faces
        return [f for f in faces if iou(f.bbox, self.source_face.bbox) < 0.5]

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
                identity = self._identity if face.source_id is None else self.mappings[face.source_id].identity
                if identity is None:
                    continue
                with self.timer.stage("swap"):
                    result = self._swapper.swap(out, face, identity)
                with self.timer.stage("mask"):
                    mask = self._mask(result.crop, face, result.matrix)
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

    def _mask(self, crop: np.ndarray, face: Face, matrix: np.ndarray) -> np.ndarray:
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
            elif self._parser is not None:
                parts.append(masklib.region_mask(self._parser, crop, o.face_mask_blur, o.face_mask_regions))
            elif face.mesh is not None:
                xy = face.mesh[:, :2] @ matrix[:, :2].T + matrix[:, 2]
                parts.append(masklib.mesh_region_mask(xy, size, o.face_mask_blur, o.face_mask_regions))
            else:  # FaceMesh did not confirm this face: nothing of it is swapped
                parts.append(np.zeros((size, size), np.float32))
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
            **({"sources": consistency(self.source.faces)} if self.source and len(self.source.faces) > 1 else {}),
            **({"face_map": [{"reference": m.reference_path, "source": m.source_path} for m in self.mappings]}
               if self.mappings else {}),
            **({"tracks_mapped": self.track_mapper.report()} if self.track_mapper else {}),
        }
