"""The frame stream: a video's frames decoded in order, checked for corruption, size and truncation."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sealfuse.engine.errors import MediaTooLargeError, TruncatedMediaError
from sealfuse.engine.video_probe import VideoInfo, open_input

__all__ = ["SWS_COLORSPACE", "FrameMeta", "FrameStream"]

# libswscale colourspace constants by AVColorSpace value (frame.colorspace)
SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


@dataclass
class FrameMeta:
    """Where a decoded frame sits in its stream: index, pts (stream time base), seconds, duration."""

    index: int
    pts: int | None
    time: float
    duration: int | None = None


class FrameStream:
    """Iterate `(FrameMeta, av.VideoFrame)` over frames `start..end` of `target`.

    Every frame up to `end` is decoded (and counted in `decoded`); frames before `start` are
    skipped. Raises TruncatedMediaError for a corrupt frame, fewer frames than the header promised
    or a stream that ends well before its stated duration, and MediaTooLargeError past
    `max_frames`. Stopping the iteration early (closing the generator) skips the end checks.
    """

    def __init__(self, target: Path, info: VideoInfo, *, max_frames: int, start: int = 0,
                 end: int | None = None) -> None:
        self.target, self.info = target, info
        self.max_frames, self.start, self.end = max_frames, start, end
        self.decoded = 0
        self.src_colorspace = SWS_COLORSPACE.get(info.colorspace)
        self.src_range = info.color_range if info.color_range else None

    def to_bgr(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as BGR24 pixels, converted with the stream's own colourspace and range."""
        return frame.to_ndarray(format="bgr24", src_colorspace=self.src_colorspace, src_color_range=self.src_range)

    def __iter__(self) -> Generator[tuple[FrameMeta, av.VideoFrame], None, None]:
        info = self.info
        i = 0
        last_time = 0.0
        with open_input(self.target) as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            tb = vs.time_base
            try:
                for packet in c.demux(vs):
                    for frame in packet.decode():
                        if frame.is_corrupt:
                            raise TruncatedMediaError(f"{self.target}: frame {i} is corrupt", path=self.target, frame=i)
                        if i >= self.max_frames:
                            raise MediaTooLargeError(f"{self.target}: more than {self.max_frames} frames",
                                                     path=self.target, limit=self.max_frames)
                        t = float(frame.pts * tb) if frame.pts is not None else i / float(info.fps)
                        last_time = t
                        index = i
                        i += 1
                        self.decoded = i
                        if index < self.start or (self.end is not None and index >= self.end):
                            continue
                        yield FrameMeta(index, frame.pts, t, frame.duration or None), frame
            except av.error.FFmpegError as exc:
                raise TruncatedMediaError(f"{self.target}: video data is truncated or corrupt at frame {i} ({exc})",
                                          path=self.target, frame=i) from None
        if info.frames_exact and i < info.frames:
            raise TruncatedMediaError(f"{self.target}: only {i} of {info.frames} frames could be decoded",
                                      path=self.target, decoded=i, expected=info.frames)
        if not info.frames_exact and info.duration_s > 0:
            frame_s = 1.0 / float(info.fps)
            start_s = info.start_pts * float(info.time_base)
            if last_time + frame_s < start_s + info.duration_s - max(3 * frame_s, 0.05 * info.duration_s):
                raise TruncatedMediaError(
                    f"{self.target}: video ends at {last_time:.2f}s but its header says {info.duration_s:.2f}s",
                    path=self.target, decoded=i, ends_s=round(last_time, 3), duration_s=info.duration_s)
