"""Small filesystem helpers for atomic, durable moves and writes (tmp name, fsync, rename)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sealfuse.appliance.errors import UnsafePathError

CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


def fsync_dir(path: Path) -> None:
    """fsync a directory (makes a rename or a new entry in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write to a temp name in the same directory, fsync, rename, fsync the directory."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomic_at(fd, path.name, data, mode)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any, mode: int = 0o640) -> None:
    """write_atomic of indented, key-sorted JSON."""
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


def open_regular_nofollow(path: Path) -> int:
    """A read-only fd on `path` if it is a regular file; a final symlink is not followed and a FIFO
    cannot block the open (O_NONBLOCK). Anything else is an OSError naming the file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_bytes(path: Path, limit: int = 16 << 20) -> bytes:
    """All bytes of the regular file `path` (see open_regular_nofollow), at most `limit`."""
    fd = open_regular_nofollow(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def read_json_file(path: Path, limit: int = 16 << 20) -> Any:
    """A JSON state file: read as read_regular_bytes does; repeated keys, NaN, nesting deeper than
    the stack and non-UTF-8 are ValueError (so callers' `except (OSError, ValueError)` holds)."""
    from sealfuse.verifier.inputs import loads_strict

    def invalid(message: str, **_: Any) -> ValueError:
        return ValueError(message)

    return loads_strict(read_regular_bytes(path, limit), duplicate=invalid, invalid=invalid,
                        what=str(path))


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a regular file, opened without following a final symlink (a FIFO or
    device is an OSError, never read)."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    fd = open_regular_nofollow(path)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# -- paths under directories another user can write (root must never follow links there) -----
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def trusted_dir(st: os.stat_result) -> bool:
    """Only root or this process's user can change the directory (owner, no group/other write)."""
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def open_dir(path: Path, *, create_mode: int | None = None, require_trusted: bool = False) -> int:
    """An O_DIRECTORY fd for `path`, walked from / one component at a time (openat).

    A directory is trusted when `trusted_dir` holds for it and its parent is trusted too (or is
    sticky, like /tmp, so that no one else can rename it away). A symlink is followed only where it
    sits in a trusted directory; below a directory that another user can write, a symlink or a
    non-directory is an UnsafePathError. `create_mode` makes missing components (mkdirat, which
    never follows a link); `require_trusted` refuses a final directory that is not trusted.
    """
    path = Path(os.path.abspath(path))
    fd = os.open("/", _DIR_FLAGS)
    parent = os.fstat(fd)
    trusted = trusted_dir(parent)
    try:
        for i, part in enumerate(path.parts[1:], start=2):
            flags = _DIR_FLAGS | (0 if trusted else os.O_NOFOLLOW)
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create_mode, dir_fd=fd)
                nfd = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if not trusted and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = Path(*path.parts[:i])
                    raise UnsafePathError(f"{where} is a symlink or not a directory, in a "
                                          "directory another user can write; not followed",
                                          path=str(where)) from exc
                raise
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            sticky_keeps = bool(parent.st_mode & stat.S_ISVTX) and st.st_uid in (0, os.geteuid())
            trusted = trusted_dir(st) and (trusted or sticky_keeps)
            parent = st
        if require_trusted and not trusted:
            mode = f"{stat.S_IMODE(parent.st_mode):o}"
            raise UnsafePathError(f"{path} (or a directory above it) is owned by another user or "
                                  f"writable by others (uid {parent.st_uid}, mode {mode}); "
                                  "expected root's own directory",
                                  path=str(path), uid=parent.st_uid, mode=mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file_at(dir_fd: int, name: str, flags: int, mode: int = 0o600, *,
                 owners: frozenset[int] | None = None, where: str = "") -> int:
    """Open `name` in `dir_fd` without following a symlink or blocking on a FIFO, and refuse
    anything but a regular file with one link (a hardlink could be any file) owned by `owners`."""
    label = f"{where}/{name}" if where else name
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                     dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
            raise UnsafePathError(f"{label} is a symlink or not a regular file; not followed",
                                  path=label, errno=errno.errorcode.get(exc.errno)) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{label} is not a regular file", path=label,
                                  mode=f"{st.st_mode:o}")
        if st.st_nlink != 1:
            raise UnsafePathError(f"{label} has {st.st_nlink} hard links; refused", path=label,
                                  nlink=st.st_nlink)
        if owners is not None and st.st_uid not in owners:
            raise UnsafePathError(f"{label} is owned by uid {st.st_uid}, not by {sorted(owners)}",
                                  path=label, uid=st.st_uid)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def write_atomic_at(dir_fd: int, name: str, data: bytes, mode: int = 0o640) -> None:
    """write_atomic relative to a directory fd: nothing is followed, the rename replaces `name`."""
    tmp = f".{name}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def remove_tree_at(dir_fd: int, name: str) -> None:
    """Remove `name` (a file, link or whole tree) below `dir_fd` by file descriptor: a symlink
    is removed, never followed; read-only directories are made writable through their fd only.
    Iterative, so a deep tree planted by another user cannot exhaust the stack."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    stack: list[tuple[int, list[str]]] = []
    try:
        _push_dir(stack, os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd))
        while stack:
            fd, names = stack[-1]
            if not names:
                stack.pop()
                if stack:  # remove the now-empty directory from its parent
                    os.rmdir(_child_name(stack), dir_fd=stack[-1][0])
                os.close(fd)
                continue
            child = names[-1]
            cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(cst.st_mode):
                cfd = os.open(child, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                _push_dir(stack, cfd)
            else:
                os.unlink(child, dir_fd=fd)
                names.pop()
    except BaseException as exc:
        for fd, _ in stack:
            os.close(fd)
        if isinstance(exc, OSError) and exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(f"an entry below {name} turned into a symlink while it was removed; "
                          "not followed", path=name) from exc
        raise
    os.rmdir(name, dir_fd=dir_fd)


def _push_dir(stack: list[tuple[int, list[str]]], fd: int) -> None:
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
        names = sorted(os.listdir(fd))
    except BaseException:
        os.close(fd)
        raise
    stack.append((fd, names))


def _child_name(stack: list[tuple[int, list[str]]]) -> str:
    """Pop and return the name, in its parent, of the directory just finished."""
    return stack[-1][1].pop()


def remove_tree(path: Path) -> None:
    """remove_tree_at for a path; the walk to its parent follows no link another user planted."""
    path = Path(os.path.abspath(path))
    try:
        parent = open_dir(path.parent)
    except FileNotFoundError:
        return
    try:
        remove_tree_at(parent, path.name)
    finally:
        os.close(parent)


# ---------------------------------------------------------------- never following links under a root
class FollowError(OSError):
    """A directory on the way to an entry under a checked root is a symlink, not a directory, or on
    another filesystem: the entry is not reached (nothing is followed)."""


_NOFOLLOW_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _check_rel(rel: str | os.PathLike[str]) -> tuple[str, ...]:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {os.fsdecode(rel)!r}")
    return parts


@contextlib.contextmanager
def parent_fd(root: Path, rel: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Open every directory of `rel` (relative to `root`) with O_NOFOLLOW|O_DIRECTORY from root's
    own fd, each checked to be on root's filesystem; yield (fd of the entry's directory, entry name).
    Raises FollowError when a directory on the way is a link, not a directory or a mount."""
    parts = _check_rel(rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dev = os.fstat(fd).st_dev
        for part in parts[:-1]:
            try:
                child = os.open(part, _NOFOLLOW_DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise FollowError(exc.errno, f"{part!r} is not a directory of its own (a symlink?)",
                                      os.fsdecode(rel)) from None
                raise
            os.close(fd)
            fd = child
            if os.fstat(fd).st_dev != dev:
                raise FollowError(errno.EXDEV, f"{part!r} is on another filesystem", os.fsdecode(rel))
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat_under(root: Path, rel: str | os.PathLike[str]) -> os.stat_result:
    """lstat of root/rel without following any link on the way (FollowError) or at the end."""
    with parent_fd(root, rel) as (fd, name):
        return os.stat(name, dir_fd=fd, follow_symlinks=False)


def lexists_under(root: Path, rel: str | os.PathLike[str]) -> bool:
    """root/rel exists (as any file type), reached without following links; False when unreachable."""
    try:
        lstat_under(root, rel)
    except (FileNotFoundError, FollowError, NotADirectoryError):
        return False
    return True


def readlink_under(root: Path, rel: str | os.PathLike[str]) -> str:
    """The target of the symlink root/rel (never followed)."""
    with parent_fd(root, rel) as (fd, name):
        return os.fsdecode(os.readlink(name, dir_fd=fd))


def open_under(root: Path, rel: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """open(2) of root/rel with O_NOFOLLOW|O_CLOEXEC (and the caller's flags), no link followed."""
    with parent_fd(root, rel) as (fd, name):
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)


def listdir_under(root: Path, rel: str | os.PathLike[str]) -> list[str]:
    """The names in directory root/rel, opened O_NOFOLLOW|O_DIRECTORY (FollowError for a link)."""
    with parent_fd(root, Path(rel) / "_") as (fd, _name):
        return os.listdir(fd)


def rename_under(root: Path, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """rename(2) root/src to root/dst through directory fds: no link on either way is followed, and
    both directories are on root's filesystem (EXDEV can still come from a bind mount: OSError)."""
    with parent_fd(root, src) as (src_fd, src_name), parent_fd(root, dst) as (dst_fd, dst_name):
        os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
