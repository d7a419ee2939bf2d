"""Face pipeline: model registry, ONNX Runtime sessions, detect, align, swap, mask, blend, enhance; image and video I/O.

The public surface other layers use is `__all__`; names load lazily on first use, so importing
`sealfuse.engine` (or `sealfuse verify`, which never does) pulls in no numpy, cv2 or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module below sealfuse.engine that defines it
_SURFACE = {
    "Engine": "api",
    "is_video": "api",
    "SwapOptions": "options",
    "MASK_REGIONS": "options",
    "EngineError": "errors",
    "ProvenanceConfig": "provenance",
    "Provenance": "provenance",
    "ProvenanceError": "provenance",
    "EXIT_CODES": "errors",
    "IMAGE_EXTS": "formats",
    "VIDEO_EXTS": "formats",
    "CATALOG": "registry",
    "read_lock": "registry",
    "write_lock": "registry",
    "read_image": "imageio",
    "swapper_names": "swappers",
    "probe_video": "video_probe",
}

__all__ = sorted(_SURFACE)


def __getattr__(name: str) -> Any:
    module = _SURFACE.get(name)
    if module is None:
        raise AttributeError(f"module 'sealfuse.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sealfuse.engine.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
