"""Probe a video file: container, stream geometry, timing, colour and audio, or a specific InputError."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from sealfuse.engine.errors import MediaTooLargeError, NotMediaError, TruncatedMediaError
from sealfuse.engine.formats import VIDEO_EXTS
from sealfuse.engine.imageio import _open_checked
from sealfuse.engine.options import SwapOptions

__all__ = ["MUXERS", "VIDEO_EXTS", "VideoInfo", "open_input", "probe_video"]

MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    fps: Fraction
    time_base: Fraction
    frames: int  # from the header, or estimated from the duration when the container has no count
    frames_exact: bool
    duration_s: float
    start_pts: int
    rotation: int  # counter-clockwise degrees from the display matrix
    display_matrix: tuple[int, ...] | None
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_streams: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"], d["time_base"] = str(self.fps), str(self.time_base)
        return d


def _looks_like_container(path: Path) -> bool:
    """True when the file starts like an ISO-BMFF (mp4/mov) or Matroska/WebM file."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip") or head[:4] == b"\x1a\x45\xdf\xa3"


def open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if _looks_like_container(path):
            raise TruncatedMediaError(f"{path}: container is truncated or corrupt ({exc})", path=path) from None
        raise NotMediaError(f"{path}: not a video file ({exc})", path=path) from None


def probe_video(path: Path, *, max_pixels: int | None = None, max_frames: int | None = None) -> VideoInfo:
    """Read a video's header and first frame, or raise a specific InputError.

    Zero bytes -> EmptyInputError; not a media file -> NotMediaError; a container that starts
    right but cannot be read, or no decodable first frame -> TruncatedMediaError; more pixels
    per frame than `max_pixels` or more frames than `max_frames` -> MediaTooLargeError (checked
    from the header, before any frame is decoded).
    """
    path = Path(path)
    defaults = SwapOptions.__dataclass_fields__
    max_pixels = max_pixels or int(defaults["max_pixels"].default)  # type: ignore[arg-type]
    max_frames = max_frames or int(defaults["max_frames"].default)  # type: ignore[arg-type]
    _open_checked(path)
    if path.suffix.lower() not in VIDEO_EXTS:
        raise NotMediaError(f"{path}: unsupported video extension {path.suffix!r} (use {', '.join(VIDEO_EXTS)})",
                            path=path)
    with open_input(path) as c:
        family = "matroska" if path.suffix.lower() in (".mkv", ".webm") else "mov"
        if family not in c.format.name.split(","):
            raise NotMediaError(f"{path}: content is {c.format.name}, but the extension says {path.suffix}",
                                path=path, content=c.format.name, extension=path.suffix)
        if not c.streams.video:
            raise NotMediaError(f"{path}: has no video stream", path=path, container=c.format.name)
        vs = c.streams.video[0]
        cc = vs.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            raise TruncatedMediaError(f"{path}: video stream has no dimensions", path=path)
        if w * h > max_pixels:
            raise MediaTooLargeError(f"{path}: {w}x{h} = {w * h} pixels per frame exceeds the limit of {max_pixels}",
                                     path=path, width=w, height=h, limit=max_pixels)
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
        tb = vs.time_base or Fraction(1, 90000)
        if vs.duration:
            duration = float(vs.duration * tb)
        elif c.duration:
            duration = c.duration / 1_000_000
        else:
            duration = 0.0
        frames_exact = bool(vs.frames)
        frames = int(vs.frames) if frames_exact else round(duration * float(fps))
        if frames > max_frames:
            raise MediaTooLargeError(f"{path}: {frames} frames exceeds the limit of {max_frames}",
                                     path=path, frames=frames, limit=max_frames)
        vs.thread_type = "AUTO"
        first = None
        try:
            for packet in c.demux(vs):
                for frame in packet.decode():
                    first = frame
                    break
                if first is not None:
                    break
        except av.error.FFmpegError as exc:
            raise TruncatedMediaError(f"{path}: first frame cannot be decoded ({exc})", path=path) from None
        if first is None:
            raise TruncatedMediaError(f"{path}: no decodable video frame", path=path)
        matrix = None
        for sd in first.side_data:
            if str(sd.type).endswith("DISPLAYMATRIX"):
                matrix = tuple(int(v) for v in np.frombuffer(bytes(sd), np.int32))
        a = c.streams.audio[0] if c.streams.audio else None
        return VideoInfo(
            path=str(path), container=c.format.name, codec=cc.name, width=w, height=h, pix_fmt=cc.pix_fmt,
            fps=Fraction(fps), time_base=Fraction(tb), frames=frames, frames_exact=frames_exact,
            duration_s=duration, start_pts=int(vs.start_time or 0), rotation=int(first.rotation or 0),
            display_matrix=matrix,
            color_range=int(first.color_range or cc.color_range or 0),
            colorspace=int(first.colorspace or cc.colorspace or 2),
            color_primaries=int(first.color_primaries or cc.color_primaries or 2),
            color_trc=int(first.color_trc or cc.color_trc or 2),
            audio_codec=a.codec_context.name if a else None,
            audio_sample_rate=int(a.codec_context.sample_rate) if a else None,
            audio_channels=int(a.codec_context.channels) if a else None,
            audio_streams=len(c.streams.audio),
        )

