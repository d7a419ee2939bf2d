"""The media the engine reads and writes: one list of image and one of video file extensions.

Imports nothing, so the watch daemon's admission checks can use it without numpy or PyAV.
"""

from __future__ import annotations

# Image extension -> the encoder's format name.
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
IMAGE_EXTS = tuple(IMAGE_FORMATS)
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm")
