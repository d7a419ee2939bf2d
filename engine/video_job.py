"""One video job: decode -> track -> render -> encode on threads joined by bounded queues."""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from sealfuse.engine import yuv as yuvlib
from sealfuse.engine.errors import ConfigError, OutputError
from sealfuse.engine.face import Face
from sealfuse.engine.label import Label
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import StageTimer
from sealfuse.engine.track import FaceTracker, MeshSmoother
from sealfuse.engine.video_audio import AudioFeed
from sealfuse.engine.video_encoder import available_encoders, plan_encoder
from sealfuse.engine.video_probe import MUXERS, VideoInfo
from sealfuse.engine.video_stream import SWS_COLORSPACE, FrameStream

if TYPE_CHECKING:
    from sealfuse.engine.pipeline import Pipeline

__all__ = ["DETECT_MAX_SIDE", "Cancelled", "Progress", "VideoJob", "detect_scaled"]

_SENTINEL = object()
# Detection runs on a copy scaled so its long side is at most this many pixels (the tracker carries
# faces in between): about 3x cheaper than full size at 1280x720. Faces much smaller than about
# 1/20 of the copy's long side are not found there (BlazeFace full range sees the copy at 192 px;
# MTCNN's smallest face is 20 px in the copy); pass detect_max_side=None to detect at full size.
DETECT_MAX_SIDE = 640
Progress = Callable[[dict[str, Any]], None]


class Cancelled(KeyboardInterrupt):  # noqa: N818 - it is an interrupt, and `except KeyboardInterrupt` catches it
    """The job was cancelled (the `cancel` event, SIGINT or SIGTERM); no output was left behind."""


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
    """pipeline.detect on a copy whose long side is at most `max_side`; boxes and landmarks in frame pixels.

    No mesh here: the track stage adds it at full size to the faces it follows (every frame).
    """
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return pipeline.detect(frame, mesh=False)
    import cv2

    s = max_side / max(h, w)
    small = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    back = np.array([w / small.shape[1], h / small.shape[0]], np.float32)
    return [f.with_(bbox=(f.bbox.reshape(2, 2) * back).reshape(4), kps=f.kps * back) for f in pipeline.detect(small, mesh=False)]


def _done(value: Any) -> Future[Any]:
    f: Future[Any] = Future()
    f.set_result(value)
    return f


class VideoJob:
    """The threads, queues and counters of one video swap (or transcode) into a temp file."""

    def __init__(self, pipeline: Pipeline | None, info: VideoInfo, target: Path, tmp: Path, output: Path,
                 options: SwapOptions, progress: Progress | None, cancel: threading.Event | None,
                 detect_max_side: int | None = DETECT_MAX_SIDE) -> None:
        self.detect_max_side = detect_max_side
        if pipeline is not None:
            pipeline.for_video()
        self.pipeline, self.info, self.target, self.tmp, self.output = pipeline, info, target, tmp, output
        self.o = options
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.warnings: list[str] = []
        self.busy = StageTimer()
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
        self.stream = FrameStream(target, info, max_frames=options.max_frames, start=self.start, end=self.end)
        self.plan = plan_encoder(options, output, info.width, info.height)
        self.warnings.extend(self.plan.warnings)
        # Fast path: keep each frame's yuv420p planes, convert back only the pixels a blend
        # touched. Untouched pixels (and frames without faces) pass through bit-exact.
        self.fast = (info.pix_fmt in yuvlib.FAST_PIX_FMTS and self.plan.pix_fmt == "yuv420p"
                     and info.width % 2 == 0 and info.height % 2 == 0)
        self.matrix = yuvlib.YuvMatrix.for_stream(info.colorspace, info.color_range == 2)
        # the visible disclosure label, drawn into every frame (in stored orientation)
        self.label = Label(options.label, info.width, info.height, options.label_corner) if options.label else None
        if self.label is not None and info.rotation:
            self.warnings.append(f"the video is displayed rotated by {info.rotation} degrees: the label is drawn "
                                 "in the stored frame and appears rotated with it")

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
        n = max(1, self.o.detect_every)
        stream = self.stream
        frames = iter(stream)
        with contextlib.closing(frames), self.busy.stage("decode"):
            for meta, frame in frames:
                if self.stop.is_set():
                    return
                yuv = (frame.to_ndarray() if self.fast and frame.format.name in yuvlib.FAST_PIX_FMTS else None)
                bgr = stream.to_bgr(frame) if self.pipeline is not None or yuv is None else None
                if self.t0 is None:
                    self.t0, self.pts0 = meta.time, frame.pts
                det = (self.pool.submit(detect_scaled, self.pipeline, bgr, self.detect_max_side)
                       if self.pipeline is not None and (meta.index - self.start) % n == 0 else None)
                if not _put(self.q_frames, (meta, bgr, det, yuv), self.stop):
                    return
        self.decoded = stream.decoded
        _put(self.q_frames, _SENTINEL, self.stop)

    def _track(self) -> None:
        p = self.pipeline
        tracker = FaceTracker()
        smoother = MeshSmoother()
        selector = p.track_selector() if p is not None else None
        while True:
            item = _get(self.q_frames, self.stop)
            if item is _SENTINEL:
                _put(self.q_render, _SENTINEL, self.stop)
                return
            meta, bgr, det, yuv = item
            chosen: list[Face] = []
            if p is not None and selector is not None:
                faces_found = det.result() if det is not None else None
                with self.busy.stage("track"):
                    if faces_found is not None:
                        faces = tracker.detect(bgr, faces_found, meta.time)
                    else:
                        faces = tracker.follow(bgr, meta.time)
                faces = smoother(p.refine(bgr, faces, smoother.priors(faces)), meta.time, alive=tracker.ids())
                with self.busy.stage("track"):
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

    def _encode(self, out: av.container.OutputContainer, vst: Any, audio: AudioFeed | None) -> None:
        info = self.info
        dst_cs = SWS_COLORSPACE.get(info.colorspace)
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
            if self.label is not None:
                with self.busy.stage("label"):
                    pixels = (self.label.apply_yuv(pixels, self.matrix) if kind == "yuv"
                              else self.label.apply_bgr(pixels))
            with self.busy.stage("encode"):
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
        with self.busy.stage("encode"):
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
        audio: AudioFeed | None = None
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
                audio = AudioFeed(self.target, out, ext, t0, t1)
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
            "timings_ms": {f"video_{k}": round(v, 1) for k, v in self.busy.as_dict().items()} | {"video_wall": round(wall * 1000, 1)},
        }


