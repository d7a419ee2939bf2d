"""Reading what the verifier is given: regular files only (a FIFO or device is refused before a
byte is read), every read bounded, and JSON that refuses a key repeated in one object.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sealfuse.verifier.errors import (
    BundleReadError,
    InputTooLargeError,
    NotARegularFileError,
)

# Limits of the small inputs (the bundle itself is streamed and bounded by its own size).
MAX_TRUST_BYTES = 4 << 20
MAX_KEY_BYTES = 64 << 10
MAX_SIGNATURE_INPUT_BYTES = 1 << 20

_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFDIR: "directory", stat.S_IFSOCK: "socket", stat.S_IFLNK: "symbolic link"}


def file_kind(mode: int) -> str:
    """'regular file', 'FIFO', 'directory', ... for an st_mode."""
    if stat.S_ISREG(mode):
        return "regular file"
    return _KINDS.get(stat.S_IFMT(mode), f"file of type {oct(stat.S_IFMT(mode))}")


def _not_regular(path: Path, what: str, mode: int) -> NotARegularFileError:
    kind = file_kind(mode)
    return NotARegularFileError(f"{what} {path} is a {kind}, not a regular file; refused "
                                "before reading", path=str(path), kind=kind)


def open_regular(path: str | os.PathLike[str], what: str, *,
                 follow: bool = True) -> tuple[int, os.stat_result]:
    """Open `path` read-only if (and only if) it is a regular file; return (fd, fstat).

    The type is checked with stat before opening (a device is never opened) and again with
    fstat on the descriptor, which is opened O_NONBLOCK|O_NOCTTY (a FIFO cannot block the open)
    and then switched back to blocking. `follow=False` adds O_NOFOLLOW: a symlink is refused.
    """
    p = Path(path)
    try:
        st = os.stat(p) if follow else os.lstat(p)
    except OSError as exc:
        raise BundleReadError(f"cannot read {what} {p}: {exc.strerror}", path=str(p),
                              errno=exc.errno) from exc
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(p, what, st.st_mode)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise _not_regular(p, what, stat.S_IFLNK) from exc
        raise BundleReadError(f"cannot open {what} {p}: {exc.strerror}", path=str(p),
                              errno=exc.errno) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            raise _not_regular(p, what, st.st_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular(path: str | os.PathLike[str], what: str, limit: int, *,
                 follow: bool = True) -> bytes:
    """All bytes of a regular file of at most `limit` bytes (never reads more than limit + 1)."""
    fd, _ = open_regular(path, what, follow=follow)
    chunks: list[bytes] = []
    got = 0
    try:
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise BundleReadError(f"cannot read {what} {path}: {exc.strerror}", path=str(path),
                              errno=exc.errno) from exc
    finally:
        os.close(fd)
    if got > limit:
        raise InputTooLargeError(f"{what} {path} is larger than {limit} bytes", path=str(path),
                                 limit=limit)
    return b"".join(chunks)


class DuplicateKey(ValueError):
    """A JSON object repeats a key (raised inside json.loads; callers turn it into their error)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in a JSON object")
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes | str, *, duplicate: Callable[..., Exception],
                 invalid: Callable[..., Exception], what: str, **evidence: Any) -> Any:
    """json.loads that refuses duplicate keys (raising `duplicate`) and NaN/Infinity or any
    other invalid JSON (raising `invalid`); both carry `evidence`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except DuplicateKey as exc:
        raise duplicate(f"{what} repeats the key {exc.key!r} in one JSON object (two readers "
                        "could take different values)", key=exc.key, **evidence) from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise invalid(f"{what} is not valid JSON: {exc}", **evidence) from exc
