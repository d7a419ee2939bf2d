"""Streaming video swap: decode -> track -> render -> encode in memory with bounded queues.

No decoded frame, crop or embedding ever touches the disk. The output is muxed into a dotfile
`.<name>.<pid>.<tid>.partial` beside it and committed by `fsio.commit_partial` (fsync, rename) on
success, and removed on any failure or interrupt. Audio is copied packet for packet when the output
container accepts its codec. The parts live in `video_probe`, `video_encoder`, `video_audio`,
`video_stream` (decoding) and `video_job` (the threads); this module is the front door.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from sealfuse.engine.errors import EngineError, OutputError, TruncatedMediaError
from sealfuse.engine.fsio import commit_partial, partial_name
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.video_encoder import (
    EncoderPlan,
    available_encoders,
    plan_encoder,
    quality_to_crf,
)
from sealfuse.engine.video_job import DETECT_MAX_SIDE, Cancelled, Progress, VideoJob, detect_scaled
from sealfuse.engine.video_probe import VIDEO_EXTS, VideoInfo, probe_video

if TYPE_CHECKING:
    from sealfuse.engine.pipeline import Pipeline

__all__ = ["DETECT_MAX_SIDE", "VIDEO_EXTS", "Cancelled", "EncoderPlan", "Progress", "VideoInfo",
           "available_encoders", "detect_scaled", "plan_encoder", "probe_video", "quality_to_crf",
           "swap_video", "transcode_video"]


# Errors of the output's own filesystem: the only FFmpeg errors blamed on the output.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EFBIG)


def _run(pipeline: Pipeline | None, options: SwapOptions, target: Path, output: Path,
         progress: Progress | None, cancel: threading.Event | None,
         detect_max_side: int | None = DETECT_MAX_SIDE,
         before_commit: Callable[[Path], None] | None = None) -> dict[str, Any]:
    target, output = Path(target), Path(output)
    if output.suffix.lower() not in VIDEO_EXTS:
        raise OutputError(f"{output}: unsupported video extension {output.suffix!r} (use {', '.join(VIDEO_EXTS)})",
                          path=output)
    if not output.parent.is_dir():
        raise OutputError(f"{output}: output directory {output.parent} does not exist", path=output)
    info = probe_video(target, max_pixels=options.max_pixels, max_frames=options.max_frames)
    tmp = partial_name(output)
    job = VideoJob(pipeline, info, target, tmp, output, options, progress, cancel, detect_max_side)
    try:
        report = job.run()
        report["bytes_written"] = commit_partial(tmp, output, before_commit)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, EngineError | KeyboardInterrupt):
            raise
        if isinstance(exc, av.error.FFmpegError):
            if getattr(exc, "errno", None) in OUTPUT_ERRNOS:
                raise OutputError(f"{output}: video processing failed ({exc})", path=output) from exc
            # Decoding errors are mapped where frames are read; what reaches the muxer or encoder
            # here (timestamps that go backwards, packets it refuses) comes from the input.
            raise TruncatedMediaError(f"{target}: the input's packets or timestamps are corrupt; its "
                                      f"frames cannot be written out ({exc})", path=target) from exc
        raise
    report["source_video"] = info.to_dict()
    return report


def swap_video(pipeline: Pipeline, target: Path, output: Path, *, progress: Progress | None = None,
               cancel: threading.Event | None = None, detect_max_side: int | None = DETECT_MAX_SIDE,
               before_commit: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Swap faces in every frame of `target` into `output` (written atomically; nothing else on disk).

    Returns a report: frames, fps, audio ("copied" | "reencoded" | "none"), warnings, timings_ms.
    Raises InputError subclasses for bad input, ConfigError for unusable encoder options, and
    `Cancelled` (a KeyboardInterrupt) when `cancel` is set; in every failure no output exists.
    `before_commit` runs on the finished temp file before the rename (signing).
    """
    return _run(pipeline, pipeline.options, target, output, progress, cancel, detect_max_side, before_commit)


def transcode_video(options: SwapOptions, target: Path, output: Path, *, progress: Progress | None = None,
                    cancel: threading.Event | None = None,
                    before_commit: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Decode and re-encode with the same machinery and encoder settings, no faces touched (a baseline)."""
    return _run(None, options, target, output, progress, cancel, before_commit=before_commit)
