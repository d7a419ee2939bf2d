"""The engine's entry point for the CLI and the watch-folder worker.

`Engine` creates (and sha256-checks) the sessions its options need once; `swap_file` runs one
job on an image or a video and writes the output atomically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sealfuse.engine.errors import ConfigError, NoFaceInTargetError, NoReferenceMatchError
from sealfuse.engine.formats import VIDEO_EXTS as SUPPORTED_VIDEO_EXTS
from sealfuse.engine.imageio import IMAGE_EXTS, check_output_path, read_image, write_image
from sealfuse.engine.label import Label, check_label
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Models, Pipeline, SourceArg, make_registry
from sealfuse.engine.provenance import Claim, Provenance, ProvenanceConfig

SUPPORTED_IMAGE_EXTS = tuple(IMAGE_EXTS)
Progress = Callable[[dict[str, Any]], None]


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in SUPPORTED_VIDEO_EXTS


class Engine:
    """Models loaded once; many jobs."""

    def __init__(self, options: SwapOptions | None = None,
                 provenance: Provenance | ProvenanceConfig | None = None) -> None:
        self.options = options or SwapOptions()
        self.provenance = provenance if isinstance(provenance, Provenance) else Provenance(provenance)
        self.registry = make_registry(self.options)
        self._models: dict[tuple[Any, ...], Models] = {}
        self._lock = threading.Lock()
        self.models_for(self.options).load_all()

    def models_for(self, options: SwapOptions) -> Models:
        key = (options.face_detector_model, options.face_swapper_model, options.face_recognizer_model,
               (options.face_enhancer_model, options.face_enhancer_weight)
               if "face_enhancer" in options.frame_processors else None,
               "region" in options.face_mask_types,
               options.face_selector_mode == "reference" or bool(options.face_map),
               options.face_detector_score)
        with self._lock:
            if key not in self._models:
                self._models[key] = Models(options, self.registry)
            return self._models[key]

    def swap_file(self, source: SourceArg | None, target: Path, output: Path, options: SwapOptions | None = None, *,
                  progress: Progress | None = None, cancel: threading.Event | None = None,
                  job_id: str | None = None) -> dict[str, Any]:
        opts = options or self.options
        if opts.models_dir != self.options.models_dir or opts.execution_providers != self.options.execution_providers:
            opts = replace(opts, models_dir=self.options.models_dir,
                           execution_providers=self.options.execution_providers)
        src = [Path(s) for s in source] if isinstance(source, list | tuple) else source
        src = Path(src) if isinstance(src, str) else src
        return swap_file(src, Path(target), Path(output), opts, models=self.models_for(opts),
                         progress=progress, cancel=cancel, provenance=self.provenance, job_id=job_id)


def swap_file(source: SourceArg | None, target: Path, output: Path, options: SwapOptions, *,
              models: Models | None = None, progress: Progress | None = None,
              cancel: threading.Event | None = None, provenance: Provenance | None = None,
              job_id: str | None = None) -> dict[str, Any]:
    """Swap faces from `source` into the image or video `target`, writing `output` atomically.

    `source` may be several images of one person (their embeddings are averaged into one identity),
    or None when `options.face_map` gives each reference face its own source.

    The output is signed with C2PA content credentials inside the atomic write when `provenance`
    has a key; the report's `provenance` says whether it was, the manifest id and the output sha256.
    """
    t_start = time.perf_counter()
    video = is_video(target)
    if video != is_video(output):
        raise ConfigError(f"output {output.name} must be a {'video' if video else 'image'} like the target",
                          target=target, output=output)
    inputs = [target, *(source if isinstance(source, list | tuple) else [source])]
    if video:
        from sealfuse.engine.video import VIDEO_EXTS as allowed_video

        check_output_path(output, {e: e for e in allowed_video}, inputs=inputs)
    else:
        check_output_path(output, inputs=inputs)
    check_label(options.label, options.label_corner)
    provenance = provenance or Provenance()
    unsigned = provenance.check(output)  # refuses before any work when signing is required and impossible
    pipeline = Pipeline(options, source, models=models)
    sealed: dict[str, Any] = {}

    def claim() -> Claim:
        return Claim.for_job(job_id, "video" if video else "image", pipeline.registry.used(), options)

    def before_commit(tmp: Path) -> None:
        provenance.sealing(output, claim(), sealed)(tmp)

    if video:
        from sealfuse.engine.video import swap_video

        report = swap_video(pipeline, target, output, progress=progress, cancel=cancel,
                            before_commit=before_commit)
        report.setdefault("kind", "video")
    else:
        report = swap_image(pipeline, target, output, before_commit=before_commit)
    report.update({
        "source": _source_text(source), "target": str(target), "output": str(output),
        **pipeline.describe(),
        "timings_ms": {**report.get("timings_ms", {}), **pipeline.timer.as_dict(),
                       "total": round((time.perf_counter() - t_start) * 1000, 2)},
        "warnings": pipeline.warnings + report.get("warnings", []) + ([unsigned] if unsigned else []),
        "provenance": sealed,
    })
    return report


def swap_image(pipeline: Pipeline, target: Path, output: Path, *,
               before_commit: Callable[[Path], None] | None = None) -> dict[str, Any]:
    timer = pipeline.timer
    with timer.stage("decode"):
        frame = read_image(target, max_pixels=pipeline.options.max_pixels)
    faces = pipeline.detect(frame)
    if not faces:
        raise NoFaceInTargetError(f"no face found in the target image {target}", target=target)
    if pipeline.mappings:
        faces = pipeline.embed(frame, faces)
    selected = pipeline.select(faces, frame)
    others = pipeline.not_the_source(selected, target)
    if selected and not others:
        raise NoFaceInTargetError(f"the only face selected in {target} is the source face itself", target=target)
    selected = others
    if not selected:
        what = "any --face-map reference face" if pipeline.mappings else "the reference face"
        distances = ([pipeline.mapping_of(f)["distance"] for f in faces] if pipeline.mappings
                     else pipeline.reference_distances(faces))
        raise NoReferenceMatchError(
            f"no face in {target} is within distance {pipeline.options.reference_face_distance} of {what}",
            target=target, distances=distances)
    out = pipeline.render(frame, selected)
    if pipeline.options.label:
        with timer.stage("label"):
            out = Label(pipeline.options.label, out.shape[1], out.shape[0],
                        pipeline.options.label_corner).apply_bgr(out)
    with timer.stage("encode"):
        written = write_image(output, out, before_commit=before_commit)
    return {
        "kind": "image",
        "width": int(frame.shape[1]), "height": int(frame.shape[0]),
        "faces": [dict(f.to_dict(), selected=any(f is s or np_equal(f, s) for s in selected), **pipeline.mapping_of(f))
                  for f in faces],
        "bytes_written": written,
    }


def _source_text(source: SourceArg | None) -> str | list[str] | None:
    if source is None:
        return None
    if isinstance(source, list | tuple):
        return [str(s) for s in source]
    return str(source)


def np_equal(a: Any, b: Any) -> bool:
    return bool((a.bbox == b.bbox).all())
