"""The catalog entry of one model file (`ModelSpec`): name, role, file, licence and ONNX I/O signature.

Kept apart from the registry so that each swapper family's file can declare its own entries.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKAGE_PREFIX = "package:"
NONCOMMERCIAL = "non-commercial research only (insightface model licence)"


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry: where the file lives, its pin, licence and ONNX I/O signature."""

    name: str
    family: str
    file: str
    licence: str
    # Expected input shapes; an int must match, None/str is a dynamic axis.
    inputs: tuple[tuple[int | None, ...], ...]
    outputs: int
    sha256: str | None = None
    size: int | None = None
    note: str = ""
    # Expected input names, in graph order (empty: not checked).
    input_names: tuple[str, ...] = ()

    @property
    def packaged(self) -> bool:
        return self.file.startswith(PACKAGE_PREFIX)
