"""Streaming video swap on real PyAV clips: fidelity, audio copy, errors, cancellation, options."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sealfuse.engine.cli import progress_printer
from sealfuse.engine.errors import (
    ConfigError,
    EmptyInputError,
    MediaTooLargeError,
    NotMediaError,
    TruncatedMediaError,
)
from sealfuse.engine.video import (
    Cancelled,
    available_encoders,
    plan_encoder,
    probe_video,
    quality_to_crf,
    swap_video,
    transcode_video,
)
from tests.starter_models import add_starter
from tests.video.clips import Sprite, audio_digests, decode_frames, hanks_face, make_clip, psnr


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_frames_rate_time_base_and_size_are_preserved_and_faces_swapped(pipeline, face_clip, tmp_path):
    out = tmp_path / "out.mp4"
    report = swap_video(pipeline, face_clip, out)
    src, dst = probe_video(face_clip), probe_video(out)
    assert (dst.frames, dst.fps, dst.time_base, dst.width, dst.height) == \
        (src.frames, src.fps, src.time_base, src.width, src.height) == (20, Fraction(15), src.time_base, 320, 240)
    # Every frame keeps its pts (below); the container's stream duration may differ by a few ticks
    # of the time base when the encoder chooses B-frames (the mp4 edit list shifts by the delay).
    assert abs(dst.duration_s - src.duration_s) < 1e-3
    with av.open(str(face_clip)) as a, av.open(str(out)) as b:
        assert [f.pts for f in a.decode(video=0)] == [f.pts for f in b.decode(video=0)]
    assert report["frames"] == 20 and report["frames_with_swaps"] == 20 and report["tracks"] == 1
    # the face region changed in every frame, far more than the transcode alone changes it
    base = transcode_video(pipeline.options, face_clip, tmp_path / "base.mp4")
    assert base["frames_with_swaps"] == 0
    for a, b in zip(decode_frames(tmp_path / "base.mp4"), decode_frames(out), strict=True):
        changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 30
        assert changed.mean() > 0.02, "the face (a fifth of the frame) should visibly change"
    assert _listing(tmp_path) == ["base.mp4", "out.mp4"], "no partial or temporary file may remain"


def test_aac_audio_packets_are_copied_bit_exact(pipeline, face_clip, tmp_path):
    out = tmp_path / "out.mp4"
    report = swap_video(pipeline, face_clip, out)
    digests = audio_digests(face_clip)
    assert len(digests) > 20
    assert audio_digests(out) == digests
    assert report["audio"] == "copied" and report["audio_packets_copied"] == len(digests)
    with av.open(str(face_clip)) as a, av.open(str(out)) as b:
        pa = [(p.pts, p.duration) for p in a.demux(a.streams.audio[0]) if p.size]
        pb = [(p.pts, p.duration) for p in b.demux(b.streams.audio[0]) if p.size]
    assert pa == pb


def test_opus_in_matroska_is_copied_bit_exact(pipeline, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", audio="libopus", frames=15)
    out = tmp_path / "out.mkv"
    report = swap_video(pipeline, clip, out)
    assert report["audio"] == "copied"
    assert audio_digests(out) == audio_digests(clip) and len(audio_digests(clip)) > 10
    assert probe_video(out).frames == 15


def test_no_audio_in_gives_no_audio_out(pipeline, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", audio=None, frames=10)
    out = tmp_path / "out.mp4"
    report = swap_video(pipeline, clip, out)
    assert report["audio"] == "none"
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1


def test_audio_the_container_refuses_is_reencoded_with_a_warning(pipeline, face_clip, tmp_path):
    out = tmp_path / "out.webm"
    report = swap_video(pipeline, face_clip, out)
    assert report["audio"] == "reencoded"
    assert any("re-encoded to libopus" in w for w in report["warnings"])
    assert any("libvpx-vp9" in w for w in report["warnings"])
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "opus"
        assert c.streams.video[0].codec_context.name == "vp9"
        n = sum(1 for _ in c.decode(video=0))
    assert n == 20


def test_odd_width_and_height_are_kept_exactly(pipeline, tmp_path):
    clip = make_clip(tmp_path / "odd.mp4", width=321, height=241, frames=10, pix_fmt="yuv444p", audio=None)
    out = tmp_path / "out.mp4"
    report = swap_video(pipeline, clip, out)
    info = probe_video(out)
    assert (info.width, info.height, info.frames) == (321, 241, 10)
    assert report["pix_fmt"] == "yuv444p" and any("odd frame size" in w for w in report["warnings"])
    assert all(f.shape == (241, 321, 3) for f in decode_frames(out))


def test_frames_without_faces_pass_through_like_a_plain_transcode(pipeline, tmp_path):
    """First half: no face; second half: a face. Faceless frames match the transcode-only baseline."""
    from tests.video.clips import background, compose

    bg = background(320, 240)
    face = Sprite(hanks_face(), (60, 40), (120, 60), 120)
    # the face enters at frame 9, a detect frame of the default cadence (every 3rd frame)
    clip = make_clip(tmp_path / "in.mp4", frames=18, audio=None,
                     render=lambda i: bg.copy() if i < 9 else compose(bg, [face], (i - 9) / 8))
    report = swap_video(pipeline, clip, tmp_path / "out.mp4")
    transcode_video(pipeline.options, clip, tmp_path / "base.mp4")
    swapped, base = decode_frames(tmp_path / "out.mp4"), decode_frames(tmp_path / "base.mp4")
    assert report["frames_with_swaps"] == 9
    for i in range(9):
        # x264 sees the same pixels until the first face, so those frames come out (near) identical
        assert psnr(swapped[i], base[i]) > 45, i
    assert min(psnr(swapped[i], base[i]) for i in range(9, 18)) < 30


def test_rotation_and_colour_metadata_are_preserved(pipeline, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=8, rotation=90, color_range=2, colorspace=1)
    src = probe_video(clip)
    assert (src.rotation, src.color_range, src.colorspace) == (90, 2, 1)
    out = tmp_path / "out.mov"
    swap_video(pipeline, clip, out)
    dst = probe_video(out)
    assert dst.rotation == 90 and dst.display_matrix == src.display_matrix
    assert (dst.color_range, dst.colorspace, dst.color_primaries, dst.color_trc) == (2, 1, 1, 1)
    # full-range BT.709 decoded both ways: the faceless corner keeps its colour
    a, b = decode_frames(clip)[0], decode_frames(out)[0]
    assert psnr(a[:40, -80:], b[:40, -80:]) > 35


def test_trim_keeps_the_frame_range_and_the_matching_audio(pipeline, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=30)
    out = tmp_path / "out.mp4"
    opts = pipeline.options.with_(trim_frame_start=10, trim_frame_end=25)
    report = transcode_video(opts, clip, out)
    info = probe_video(out)
    assert report["frames"] == info.frames == 15
    with av.open(str(out)) as c:
        first = next(c.decode(video=0))
        assert first.pts == 0
        audio = [p for p in c.demux(c.streams.audio[0]) if p.size]
    seconds = sum(p.duration for p in audio) / 48000
    assert abs(seconds - 1.0) < 0.05  # 15 frames at 15 fps
    src = set(audio_digests(clip))
    assert all(d in src for d in audio_digests(out)), "trimmed audio is still copied, not re-encoded"
    with pytest.raises(ConfigError):
        transcode_video(pipeline.options.with_(trim_frame_start=5, trim_frame_end=5), clip, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


# -- bad input -----------------------------------------------------------------------------------------
def _assert_nothing_written(d: Path, keep: set[str]) -> None:
    assert set(_listing(d)) == keep


def test_truncated_mp4_is_a_truncated_error_and_writes_nothing(pipeline, face_clip, tmp_path):
    bad = tmp_path / "cut.mp4"
    data = face_clip.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedMediaError) as e:
        swap_video(pipeline, bad, tmp_path / "out.mp4")
    assert e.value.evidence["path"] == str(bad)
    _assert_nothing_written(tmp_path, {"cut.mp4"})


def test_truncated_matroska_is_detected_after_streaming_and_leaves_nothing(pipeline, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=30, audio=None)
    bad = tmp_path / "cut.mkv"
    data = clip.read_bytes()
    bad.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(TruncatedMediaError):
        swap_video(pipeline, bad, tmp_path / "out.mkv")
    _assert_nothing_written(tmp_path, {"in.mkv", "cut.mkv"})


def test_corrupt_video_data_is_an_error_and_leaves_nothing(pipeline, face_clip, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    data = bytearray(face_clip.read_bytes())
    mdat = data.find(b"mdat")
    rng = np.random.default_rng(1)
    data[mdat + 200: mdat + 20000] = rng.integers(0, 256, 19800, dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    with pytest.raises(TruncatedMediaError):
        swap_video(pipeline, bad, tmp_path / "out.mp4")
    _assert_nothing_written(tmp_path, {"corrupt.mp4"})


def test_empty_and_non_media_files_get_their_own_errors(pipeline, hanks_png, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_bytes(b"this is not a video\n" * 100)
    with pytest.raises(EmptyInputError):
        swap_video(pipeline, tmp_path / "empty.mp4", tmp_path / "out.mp4")
    with pytest.raises(NotMediaError):
        swap_video(pipeline, tmp_path / "text.mp4", tmp_path / "out.mp4")
    (tmp_path / "image.mp4").write_bytes(Path(hanks_png).read_bytes())  # a PNG named .mp4
    with pytest.raises(NotMediaError) as e:
        swap_video(pipeline, tmp_path / "image.mp4", tmp_path / "out.mp4")
    assert "png" in e.value.evidence["content"]
    _assert_nothing_written(tmp_path, {"empty.mp4", "text.mp4", "image.mp4"})


def test_too_many_pixels_or_frames_is_refused_from_the_header(face_clip, tmp_path):
    with pytest.raises(MediaTooLargeError) as e:
        probe_video(face_clip, max_pixels=320 * 240 - 1)
    assert e.value.evidence["width"] == 320
    with pytest.raises(MediaTooLargeError) as e:
        probe_video(face_clip, max_frames=19)
    assert e.value.evidence["frames"] == 20


# -- options ---------------------------------------------------------------------------------------------
def test_an_encoder_that_cannot_run_here_is_a_config_error_naming_the_available_ones(pipeline, face_clip, tmp_path,
                                                                                      monkeypatch):
    have = available_encoders()
    assert "libx264" in have
    # h264_nvenc is compiled into this build, but there is no NVIDIA device to open it on
    opts = pipeline.options.with_(output_video_encoder="h264_nvenc")
    with pytest.raises(ConfigError) as e:
        transcode_video(opts, face_clip, tmp_path / "out.mp4")
    assert "libx264" in e.value.message and e.value.evidence["encoder"] == "h264_nvenc"
    import sealfuse.engine.video_encoder as v

    with monkeypatch.context() as m:
        m.setattr(v, "_codec_exists", lambda name: name == "libx265")  # as if this build lacked libx264
        with pytest.raises(ConfigError, match="not available in this PyAV build; available: libx265"):
            plan_encoder(opts.with_(output_video_encoder="libx264"), tmp_path / "o.mp4", 320, 240)
    with pytest.raises(ConfigError, match="preset"):
        plan_encoder(opts.with_(output_video_encoder="libx264", output_video_preset="warp9"), tmp_path / "o.mp4",
                     320, 240)
    _assert_nothing_written(tmp_path, set())


def test_quality_maps_to_crf_and_lower_quality_writes_fewer_bytes(pipeline, face_clip, tmp_path):
    assert (quality_to_crf(0), quality_to_crf(80), quality_to_crf(100)) == (51, 10, 0)
    lo = transcode_video(pipeline.options.with_(output_video_quality=20), face_clip, tmp_path / "lo.mp4")
    hi = transcode_video(pipeline.options.with_(output_video_quality=90), face_clip, tmp_path / "hi.mp4")
    assert lo["crf"] == 41 and hi["crf"] == 5
    assert lo["bytes_written"] < hi["bytes_written"] / 2
    x265 = transcode_video(pipeline.options.with_(output_video_encoder="libx265"), face_clip, tmp_path / "h.mkv")
    with av.open(str(tmp_path / "h.mkv")) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
    assert x265["frames"] == 20


def test_progress_reports_frames_total_fps_and_eta(pipeline, face_clip, tmp_path):
    seen: list[dict] = []
    swap_video(pipeline, face_clip, tmp_path / "out.mp4", progress=seen.append)
    assert seen and seen[-1]["frame"] == 20 and seen[-1]["total"] == 20 and seen[-1].get("done")
    assert all({"frame", "total", "fps", "eta_s"} <= set(p) for p in seen)
    buf = io.StringIO()
    printer = progress_printer(json=True, stream=buf)
    for p in seen:
        printer(p)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert lines[-1]["progress"]["frame"] == 20
    plain = io.StringIO()
    progress_printer(json=False, stream=plain)(seen[-1])
    assert "frame 20/20 (100%)" in plain.getvalue()


# -- cancellation ----------------------------------------------------------------------------------------
def test_cancel_event_stops_the_job_and_leaves_no_file(pipeline, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=60, audio="aac")
    cancel = threading.Event()

    def progress(p: dict) -> None:
        if p["frame"] >= 3:
            cancel.set()

    with pytest.raises(Cancelled):
        swap_video(pipeline, clip, tmp_path / "out.mp4", progress=progress, cancel=cancel)
    _assert_nothing_written(tmp_path, {"in.mp4"})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_swap_process_exits_130_and_leaves_no_file(sig, hanks_png, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=240, audio="aac")
    outdir = tmp_path / "out"
    outdir.mkdir()
    env = dict(os.environ, SEALFUSE_MODELS_DIR=str(add_starter(tmp_path / "no-models")))
    cmd = [sys.executable, "-c", "from sealfuse.cli import main; main()", "swap", "-s", str(hanks_png),
           "-t", str(clip), "-o", str(outdir / "out.mp4"), "--execution-providers", "cpu", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until frames are flowing (JSON progress lines on stderr)
        if line.startswith("{") and json.loads(line).get("progress", {}).get("frame", 0) >= 2:
            break
    assert any(p.name.endswith(".partial") for p in outdir.iterdir()), "the job should be writing its partial file"
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert _listing(outdir) == []
