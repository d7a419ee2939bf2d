"""Small filesystem helpers for atomic, durable moves and writes (tmp name, fsync, rename)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write to a temp name in the same directory, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any, mode: int = 0o640) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), mode)


def copy_durable(src: Path, dst: Path, mode: int = 0o640) -> None:
    """Copy src to dst (a fresh name) and fsync it; the caller renames the directory into place."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        try:
            with os.fdopen(fd, "wb", closefd=False) as fout:
                shutil.copyfileobj(fin, fout, 1024 * 1024)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)


def rmtree_quiet(path: Path) -> None:
    """Remove a file or tree, never following symlinks; missing is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def bad_name(name: str) -> str | None:
    """Why a file name is unacceptable, or None."""
    if any(ch in CONTROL for ch in name):
        return "contains control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(name.encode("utf-8", "surrogateescape")) > 200:
        return "is longer than 200 bytes"
    return None


def safe_name(name: str) -> str:
    """A printable stand-in for a hostile name (control characters and invalid UTF-8 replaced)."""
    out = "".join("_" if ch in CONTROL or "\udc80" <= ch <= "\udcff" else ch for ch in name)
    out = out.lstrip(".") or "_"
    return out[:120]


def sha256_file(path: Path) -> tuple[str, int]:
    import hashlib

    h = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
