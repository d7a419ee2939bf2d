"""Atomic, durable file writes (temp name in the same directory, fsync, rename, fsync the directory).

Kept free of numpy/OpenCV so that the installer can write model pins without the engine's stack.
Every output the engine writes (images, videos, model pins) ends in `commit_partial`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from sealfuse.engine.errors import OutputError


def partial_name(path: Path) -> Path:
    """A dotfile beside `path`, unique per process and thread: `.<name>.<pid>.<tid>.partial`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")


def commit_partial(tmp: Path, path: Path, before_commit: Callable[[Path], None] | None = None) -> int:
    """Make the finished temp file `tmp` the file `path`: fsync it, rename it, fsync the directory.

    The one place where an engine output becomes visible; a step that must see the final bytes
    before anyone else does (signing) belongs here, before the rename: `before_commit(tmp)` runs
    on the finished temp file and may rewrite it. Returns the size written.
    On failure `tmp` is removed and nothing appears at `path`.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        if before_commit is not None:
            before_commit(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path.stat().st_size


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644,
                       before_commit: Callable[[Path], None] | None = None) -> int:
    """Write `data` to a temporary name in the same directory, then `commit_partial` it."""
    path = Path(path)
    tmp = partial_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create ({exc.strerror})", path=path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return commit_partial(tmp, path, before_commit)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex of a file's bytes, read in `chunk`-sized pieces (models, outputs, wheels)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
