"""Audio for a video output: the first audio stream copied packet for packet, else re-encoded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av

from sealfuse.engine.errors import TruncatedMediaError
from sealfuse.engine.video_probe import MUXERS

__all__ = ["AudioFeed"]


class AudioFeed:
    """Feeds the first audio stream into the output in time order: packet copy, else re-encode."""

    def __init__(self, target: Path, out: av.container.OutputContainer, ext: str, t0: float, t1: float | None) -> None:
        self.inp = av.open(str(target), metadata_errors="ignore")
        self.ist = self.inp.streams.audio[0]
        self.out = out
        self.t0, self.t1 = t0, t1
        self.warning: str | None = None
        self.packets_copied = 0
        try:
            self.ost = out.add_stream_from_template(self.ist)
            self.mode = "copied"
        except ValueError:
            codec = "libopus" if ext == ".webm" else "aac"
            rate = self.ist.codec_context.sample_rate
            if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            self.ost = out.add_stream(codec, rate=rate)
            self.ost.layout = self.ist.codec_context.layout
            self.mode = "reencoded"
            self.warning = (f"the {MUXERS[ext]} container does not take {self.ist.codec_context.name} audio: "
                            f"re-encoded to {codec}")
        self.tb = self.ist.time_base
        self.offset = round(t0 / self.tb) if t0 > 0 else 0
        self._iter: Iterator[av.Packet] = self.inp.demux(self.ist)
        self._pending: av.Packet | None = None
        self._done = False
        self._last_dts: int | None = None

    def _corrupt(self, what: str, **evidence: object) -> TruncatedMediaError:
        return TruncatedMediaError(f"{self.inp.name}: the audio stream is corrupt ({what})", path=self.inp.name,
                                   stream="audio", **evidence)

    def _next(self) -> av.Packet | None:
        try:
            return next(self._iter, None)
        except av.error.FFmpegError as exc:  # the input's audio, not the output, is at fault
            raise self._corrupt(f"cannot demux: {exc}") from None

    def feed_until(self, t: float) -> None:
        """Mux every audio packet that starts before `t` seconds (input time)."""
        while not self._done:
            p = self._pending or self._next()
            self._pending = None
            if p is None:
                self._finish()
                return
            if p.pts is None or p.size == 0:
                continue
            pt = float(p.pts * self.tb)
            if pt > t:
                self._pending = p
                return
            if self.t0 > 0 and pt < self.t0 - 1e-9:
                continue  # before the trimmed start (without a trim, priming packets at pts < 0 are kept)
            if self.t1 is not None and pt >= self.t1:
                self._finish()
                return
            if self.mode == "copied":
                if p.dts is not None:
                    if self._last_dts is not None and p.dts <= self._last_dts:
                        # the muxer would refuse it (and the output would be blamed)
                        raise self._corrupt(f"timestamps go backwards: dts {p.dts} after {self._last_dts}",
                                            dts=p.dts, previous_dts=self._last_dts)
                    self._last_dts = p.dts
                p.pts -= self.offset
                if p.dts is not None:
                    p.dts -= self.offset
                p.stream = self.ost
                self.out.mux(p)
                self.packets_copied += 1
            else:
                try:
                    frames = p.decode()
                except av.error.FFmpegError as exc:
                    raise self._corrupt(f"cannot decode: {exc}") from None
                for frame in frames:
                    frame.pts = None
                    for q in self.ost.encode(frame):
                        self.out.mux(q)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self.mode == "reencoded":
            for q in self.ost.encode(None):
                self.out.mux(q)

    def close(self) -> None:
        self.inp.close()

