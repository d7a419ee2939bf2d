"""Hash-chained JSON-lines audit log: `AuditLog(path).append(event, **fields)` and `sealfuse audit verify`.

Each line is one canonical JSON object with `seq`, `time`, `event`, `prev` (sha256 of the previous
line's bytes, genesis = 64 zeros) and `hash` (sha256 of the entry without `hash`). Lines hold
digests and ids, never media. Appends take an exclusive lock, use one O_APPEND write and fsync,
and never follow a link or write to anything but a plain file owned by us or the directory's owner.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from sealfuse.appliance.errors import (
    AUDIT_VERIFY_EXIT_CODES,
    EXIT_AUDIT_BROKEN,
    EXIT_OK,
    EXIT_USAGE,
    AuditError,
    epilog,
)
from sealfuse.appliance.fsutil import open_dir, open_file_at

__all__ = ["GENESIS", "AuditError", "AuditLog", "VerifyResult", "verify_log"]

GENESIS = "0" * 64
LOG_MODE = 0o640


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _read_tail(fd: int, size: int) -> bytes:
    """The last line of the file (without its newline); b"" for an empty file."""
    if size == 0:
        return b""
    chunk = 4096
    end = size
    buf = b""
    while end > 0:
        start = max(0, end - chunk)
        buf = os.pread(fd, end - start, start) + buf
        end = start
        body = buf[:-1] if buf.endswith(b"\n") else buf
        if b"\n" in body or end == 0:
            break
        chunk *= 2
    if not buf.endswith(b"\n"):
        raise AuditError("the audit log ends with a partial line; run `sealfuse audit verify`",
                         tail=buf[-80:].decode("utf-8", "replace"))
    return buf[:-1].rsplit(b"\n", 1)[-1]


class AuditLog:
    """An append-only, hash-chained audit log. Safe across processes (flock) and threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: tuple[int, str, int] | None = None  # (size, prev hash, seq) after our last write

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; returns the entry written. Fields must not hold media."""
        # The log's directory belongs to the service user, and root (the installer) appends
        # too: walk to it by fd, follow no link there, and write only to a plain file of ours.
        dir_fd = open_dir(self.path.parent, create_mode=0o777)
        try:
            owner = os.fstat(dir_fd)
            fd = open_file_at(dir_fd, self.path.name, os.O_RDWR | os.O_APPEND | os.O_CREAT,
                              LOG_MODE, owners=frozenset({os.geteuid(), owner.st_uid}),
                              where=str(self.path.parent))
        finally:
            os.close(dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            size = st.st_size
            if size == 0 and st.st_uid != owner.st_uid and os.geteuid() == 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)  # made by root: the service's file
            if self._cache is not None and self._cache[0] == size:
                _, prev, seq = self._cache
            else:
                tail = _read_tail(fd, size)
                if tail:
                    try:
                        seq = int(json.loads(tail)["seq"])
                    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
                        raise AuditError(f"the last line of {self.path} is not an audit entry",
                                         path=str(self.path)) from exc
                    prev = hashlib.sha256(tail).hexdigest()
                else:
                    prev, seq = GENESIS, 0
            entry: dict[str, Any] = {**fields, "seq": seq + 1, "time": _now(), "event": event, "prev": prev}
            entry["hash"] = entry_hash(entry)
            line = canonical(entry)
            os.write(fd, line + b"\n")  # one write: a kill cannot leave half a line
            os.fsync(fd)
            self._cache = (size + len(line) + 1, hashlib.sha256(line).hexdigest(), seq + 1)
            return entry
        finally:
            os.close(fd)


@dataclass
class VerifyResult:
    ok: bool
    path: str
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    bad_line: int | None = None
    reason: str | None = None
    message: str = ""
    events: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_log(path: Path) -> bytes:
    """The log's bytes; a FIFO, device or directory in its place is refused (OSError) before
    reading, so `audit verify` never blocks on what the service user put there."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return f.read()


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON: an entry carrying one was not written by sealfuse."""
    raise ValueError(f"{name} is not JSON")


def verify_log(path: str | os.PathLike[str], anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Check every line's self-hash, sequence and link to the previous line.

    `anchor` (seq, sha256 of that line) from an earlier verify proves no whole tail was cut off.
    """
    p = Path(path)
    data = read_log(p)
    res = VerifyResult(ok=True, path=str(p))

    def bad(line_no: int, reason: str, message: str) -> VerifyResult:
        res.ok, res.bad_line, res.reason, res.message = False, line_no, reason, message
        return res

    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif data:
        return bad(len(lines), "truncated", f"line {len(lines)} is cut short (no newline at the end)")
    prev, seq_expected = GENESIS, 1
    anchor_seen = False
    for i, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw, parse_constant=_no_constant)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            return bad(i, "not_json", f"line {i} is not a JSON object (edited or truncated)")
        if entry.get("hash") != entry_hash(entry) or raw != canonical(entry):
            return bad(i, "edited", f"line {i} does not match its own hash (edited)")
        if entry.get("seq") != seq_expected:
            return bad(i, "sequence", f"line {i} has seq {entry.get('seq')}, expected {seq_expected} "
                       "(an entry was deleted, inserted or reordered)")
        if entry.get("prev") != prev:
            return bad(i, "chain", f"line {i} does not link to line {i - 1} (deleted, reordered or edited)")
        prev = hashlib.sha256(raw).hexdigest()
        if anchor and anchor[0] == seq_expected:
            if anchor[1] != prev:
                return bad(i, "anchor", f"line {i} (seq {anchor[0]}) does not match the anchor hash")
            anchor_seen = True
        res.events[str(entry.get("event"))] = res.events.get(str(entry.get("event")), 0) + 1
        seq_expected += 1
    res.entries = len(lines)
    res.head_seq, res.head_hash = seq_expected - 1, prev
    if anchor and not anchor_seen:
        return bad(len(lines) + 1, "truncated",
                   f"the log ends at seq {res.head_seq}, before the anchor seq {anchor[0]} (tail cut off)")
    return res


@click.group(name="audit")
def audit() -> None:
    """Inspect the hash-chained audit log."""


def _parse_anchor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    try:
        seq, digest = value.split(":", 1)
        if len(digest) != 64:
            raise ValueError
        return int(seq), digest.lower()
    except ValueError as exc:
        raise click.BadParameter("expected SEQ:SHA256 (head_seq and head_hash from an earlier --json)") from exc


@audit.command(name="verify", epilog=epilog(AUDIT_VERIFY_EXIT_CODES))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--anchor", callback=_parse_anchor, metavar="SEQ:SHA256",
              help="Head recorded earlier (head_seq:head_hash of a previous --json run); "
                   "proves that no entry up to it was cut off the end.")
def verify_cmd(file: Path, as_json: bool, anchor: tuple[int, str] | None) -> None:
    """Verify FILE, a sealfuse audit log: every entry's hash, sequence and chain link.

    Detects an edited, deleted, inserted, reordered or truncated entry and names the first bad
    line. Cutting whole entries off the end is only detectable against an --anchor.
    """
    try:
        res = verify_log(file, anchor)
    except OSError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "path": str(file), "reason": "unreadable",
                                   "message": str(exc)}))
        else:
            click.echo(f"cannot read {file}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(res.to_dict(), sort_keys=True))
    elif res.ok:
        click.echo(f"OK: {res.entries} entries, head seq {res.head_seq} sha256 {res.head_hash}")
    else:
        click.echo(f"BROKEN at line {res.bad_line}: {res.message}", err=True)
    sys.exit(EXIT_OK if res.ok else EXIT_AUDIT_BROKEN)
