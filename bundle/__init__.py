"""Build and sign bundles on a connected host.

The public surface other code uses is `__all__`; names load lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module below sealfuse.bundle that defines it
_SURFACE = {
    "BuildInputs": "build",
    "BuildResult": "build",
    "build_bundle": "build",
    "sign_bundle": "sign",
    "add_sshsig": "sign",
    "add_sigstore": "sign",
    "BundleError": "errors",
    "BUILD_EXIT_CODES": "errors",
}

__all__ = sorted(_SURFACE)


def __getattr__(name: str) -> Any:
    module = _SURFACE.get(name)
    if module is None:
        raise AttributeError(f"module 'sealfuse.bundle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sealfuse.bundle.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
