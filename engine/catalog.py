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
    # Input names, one per entry of `inputs` (matched by name, in any graph order); empty: by position.
    input_names: tuple[str, ...] = ()
    # Element types per input ("float", "double", "float|float16"); empty: float or float16 for all.
    input_types: tuple[str, ...] = ()
    # Shape of the first output (the image or vector the engine reads); empty: not checked.
    output_shape: tuple[int | None, ...] = ()
    # True: the file may carry more outputs after the first (only the first is read).
    extra_outputs: bool = False

    @property
    def packaged(self) -> bool:
        return self.file.startswith(PACKAGE_PREFIX)
