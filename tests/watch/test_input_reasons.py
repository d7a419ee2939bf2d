"""Every reason the daemon can write is documented, and hostile input gets an input reason:
PNG ancillary-chunk bombs are `too_large`, corrupt input audio is `truncated` (not `bad_output`)."""

from __future__ import annotations

import inspect
import io
import re
import struct
import zlib
from pathlib import Path

import pytest

from sealfuse.appliance.watch import errors as watch_errors
from sealfuse.engine import errors as engine_errors
from tests.watch.watchlib import documented_reasons

REPO = Path(__file__).resolve().parents[2]


def _classes(module: object, root: type) -> list[type]:
    return [c for _n, c in inspect.getmembers(module, inspect.isclass) if issubclass(c, root)]


def emitted_reasons() -> set[str]:
    """Every reason that can end in error.json or a status file: the watch errors (not the
    start-up ones), every engine error the worker forwards, and the worker's own literals."""
    reasons = {c.reason for c in _classes(watch_errors, watch_errors.JobError)
               if not issubclass(c, watch_errors.StartupError) and c is not watch_errors.ReportedError}
    reasons |= {c.reason for c in _classes(engine_errors, engine_errors.EngineError)}
    for source in (REPO / "appliance" / "watch").glob("*.py"):
        for block in re.findall(r'\{"op": "result".*?\}\)', source.read_text(), re.S):
            reasons |= set(re.findall(r'"reason": "([a-z_]+)"', block))
    return reasons


def test_every_reason_the_daemon_can_emit_is_in_the_documented_table() -> None:
    emitted = emitted_reasons()
    assert {"output_missing", "commit_failed", "symlinked_folder", "internal_error", "too_large"} <= emitted
    missing = emitted - documented_reasons()
    assert not missing, f"reasons missing from docs/watch-folder.md's table: {sorted(missing)}"


def _png_with(chunks: list[tuple[bytes, bytes]]) -> bytes:
    from PIL import Image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    return png[:33] + b"".join(chunk(k, d) for k, d in chunks) + png[33:]  # after IHDR


BOMB = zlib.compress(b"\0" * (40 << 20), 9)  # 40 MiB of zeros in about 40 KiB


@pytest.mark.parametrize("chunks", [
    [(b"zTXt", b"Comment\0\0" + BOMB)],
    [(b"iTXt", b"Comment\0\1\0\0\0" + BOMB)],
    [(b"iCCP", b"icc\0\0" + BOMB)],
    [(b"zTXt", f"k{i}".encode() + b"\0\0" + zlib.compress(b"\0" * (900 << 10), 9)) for i in range(80)],
], ids=["zTXt", "iTXt", "iCCP", "many-zTXt"])
def test_png_ancillary_chunk_bombs_are_too_large(tmp_path: Path, chunks: list[tuple[bytes, bytes]]) -> None:
    from sealfuse.engine.imageio import read_image

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with(chunks))
    assert path.stat().st_size < 200_000
    with pytest.raises(engine_errors.MediaTooLargeError) as info:
        read_image(path, max_pixels=10**8)
    assert info.value.reason == "too_large" and "ancillary chunk" in info.value.message


def _mkv_with_audio() -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=10)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(20):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 10, np.uint8),
                                                            format="rgb24")))
            samples = (np.sin(np.arange(1600) / 5) * 3000).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1600
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return buf.getvalue()


def test_corrupt_input_audio_is_an_input_reason_not_bad_output(tmp_path: Path) -> None:
    from sealfuse.engine.options import SwapOptions
    from sealfuse.engine.video import transcode_video

    data = bytearray(_mkv_with_audio())
    # Matroska SimpleBlocks of track 2 (the audio): 0xA3, a one- or two-byte size, 0x82, then the
    # block's int16 timecode. One block jumps 30 s ahead: the next ones go backwards.
    blocks = sorted(m.start() for m in re.finditer(rb"\xa3(?:[\x40-\x7f].|[\x80-\xff])\x82", bytes(data), re.S))
    pos = blocks[3]
    timecode = pos + (3 if 0x40 <= data[pos + 1] < 0x80 else 2) + 1
    data[timecode:timecode + 2] = struct.pack(">h", 30000)
    target = tmp_path / "clip.mkv"
    target.write_bytes(bytes(data))
    with pytest.raises(engine_errors.InputError) as info:
        transcode_video(SwapOptions(execution_providers=("cpu",)), target, tmp_path / "out.mkv")
    assert info.value.reason == "truncated" and "audio" in info.value.message
    assert not list(tmp_path.glob("*out*")), "no partial output"
