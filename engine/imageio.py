"""Still-image input and output: sniff, bound, decode fully, and write atomically.

Input is checked before any pixel is decoded: the header's dimensions are compared with the
pixel limit (decompression bombs), and the content must match its extension. Decoding is
complete (a truncated file is an error, not a grey bottom half). Output is encoded in memory and
written to a temporary name in the destination directory, fsynced, then renamed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from sealfuse.engine.errors import (
    EmptyInputError,
    MediaTooLargeError,
    NotMediaError,
    OutputError,
    TruncatedMediaError,
    UnreadableInputError,
)
from sealfuse.engine.formats import IMAGE_FORMATS as IMAGE_EXTS
from sealfuse.engine.fsio import atomic_write_bytes


def _open_checked(path: Path) -> int:
    """Stat and size-check a path, raising the specific error for each unreadable case."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UnreadableInputError(f"{path}: no such file", path=path) from None
    except OSError as exc:
        raise UnreadableInputError(f"{path}: cannot stat ({exc.strerror})", path=path) from None
    if not path.is_file():
        raise UnreadableInputError(f"{path}: not a regular file", path=path)
    if not os.access(path, os.R_OK):
        raise UnreadableInputError(f"{path}: permission denied", path=path)
    if st.st_size == 0:
        raise EmptyInputError(f"{path}: file is empty (0 bytes)", path=path)
    return st.st_size


def image_size(path: Path) -> tuple[str, int, int]:
    """(format, width, height) from the header only, after the extension and content checks."""
    from PIL import Image, UnidentifiedImageError

    _open_checked(path)
    want = IMAGE_EXTS.get(path.suffix.lower())
    if want is None:
        raise NotMediaError(
            f"{path}: unsupported image extension {path.suffix!r} (use .jpg, .png or .webp)",
            path=path,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                fmt, (w, h) = im.format, im.size
    except (UnidentifiedImageError, SyntaxError) as exc:
        raise NotMediaError(f"{path}: not a {want} image ({exc})", path=path) from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - we disable PIL's own limit
        raise MediaTooLargeError(str(exc), path=path) from None
    except ValueError as exc:  # PIL's caps on text/ICC chunks (zTXt, iTXt, iCCP bombs), bad header fields
        if "too large" in str(exc).lower() or "too much memory" in str(exc).lower():
            raise MediaTooLargeError(f"{path}: an ancillary chunk inflates past the decoder's limit ({exc}); "
                                     "decompression bomb guard", path=path) from None
        raise TruncatedMediaError(f"{path}: image header is corrupt ({exc})", path=path) from None
    except OSError as exc:
        raise UnreadableInputError(f"{path}: cannot read ({exc})", path=path) from None
    if fmt != want:
        raise NotMediaError(f"{path}: content is {fmt}, but the extension says {want}",
                            path=path, content=fmt, extension=path.suffix)
    return fmt, w, h


def read_image(path: Path, *, max_pixels: int) -> np.ndarray:
    """Decode an image fully into a BGR uint8 array, or raise a specific InputError."""
    from PIL import Image, ImageOps

    path = Path(path)
    _fmt, w, h = image_size(path)
    if w <= 0 or h <= 0 or w * h > max_pixels:
        raise MediaTooLargeError(
            f"{path}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} (decompression bomb guard)",
            path=path, width=w, height=h, limit=max_pixels,
        )
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit above applies
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except OSError as exc:
        raise TruncatedMediaError(f"{path}: image data is truncated or corrupt ({exc})", path=path) from None
    except (ValueError, SyntaxError) as exc:
        raise TruncatedMediaError(f"{path}: image data is corrupt ({exc})", path=path) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    arr = np.asarray(rgb)
    return np.ascontiguousarray(arr[:, :, ::-1])


def check_output_path(path: Path, allowed: dict[str, str] | None = None,
                      inputs: Iterable[Path | None] = ()) -> None:
    """Fail early (before any work) when the output cannot be written."""
    path = Path(path)
    allowed = IMAGE_EXTS if allowed is None else allowed
    if path.suffix.lower() not in allowed:
        raise OutputError(f"{path}: unsupported output extension {path.suffix!r} "
                          f"(use {', '.join(sorted(allowed))})", path=path)
    parent = path.parent
    try:
        if not parent.is_dir():
            raise OutputError(f"{path}: output directory {parent} does not exist", path=path)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: output directory {parent} is not writable", path=path)
        if path.is_dir():
            raise OutputError(f"{path}: is a directory", path=path)
    except OSError as exc:  # a name too long, a loop of links, ...
        raise OutputError(f"{path}: cannot be written ({exc.strerror})", path=path) from None
    for other in inputs:
        try:
            same = other is not None and os.path.samefile(path, other)
        except OSError:
            same = False
        if same:
            raise OutputError(f"{path}: is the input {other}; the output never replaces an input",
                              path=path, input=other)


def write_image(path: Path, image_bgr: np.ndarray, *, quality: int = 95,
                before_commit: Callable[[Path], None] | None = None) -> int:
    """Encode in memory (no temp frames on disk) and write atomically. Returns bytes written.

    `before_commit` runs on the finished temp file before the rename (signing).
    """
    path = Path(path)
    check_output_path(path)
    ext = path.suffix.lower()
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    elif ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, image_bgr, params)
    if not ok:  # pragma: no cover - cv2 encodes any uint8 BGR image
        raise OutputError(f"{path}: encoding failed", path=path)
    return atomic_write_bytes(path, buf.tobytes(), before_commit=before_commit)
