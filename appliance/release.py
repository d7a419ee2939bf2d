"""Where a sealfuse install lives (Layout), what it records (install.json), and how it talks to
systemd (a small runner interface, so tests without systemd route around it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealfuse.appliance import fsutil
from sealfuse.appliance.audit import AuditLog
from sealfuse.appliance.errors import LockBusyError, StateError, SystemdError, UnsafePathError

UNIT = "sealfuse-watch.service"
SYSUSERS_CONF = "sealfuse.conf"
TMPFILES_CONF = "sealfuse.conf"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class Layout:
    """Every path the installer reads or writes, below `root` ("/" on an appliance)."""

    root: Path = Path("/")

    def _p(self, rel: str) -> Path:
        return self.root / rel

    @property
    def opt(self) -> Path:
        return self._p("opt/sealfuse")

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    def release(self, version: str) -> Path:
        return self.releases / version

    @property
    def etc(self) -> Path:
        return self._p("etc/sealfuse")

    @property
    def trust(self) -> Path:
        return self.etc / "trust.json"

    @property
    def watch_config(self) -> Path:
        return self.etc / "watch.toml"

    @property
    def var(self) -> Path:
        return self._p("var/lib/sealfuse")

    @property
    def spool(self) -> Path:
        return self.var / "spool"

    @property
    def audit_log(self) -> Path:
        return self.var / "audit" / "audit.jsonl"

    @property
    def metrics(self) -> Path:
        return self.var / "metrics" / "sealfuse.prom"

    @property
    def record(self) -> Path:
        return self.var / "install.json"

    @property
    def lock(self) -> Path:
        return self.var / "releases.lock"

    @property
    def unit_dir(self) -> Path:
        return self._p("etc/systemd/system")

    @property
    def unit_file(self) -> Path:
        return self.unit_dir / UNIT

    @property
    def dropin_dir(self) -> Path:
        return self.unit_dir / f"{UNIT}.d"

    @property
    def sysusers_file(self) -> Path:
        return self._p("etc/sysusers.d") / SYSUSERS_CONF

    @property
    def tmpfiles_file(self) -> Path:
        return self._p("etc/tmpfiles.d") / TMPFILES_CONF

    @property
    def apparmor_file(self) -> Path:
        return self._p("etc/apparmor.d/sealfuse-engine")

    def current_version(self) -> str | None:
        """The release `current` points at, or None."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        return Path(target).name


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomic, durable write into root's own directory (made when missing); a directory another
    user can write, or a link planted in one on the way, is an UnsafePathError."""
    fd = fsutil.open_dir(path.parent, create_mode=0o755, require_trusted=True)
    try:
        fsutil.write_atomic_at(fd, path.name, data, mode)
    finally:
        os.close(fd)


def own_dir(path: Path, mode: int = 0o755) -> None:
    """Make `path` (and missing parents) a directory of root's with `mode`, by file descriptor;
    one that another user owns is an UnsafePathError."""
    fd = fsutil.open_dir(path, create_mode=mode)
    try:
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafePathError(f"{path} is owned by uid {st.st_uid}; expected root's own "
                                  "directory", path=str(path), uid=st.st_uid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def switch_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: a symlink under a temp name, then rename over."""
    fd = fsutil.open_dir(link.parent, require_trusted=True)
    try:
        tmp = f".{link.name}.new{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        os.symlink(target, tmp, dir_fd=fd)
        os.replace(tmp, link.name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
    finally:
        os.close(fd)


def audit_event(layout: Layout, event: str, **fields: Any) -> None:
    """Append to the audit log when its directory exists (never create it before verification).
    The log lives in the service user's directory: AuditLog follows no link there."""
    if not layout.audit_log.parent.is_dir():
        return
    AuditLog(layout.audit_log).append(event, **fields)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One installer at a time (flock on /var/lib/sealfuse/releases.lock)."""
    dir_fd = fsutil.open_dir(layout.var, create_mode=0o755, require_trusted=True)
    try:
        fd = fsutil.open_file_at(dir_fd, layout.lock.name, os.O_RDWR | os.O_CREAT, 0o600,
                                 owners=frozenset({0, os.geteuid()}), where=str(layout.var))
    finally:
        os.close(dir_fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LockBusyError(f"another sealfuse install/rollback/uninstall holds {layout.lock}",
                                path=str(layout.lock)) from exc
        yield
    finally:
        os.close(fd)


@dataclass
class InstallRecord:
    """/var/lib/sealfuse/install.json: the running release, activation order and history."""

    current: str | None = None
    order: list[str] = field(default_factory=list)  # versions in activation order, latest last
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, layout: Layout) -> InstallRecord:
        try:
            data = fsutil.read_json_file(layout.record)
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise StateError(f"install record {layout.record} is unreadable: {exc}",
                             path=str(layout.record)) from exc
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise StateError(f"install record {layout.record} has an unknown format",
                             path=str(layout.record))
        return cls(data.get("current"), list(data.get("order", [])), list(data.get("history", [])))

    def save(self, layout: Layout) -> None:
        data = {"format": RECORD_FORMAT, "current": self.current, "order": self.order,
                "history": self.history}
        write_atomic(layout.record, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(),
                     0o644)

    def activate(self, version: str) -> None:
        self.current = version
        self.order = [v for v in self.order if v != version] + [version]

    def forget(self, version: str) -> None:
        self.order = [v for v in self.order if v != version]
        if self.current == version:
            self.current = None

    def previous(self, layout: Layout) -> str | None:
        """The most recently active release other than the current one that is still on disk."""
        for version in reversed(self.order):
            if version != self.current and (layout.release(version) / "release.json").is_file():
                return version
        return None

    def log(self, action: str, **fields: Any) -> None:
        self.history.append({"time": now_iso(), "action": action, **fields})
        del self.history[:-200]


# -- systemd --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartResult:
    """Outcome of (re)starting the unit: ok (True/False), or None when not attempted."""

    ok: bool | None
    detail: str


class Systemd:
    """systemd on the running host: real systemctl, systemd-sysusers, systemd-tmpfiles."""

    available = True

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SystemdError(f"{' '.join(argv)} timed out after {timeout}s",
                               argv=list(argv)) from exc
        except OSError as exc:
            raise SystemdError(f"cannot run {argv[0]}: {exc}", argv=list(argv)) from exc
        if check and result.returncode != 0:
            raise SystemdError(f"{' '.join(argv)} exited {result.returncode}: "
                               f"{result.stderr.strip()}", argv=list(argv),
                               returncode=result.returncode, stderr=result.stderr)
        return result

    def _root_args(self) -> list[str]:
        return [] if self.layout.root == Path("/") else [f"--root={self.layout.root}"]

    def daemon_reload(self) -> None:
        self._run(["systemctl", "daemon-reload"])

    def sysusers(self) -> None:
        self._run(["systemd-sysusers", *self._root_args(), SYSUSERS_CONF])

    def tmpfiles(self) -> None:
        self._run(["systemd-tmpfiles", *self._root_args(), "--create", TMPFILES_CONF])

    def enable(self) -> None:
        self._run(["systemctl", *self._root_args(), "enable", UNIT])

    def disable(self) -> None:
        self._run(["systemctl", *self._root_args(), "disable", UNIT], check=False)

    def stop(self) -> None:
        self._run(["systemctl", "stop", UNIT], check=False)

    def restart(self, timeout: float, settle: float) -> StartResult:
        """Restart and wait for READY (systemctl blocks for Type=notify); then make sure it
        is still active with the same main PID after `settle` seconds."""
        import time

        self._run(["systemctl", "reset-failed", UNIT], check=False)
        try:
            result = self._run(["systemctl", "restart", UNIT], check=False, timeout=timeout)
        except Exception as exc:  # timeout: the start job is still pending
            return StartResult(False, f"not READY within {timeout}s: {exc}")
        if result.returncode != 0:
            return StartResult(False, f"systemctl restart exited {result.returncode}: "
                                      f"{result.stderr.strip()}")
        first = self.show("ActiveState", "MainPID", "NRestarts")
        if first.get("ActiveState") != "active":
            return StartResult(False, f"unit is {first.get('ActiveState')} after start")
        time.sleep(settle)
        again = self.show("ActiveState", "MainPID", "NRestarts")
        if again.get("ActiveState") != "active" or again.get("MainPID") != first.get("MainPID"):
            return StartResult(False, f"unit did not stay up: {again}")
        return StartResult(True, f"active, main PID {again.get('MainPID')}")

    def show(self, *props: str) -> dict[str, str]:
        result = self._run(["systemctl", "show", UNIT, *(f"-p{p}" for p in props)], check=False)
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def journal_tail(self, lines: int = 15) -> str:
        result = self._run(["journalctl", "-u", UNIT, "-o", "cat", "--no-pager", "-n",
                            str(lines)], check=False)
        return result.stdout.strip()


class OfflineSystemd(Systemd):
    """An install below --root: users, directories and the enable link are made in the root;
    nothing is started (there is no systemd managing that tree)."""

    available = False

    def daemon_reload(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def restart(self, timeout: float, settle: float) -> StartResult:
        return StartResult(None, f"not started: installed below --root {self.layout.root}")

    def show(self, *props: str) -> dict[str, str]:
        return {}

    def journal_tail(self, lines: int = 15) -> str:
        return ""


def systemd_for(layout: Layout) -> Systemd:
    if layout.root == Path("/"):
        return Systemd(layout)
    return OfflineSystemd(layout)


def remove_tree(path: Path) -> None:
    """Remove a file, link or tree (read-only ones too) by file descriptor, following no link:
    a link planted below the spool is removed, never what it points at."""
    fsutil.remove_tree(path)
