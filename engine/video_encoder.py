"""The video encoder plan: codec, pixel format and options from the swap options and the output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from sealfuse.engine.errors import ConfigError
from sealfuse.engine.options import VIDEO_ENCODERS, SwapOptions

__all__ = ["EncoderPlan", "available_encoders", "plan_encoder", "quality_to_crf"]

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p3",
                 "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7", "placebo": "p7"}


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

