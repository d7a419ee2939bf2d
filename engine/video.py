"""Streaming video swap: decode -> track -> render -> encode in memory with bounded queues.

No decoded frame, crop or embedding ever touches the disk. The output is muxed into a dotfile
`.<name>.<pid>.partial` beside it, fsynced and renamed on success, and removed on any failure or
interrupt. Audio is copied packet for packet when the output container accepts its codec.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from sealfuse.engine import yuv as yuvlib
from sealfuse.engine.errors import (
    ConfigError,
    EngineError,
    MediaTooLargeError,
    NotMediaError,
    OutputError,
    TruncatedMediaError,
)
from sealfuse.engine.face import Face
from sealfuse.engine.imageio import _open_checked
from sealfuse.engine.options import VIDEO_ENCODERS, SwapOptions
from sealfuse.engine.track import FaceTracker, TrackSelector

if TYPE_CHECKING:
    from sealfuse.engine.pipeline import Pipeline

__all__ = ["VIDEO_EXTS", "Cancelled", "VideoInfo", "available_encoders", "probe_video", "progress_printer",
           "swap_video", "transcode_video"]

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm")
MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p3",
                 "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7", "placebo": "p7"}
# libswscale colourspace constants by AVColorSpace value (frame.colorspace)
_SWS_CS = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_SENTINEL = object()
# Detection runs on a copy scaled so its long side is at most this many pixels (the tracker carries
# faces in between): about 3x cheaper than full size at 1280x720. MTCNN's smallest face is 20 px in
# the copy, so faces under about 40 px at 720p, 60 px at 1080p, 120 px at 4K are not found; pass
# detect_max_side=None to detect at full size.
DETECT_MAX_SIDE = 640
Progress = Callable[[dict[str, Any]], None]


class Cancelled(KeyboardInterrupt):  # noqa: N818 - it is an interrupt, and `except KeyboardInterrupt` catches it
    """The job was cancelled (the `cancel` event, SIGINT or SIGTERM); no output was left behind."""


# -- probing -----------------------------------------------------------------------------------------
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


def _open_input(path: Path) -> av.container.InputContainer:
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
    with _open_input(path) as c:
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


# -- encoder plan ------------------------------------------------------------------------------------
def _codec_exists(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def available_encoders() -> list[str]:
    """The sealfuse video encoders this PyAV/FFmpeg build contains."""
    return [e for e in VIDEO_ENCODERS if _codec_exists(e)]


@dataclass(frozen=True)
class EncoderPlan:
    codec: str
    pix_fmt: str
    options: dict[str, str]
    crf: int
    warnings: tuple[str, ...] = ()


def quality_to_crf(quality: int, top: int = 51) -> int:
    """output_video_quality 0..100 -> CRF top..0 (FaceFusion's mapping: 80 -> 10 for x264)."""
    return round(top - quality * top / 100)


def plan_encoder(options: SwapOptions, output: Path, width: int, height: int) -> EncoderPlan:
    enc = options.output_video_encoder
    if enc not in VIDEO_ENCODERS:
        raise ConfigError(f"unknown video encoder {enc!r}; choose from {', '.join(VIDEO_ENCODERS)}", encoder=enc)
    have = available_encoders()
    if enc not in have:
        raise ConfigError(f"video encoder {enc} is not available in this PyAV build; available: "
                          f"{', '.join(have) or 'none'}", encoder=enc, available=have)
    q = options.output_video_quality
    if not 0 <= q <= 100:
        raise ConfigError("--output-video-quality must be within 0..100", quality=q)
    preset = options.output_video_preset
    if preset not in X26X_PRESETS:
        raise ConfigError(f"unknown --output-video-preset {preset!r}; choose from {', '.join(X26X_PRESETS)}",
                          preset=preset)
    warnings: list[str] = []
    odd = width % 2 or height % 2
    pix_fmt = "yuv444p" if odd else "yuv420p"
    if odd:
        warnings.append(f"odd frame size {width}x{height}: encoded as {pix_fmt} to keep every pixel "
                        "(4:2:0 needs even dimensions); some players cannot play 4:4:4")
    if output.suffix.lower() == ".webm":
        if not _codec_exists("libvpx-vp9"):
            raise ConfigError("a .webm output needs the libvpx-vp9 encoder, which this PyAV build lacks")
        warnings.append(f"the WebM container takes VP9, not {enc}: encoded with libvpx-vp9")
        crf = quality_to_crf(q, 63)
        speed = {"ultrafast": "8", "superfast": "8", "veryfast": "7", "faster": "6", "fast": "5"}.get(preset, "4")
        return EncoderPlan("libvpx-vp9", "yuv420p" if not odd else "yuv444p",
                           {"crf": str(crf), "b": "0", "deadline": "realtime" if speed >= "6" else "good",
                            "cpu-used": speed, "row-mt": "1"}, crf, tuple(warnings))
    crf = quality_to_crf(q)
    if enc in ("libx264", "libx265"):
        opts = {"crf": str(crf), "preset": preset}
        if enc == "libx265":
            opts["x265-params"] = "log-level=error"
        return EncoderPlan(enc, pix_fmt, opts, crf, tuple(warnings))
    return EncoderPlan(enc, pix_fmt, {"preset": NVENC_PRESETS[preset], "rc": "vbr", "cq": str(max(1, crf)), "b": "0"},
                       crf, tuple(warnings))


# -- progress ----------------------------------------------------------------------------------------
def progress_printer(json: bool = False, stream: Any = None) -> Progress:
    """A progress callback for the CLI: JSON lines with `json`, else a bar on a TTY, else a line every 2 s.

    Output goes to stderr (stdout keeps the final report). The bar is tqdm's when it is installed.
    """
    out = stream or sys.stderr
    if json:
        def emit_json(p: dict[str, Any]) -> None:
            out.write(jsonlib.dumps({"progress": p}) + "\n")
            out.flush()
        return emit_json
    tty = hasattr(out, "isatty") and out.isatty()
    if tty:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with insightface
            tqdm = None
        if tqdm is not None:
            bar: dict[str, Any] = {}

            def emit_bar(p: dict[str, Any]) -> None:
                if "bar" not in bar:
                    bar["bar"] = tqdm(total=p.get("total") or None, unit="frame", file=out, dynamic_ncols=True)
                b = bar["bar"]
                b.update(p["frame"] - b.n)
                if p.get("done"):
                    b.close()
            return emit_bar
    last = [0.0]

    def emit_line(p: dict[str, Any]) -> None:
        now = time.monotonic()
        if not p.get("done") and now - last[0] < (0.25 if tty else 2.0):
            return
        last[0] = now
        total = p.get("total") or 0
        pct = f" ({100 * p['frame'] / total:.0f}%)" if total else ""
        eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") is not None else ""
        lead = "\r" if tty else ""
        tail = "" if tty and not p.get("done") else "\n"
        out.write(f"{lead}frame {p['frame']}/{total or '?'}{pct} {p['fps']:.1f} fps{eta}{tail}")
        out.flush()
    return emit_line


# -- audio -------------------------------------------------------------------------------------------
class _Audio:
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

    def feed_until(self, t: float) -> None:
        """Mux every audio packet that starts before `t` seconds (input time)."""
        while not self._done:
            p = self._pending or next(self._iter, None)
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
                p.pts -= self.offset
                if p.dts is not None:
                    p.dts -= self.offset
                p.stream = self.ost
                self.out.mux(p)
                self.packets_copied += 1
            else:
                for frame in p.decode():
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


# -- the job -----------------------------------------------------------------------------------------
@dataclass
class _Meta:
    index: int
    pts: int | None
    time: float
    duration: int | None = None


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Blocking put that gives up when the job stops (backpressure without deadlock)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _SENTINEL


def detect_scaled(pipeline: Pipeline, frame: np.ndarray, max_side: int | None) -> list[Face]:
    """pipeline.detect on a copy whose long side is at most `max_side`; boxes and landmarks in frame pixels."""
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return pipeline.detect(frame)
    import cv2

    s = max_side / max(h, w)
    small = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    back = np.array([w / small.shape[1], h / small.shape[0]], np.float32)
    return [f.with_(bbox=(f.bbox.reshape(2, 2) * back).reshape(4), kps=f.kps * back) for f in pipeline.detect(small)]


def _done(value: Any) -> Future[Any]:
    f: Future[Any] = Future()
    f.set_result(value)
    return f


class _Busy:
    """Busy time per thread stage (milliseconds)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1000


class _Job:
    def __init__(self, pipeline: Pipeline | None, info: VideoInfo, target: Path, tmp: Path, output: Path,
                 options: SwapOptions, progress: Progress | None, cancel: threading.Event | None,
                 detect_max_side: int | None = DETECT_MAX_SIDE) -> None:
        self.detect_max_side = detect_max_side
        self.pipeline, self.info, self.target, self.tmp, self.output = pipeline, info, target, tmp, output
        self.o = options
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.warnings: list[str] = []
        self.busy = _Busy()
        workers = max(1, min(options.execution_threads, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sealfuse-render")
        self.q_frames: queue.Queue[Any] = queue.Queue(maxsize=2 * workers + 2)
        self.q_render: queue.Queue[Any] = queue.Queue(maxsize=2 * workers + 4)
        self.start = options.trim_frame_start or 0
        self.end = options.trim_frame_end
        self.decoded = 0
        self.encoded = 0
        self.frames_with_swaps = 0
        self.tracks_seen: set[int] = set()
        self.t0: float | None = None
        self.pts0: int | None = None
        self.audio_mode = "none"
        self.audio_packets = 0
        self.plan = plan_encoder(options, output, info.width, info.height)
        self.warnings.extend(self.plan.warnings)
        # Fast path: keep each frame's yuv420p planes, convert back only the pixels a blend
        # touched. Untouched pixels (and frames without faces) pass through bit-exact.
        self.fast = (info.pix_fmt in yuvlib.FAST_PIX_FMTS and self.plan.pix_fmt == "yuv420p"
                     and info.width % 2 == 0 and info.height % 2 == 0)
        self.matrix = yuvlib.YuvMatrix.for_stream(info.colorspace, info.color_range == 2)

    # each stage records its first exception and stops the others
    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self.errors.append(exc)
                self.stop.set()
        return run

    def _decode(self) -> None:
        info, n = self.info, max(1, self.o.detect_every)
        i = 0
        last_time = 0.0
        src_range = info.color_range if info.color_range else None
        src_cs = _SWS_CS.get(info.colorspace)
        with _open_input(self.target) as c, self.busy("decode"):
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            tb = vs.time_base
            try:
                for packet in c.demux(vs):
                    for frame in packet.decode():
                        if self.stop.is_set():
                            return
                        if frame.is_corrupt:
                            raise TruncatedMediaError(f"{self.target}: frame {i} is corrupt", path=self.target, frame=i)
                        if i >= self.o.max_frames:
                            raise MediaTooLargeError(f"{self.target}: more than {self.o.max_frames} frames",
                                                     path=self.target, limit=self.o.max_frames)
                        t = float(frame.pts * tb) if frame.pts is not None else i / float(info.fps)
                        last_time = t
                        if i < self.start or (self.end is not None and i >= self.end):
                            i += 1
                            continue
                        yuv = (frame.to_ndarray() if self.fast and frame.format.name in yuvlib.FAST_PIX_FMTS
                               else None)
                        bgr = (frame.to_ndarray(format="bgr24", src_colorspace=src_cs, src_color_range=src_range)
                               if self.pipeline is not None or yuv is None else None)
                        if self.t0 is None:
                            self.t0, self.pts0 = t, frame.pts
                        det = (self.pool.submit(detect_scaled, self.pipeline, bgr, self.detect_max_side)
                               if self.pipeline is not None and (i - self.start) % n == 0 else None)
                        if not _put(self.q_frames, (_Meta(i, frame.pts, t, frame.duration or None), bgr, det, yuv), self.stop):
                            return
                        i += 1
            except av.error.FFmpegError as exc:
                raise TruncatedMediaError(f"{self.target}: video data is truncated or corrupt at frame {i} ({exc})",
                                          path=self.target, frame=i) from None
        self.decoded = i
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
        _put(self.q_frames, _SENTINEL, self.stop)

    def _track(self) -> None:
        p = self.pipeline
        tracker = FaceTracker()
        selector = TrackSelector(self.o.face_selector_mode, p.select) if p is not None else None
        while True:
            item = _get(self.q_frames, self.stop)
            if item is _SENTINEL:
                _put(self.q_render, _SENTINEL, self.stop)
                return
            meta, bgr, det, yuv = item
            chosen: list[Face] = []
            if p is not None and selector is not None:
                faces_found = det.result() if det is not None else None
                with self.busy("track"):
                    if faces_found is not None:
                        faces = tracker.detect(bgr, faces_found, meta.time)
                    else:
                        faces = tracker.follow(bgr, meta.time)
                    chosen = selector.choose(faces, bgr, detect_frame=det is not None, alive=tracker.ids())
                self.tracks_seen.update(f.track_id for f in faces if f.track_id is not None)
            if chosen and p is not None:
                fut = (self.pool.submit(self._render_yuv, p, bgr, yuv, chosen) if yuv is not None
                       else self.pool.submit(lambda f=bgr, c=chosen: ("bgr", p.render(f, c))))
            else:
                fut = _done(("yuv", yuv) if yuv is not None else ("bgr", bgr))
            if chosen:
                self.frames_with_swaps += 1
            if not _put(self.q_render, (meta, fut), self.stop):
                return

    def _encode(self, out: av.container.OutputContainer, vst: Any, audio: _Audio | None) -> None:
        info = self.info
        dst_cs = _SWS_CS.get(info.colorspace)
        dst_range = info.color_range or None
        started = time.monotonic()
        last_report = 0.0
        total = self._total()
        first_frame = True
        while True:
            item = _get(self.q_render, self.stop)
            if item is _SENTINEL:
                break
            meta, fut = item
            kind, pixels = fut.result()
            with self.busy("encode"):
                if kind == "yuv":
                    vf = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
                else:
                    vf = av.VideoFrame.from_ndarray(pixels, format="bgr24")
                    vf = vf.reformat(format=self.plan.pix_fmt, dst_colorspace=dst_cs, dst_color_range=dst_range)
                vf.pts = (meta.pts - (self.pts0 or 0) if self.start else meta.pts) if meta.pts is not None \
                    else self.encoded
                vf.time_base = info.time_base
                if meta.duration:
                    # the source frame's own duration, so the muxer need not guess the last one
                    vf.duration = meta.duration
                try:
                    packets = vst.encode(vf)
                except av.error.FFmpegError as exc:
                    if first_frame:
                        raise ConfigError(f"video encoder {self.plan.codec} cannot be opened here ({exc}); "
                                          f"available in this build: {', '.join(available_encoders())}",
                                          encoder=self.plan.codec) from None
                    raise
                first_frame = False
                out.mux(packets)
                if audio is not None:
                    audio.feed_until(meta.time)
            self.encoded += 1
            now = time.monotonic()
            if self.progress is not None and now - last_report >= 0.2:
                last_report = now
                self.progress(self._progress(started, total))
            if self.cancel.is_set():
                self.stop.set()
                return
        if self.stop.is_set():
            return
        with self.busy("encode"):
            out.mux(vst.encode(None))
            if audio is not None:
                audio.feed_until(math.inf)
        if self.progress is not None:
            self.progress({**self._progress(started, total), "done": True})

    def _render_yuv(self, p: Pipeline, bgr: np.ndarray, yuv: np.ndarray, faces: list[Face]) -> tuple[str, np.ndarray]:
        out, touched = p.render_touched(bgr, faces)
        planes = yuv.copy()
        h, w = self.info.height, self.info.width
        for box, alpha in touched:
            yuvlib.write_back(planes, h, w, out, box, alpha, self.matrix)
        return "yuv", planes

    def _total(self) -> int:
        end = self.end if self.end is not None else self.info.frames
        return max(0, min(end, self.info.frames) - self.start)

    def _progress(self, started: float, total: int) -> dict[str, Any]:
        el = max(1e-6, time.monotonic() - started)
        fps = self.encoded / el
        eta = (total - self.encoded) / fps if fps > 0 and total >= self.encoded else None
        return {"frame": self.encoded, "total": total, "fps": round(fps, 2),
                "eta_s": None if eta is None else round(eta, 1)}

    def run(self) -> dict[str, Any]:
        info, o = self.info, self.o
        if self.end is not None and self.end <= self.start:
            raise ConfigError(f"--trim-frame-end {self.end} must be above --trim-frame-start {self.start}")
        if self.start >= info.frames > 0 and info.frames_exact:
            raise ConfigError(f"--trim-frame-start {self.start} is beyond the last frame ({info.frames} frames)",
                              frames=info.frames)
        t_wall = time.perf_counter()
        ext = self.output.suffix.lower()
        try:
            out = av.open(str(self.tmp), "w", format=MUXERS[ext])
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.output}: cannot create the output ({exc})", path=self.output) from None
        audio: _Audio | None = None
        threads: list[threading.Thread] = []
        try:
            vst = out.add_stream(self.plan.codec, rate=info.fps, options=self.plan.options)
            vst.width, vst.height, vst.pix_fmt = info.width, info.height, self.plan.pix_fmt
            vst.time_base = info.time_base
            cc = vst.codec_context
            cc.time_base = info.time_base
            cc.framerate = info.fps
            cc.thread_type = "AUTO"
            cc.color_range, cc.colorspace = info.color_range, info.colorspace
            cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
            if info.display_matrix is not None:
                vst.set_display_matrix(info.display_matrix)
            if info.audio_codec is not None:
                t0 = self.start / float(info.fps) + info.start_pts * float(info.time_base) if self.start else 0.0
                t1 = (self.end / float(info.fps) + info.start_pts * float(info.time_base)) if self.end else None
                audio = _Audio(self.target, out, ext, t0, t1)
                self.audio_mode = audio.mode
                if audio.warning:
                    self.warnings.append(audio.warning)
            threads = [threading.Thread(target=self._guard(self._decode), name="sealfuse-decode", daemon=True),
                       threading.Thread(target=self._guard(self._track), name="sealfuse-track", daemon=True),
                       threading.Thread(target=self._guard(lambda: self._encode(out, vst, audio)),
                                        name="sealfuse-encode", daemon=True)]
            for t in threads:
                t.start()
            encoder = threads[2]
            while encoder.is_alive():
                encoder.join(timeout=0.1)
                if self.cancel.is_set():
                    self.stop.set()
            self.stop.set()
            for t in threads:
                t.join()
            if self.errors:
                raise self.errors[0]
            if self.cancel.is_set():
                raise Cancelled()
            if audio is not None:
                self.audio_packets = audio.packets_copied
        except BaseException:
            self.stop.set()
            for t in threads:
                t.join(timeout=30)
            self.pool.shutdown(wait=True, cancel_futures=True)
            with contextlib.suppress(Exception):
                out.close()
            if audio is not None:
                audio.close()
            raise
        self.pool.shutdown(wait=True)
        try:
            out.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.output}: cannot finish writing ({exc})", path=self.output) from None
        finally:
            if audio is not None:
                audio.close()
        if self.pipeline is not None and self.frames_with_swaps == 0:
            self.warnings.append("no face was selected in any frame: the video was re-encoded unchanged")
        wall = time.perf_counter() - t_wall
        return {
            "kind": "video", "frames": self.encoded, "frames_decoded": self.decoded,
            "frames_with_swaps": self.frames_with_swaps, "tracks": len(self.tracks_seen),
            "fps": float(info.fps), "time_base": str(info.time_base),
            "width": info.width, "height": info.height, "rotation": info.rotation,
            "encoder": self.plan.codec, "crf": self.plan.crf, "pix_fmt": self.plan.pix_fmt,
            "detect_every": o.detect_every, "detect_max_side": self.detect_max_side, "audio": self.audio_mode, "audio_packets_copied": self.audio_packets,
            "throughput_fps": round(self.encoded / wall, 2) if wall > 0 else None,
            "warnings": self.warnings,
            "timings_ms": {f"video_{k}": round(v, 1) for k, v in self.busy.ms.items()} | {"video_wall": round(wall * 1000, 1)},
        }


def _partial_name(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.{threading.get_ident()}.partial")


def _commit(tmp: Path, output: Path) -> int:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, output)
    dfd = os.open(output.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return output.stat().st_size


def _run(pipeline: Pipeline | None, options: SwapOptions, target: Path, output: Path,
         progress: Progress | None, cancel: threading.Event | None,
         detect_max_side: int | None = DETECT_MAX_SIDE) -> dict[str, Any]:
    target, output = Path(target), Path(output)
    if output.suffix.lower() not in VIDEO_EXTS:
        raise OutputError(f"{output}: unsupported video extension {output.suffix!r} (use {', '.join(VIDEO_EXTS)})",
                          path=output)
    if not output.parent.is_dir():
        raise OutputError(f"{output}: output directory {output.parent} does not exist", path=output)
    info = probe_video(target, max_pixels=options.max_pixels, max_frames=options.max_frames)
    tmp = _partial_name(output)
    job = _Job(pipeline, info, target, tmp, output, options, progress, cancel, detect_max_side)
    try:
        report = job.run()
        report["bytes_written"] = _commit(tmp, output)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, EngineError | KeyboardInterrupt):
            raise
        if isinstance(exc, av.error.FFmpegError):
            raise OutputError(f"{output}: video processing failed ({exc})", path=output) from exc
        raise
    report["source_video"] = info.to_dict()
    return report


def swap_video(pipeline: Pipeline, target: Path, output: Path, *, progress: Progress | None = None,
               cancel: threading.Event | None = None, detect_max_side: int | None = DETECT_MAX_SIDE
               ) -> dict[str, Any]:
    """Swap faces in every frame of `target` into `output` (written atomically; nothing else on disk).

    Returns a report: frames, fps, audio ("copied" | "reencoded" | "none"), warnings, timings_ms.
    Raises InputError subclasses for bad input, ConfigError for unusable encoder options, and
    `Cancelled` (a KeyboardInterrupt) when `cancel` is set; in every failure no output exists.
    """
    return _run(pipeline, pipeline.options, target, output, progress, cancel, detect_max_side)


def transcode_video(options: SwapOptions, target: Path, output: Path, *, progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> dict[str, Any]:
    """Decode and re-encode with the same machinery and encoder settings, no faces touched (a baseline)."""
    return _run(None, options, target, output, progress, cancel)
