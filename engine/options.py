"""The swap options: one immutable object passed down the pipeline (no global state)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

FRAME_PROCESSORS = ("face_swapper", "face_enhancer")
MASK_TYPES = ("box", "ellipse", "region")
# FaceFusion's --face-mask-regions names ("left"/"right": the subject's own sides)
MASK_REGIONS = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose", "mouth",
                "upper-lip", "lower-lip")
SELECTOR_MODES = ("many", "one", "reference")
EXECUTION_PROVIDERS = ("cuda", "tensorrt", "cpu")
VIDEO_ENCODERS = ("libx264", "libx265", "h264_nvenc", "hevc_nvenc")
LABEL_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def default_models_dir() -> Path:
    """$SEALFUSE_MODELS_DIR, else the installed release's models, else the user's data dir."""
    env = os.environ.get("SEALFUSE_MODELS_DIR")
    if env:
        return Path(env)
    appliance = Path("/opt/sealfuse/current/models")
    if appliance.is_dir():
        return appliance
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    return data / "sealfuse" / "models"


@dataclass(frozen=True)
class SwapOptions:
    frame_processors: tuple[str, ...] = ("face_swapper",)
    # "auto": inswapper_128 when its file is in the models directory, else the starter mesh swap.
    face_swapper_model: str = "auto"
    face_enhancer_model: str = "gfpgan_1.4"
    face_enhancer_blend: float = 0.8
    # CodeFormer's fidelity weight (0 favours restoration, 1 fidelity to the input); others ignore it.
    face_enhancer_weight: float = 0.5
    face_recognizer_model: str = "arcface_w600k_r50"
    # "auto": SCRFD det_10g when present, else the starter BlazeFace (full range, tiled) + FaceMesh.
    face_detector_model: str = "auto"
    face_detector_score: float = 0.6
    blend_ratio: float = 1.0
    face_mask_types: tuple[str, ...] = ("box",)
    # what the region mask keeps (everything but glasses, as the parser's face classes do)
    face_mask_regions: tuple[str, ...] = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye",
                                          "nose", "mouth", "upper-lip", "lower-lip")
    face_mask_blur: float = 0.3
    # top, right, bottom, left, in percent of the aligned crop
    face_mask_padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    face_selector_mode: str = "many"
    # which face of the source image to use, counted from the left from 0 (None: the largest)
    source_face_position: int | None = None
    reference_face_image: Path | None = None
    reference_face_distance: float = 0.6
    # Face mapping: (reference image, source image) pairs; each target face gets the source of its
    # nearest reference (under reference_face_distance), unmatched faces stay untouched.
    face_map: tuple[tuple[Path, Path], ...] = ()
    execution_providers: tuple[str, ...] = ("cuda", "cpu")
    execution_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_memory_gb: float | None = None
    # CUDA arena growth: kSameAsRequested keeps usage near the need; kNextPowerOfTwo is ORT's default.
    gpu_arena_extend_strategy: str = "kSameAsRequested"
    gpu_device_id: int = 0
    models_dir: Path = field(default_factory=default_models_dir)
    # Decompression-bomb guard: images and video frames above this many pixels are refused.
    max_pixels: int = 40_000_000
    # video
    detect_every: int = 3
    output_video_encoder: str = "libx264"
    output_video_quality: int = 80
    output_video_preset: str = "veryfast"
    trim_frame_start: int | None = None
    trim_frame_end: int | None = None
    max_frames: int = 1_000_000
    # visible disclosure label (EU AI Act Article 50(4)) drawn in a corner of the image or every frame
    label: str | None = None
    label_corner: str = "bottom-right"

    def with_(self, **changes: Any) -> SwapOptions:
        return replace(self, **changes)
