"""Watching the inbox: inotify events, periodic full scans and the stability timer for each entry.

Knows nothing about jobs: it tracks which entries exist and whether each one is whole (closed
after writing, renamed in, or unchanged for `stable_seconds`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from sealfuse.appliance.fsutil import FollowError, listdir_under, lstat_under

MANIFEST_SUFFIX = ".job.json"
CANCEL_SUFFIX = ".cancel.json"  # a removal request (docs/watch-folder.md)
REFUSED_RETRY_SECONDS = 60.0  # an entry the daemon could not handle is judged again after this
WATCH_FLAGS = (inotify_flags.CLOSE_WRITE | inotify_flags.MOVED_TO | inotify_flags.CREATE
               | inotify_flags.MODIFY | inotify_flags.ATTRIB | inotify_flags.MOVED_FROM
               | inotify_flags.DELETE | inotify_flags.DELETE_SELF | inotify_flags.DONT_FOLLOW
               | inotify_flags.ONLYDIR)


def utcnow() -> str:
    """Now as ISO-8601 UTC with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ignored(name: str) -> bool:
    """Dotfiles and `*.partial` belong to producers still writing: never touched."""
    return name.startswith(".") or name.endswith(".partial")


@dataclass
class Track:
    """What the watcher knows about one inbox entry, for the stability decision."""

    first_seen: float
    sig: tuple[int, ...]
    since: float
    complete: bool = False
    seen_wall: str = field(default_factory=utcnow)


class InboxWatcher:
    """Tracks the entries of inbox/ and of each preset folder inbox/<preset>/.

    `on_new(path)` is called once per new entry (the daemon audits it). Nothing is followed:
    preset folders are listed through O_NOFOLLOW|O_DIRECTORY descriptors and watched with
    IN_DONT_FOLLOW|IN_ONLYDIR; a preset folder that is not a real directory of the spool's
    filesystem (a symlink, a file) is tracked as an inbox entry instead, to be quarantined.
    """

    def __init__(self, inbox: Path, presets: Iterable[str], stable_seconds: float,
                 on_new: Callable[[Path], None] | None = None) -> None:
        self.inbox = inbox
        self.root = inbox.parent
        self.presets = set(presets)
        self.refused: dict[Path, tuple[tuple[int, ...], float]] = {}
        self.stable_seconds = stable_seconds
        self.on_new = on_new
        self.tracks: dict[Path, Track] = {}
        self.inotify: INotify | None = None
        self.wds: dict[int, Path] = {}
        self.last_scan = 0.0

    def start(self) -> None:
        """Open inotify and watch the inbox and every preset folder that is a real directory."""
        self.inotify = INotify()
        self._watch(self.inbox)
        for name in sorted(self.presets):
            self._watch(self.inbox / name)

    def _watch(self, directory: Path) -> None:
        assert self.inotify is not None
        try:
            wd = self.inotify.add_watch(str(directory), WATCH_FLAGS)
        except OSError:  # a symlink or a non-directory (IN_DONT_FOLLOW|IN_ONLYDIR): scanned as an entry
            return
        self.wds[wd] = directory

    def fileno(self) -> int:
        """The inotify descriptor, for select()."""
        assert self.inotify is not None
        return self.inotify.fileno()

    def close(self) -> None:
        """Close the inotify descriptor."""
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    def _rel(self, path: Path) -> Path:
        return path.relative_to(self.root)

    def is_preset_dir(self, path: Path) -> bool:
        """inbox/<preset> itself (the folder, not an entry to judge) when it is a real directory on
        the spool's filesystem."""
        if path.parent != self.inbox or path.name not in self.presets:
            return False
        try:
            st = lstat_under(self.root, self._rel(path))
            return stat.S_ISDIR(st.st_mode) and st.st_dev == os.lstat(self.inbox).st_dev
        except (FileNotFoundError, FollowError):
            return False

    def make_preset_dir(self, name: str) -> None:
        """Create inbox/<name> (missing) with the inbox's permission bits. The mode is given to
        mkdir itself (never chmod: the unit's RestrictSUIDSGID= refuses a chmod that carries the
        setgid bit); the setgid bit and the group come from the inbox, as for any new entry."""
        mode = stat.S_IMODE(os.stat(self.inbox).st_mode) & 0o1777
        fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        previous = os.umask(0)
        try:
            os.mkdir(name, mode=mode, dir_fd=fd)
        except FileExistsError:
            pass
        finally:
            os.umask(previous)
            os.close(fd)

    def restore_preset(self, name: str) -> None:
        """Make inbox/<name> again (and watch it) when it is missing (quarantined or removed)."""
        if not os.path.lexists(self.inbox / name):
            try:
                self.make_preset_dir(name)
            except OSError as exc:  # never fatal: drops for this preset wait until it exists
                print(f"sealfuse watch: cannot make inbox/{name}: {exc}", file=sys.stderr, flush=True)
                return
            self._watch(self.inbox / name)

    def refuse(self, path: Path) -> None:
        """The daemon could not handle this entry (it stays where it is): leave it alone until it
        changes or REFUSED_RETRY_SECONDS pass."""
        track = self.tracks.pop(path, None)
        if track is not None:
            self.refused[path] = (track.sig, time.monotonic())

    def scan(self) -> None:
        """Full listing: discovers entries inotify missed and refreshes stability."""
        self.last_scan = time.monotonic()
        seen: set[Path] = set()
        for name in sorted(self.presets):
            self.restore_preset(name)
        for directory in [self.inbox] + [self.inbox / n for n in sorted(self.presets)]:
            if directory != self.inbox and not self.is_preset_dir(directory):
                continue  # not a real directory: judged as an inbox entry instead
            try:
                names = listdir_under(self.root, self._rel(directory))
            except (FileNotFoundError, NotADirectoryError, FollowError):
                continue
            for name in names:
                path = directory / name
                if directory == self.inbox and self.is_preset_dir(path):
                    continue
                seen.add(path)
                self.touch(path, complete=False)
        for path in list(self.tracks):
            if path not in seen:
                del self.tracks[path]
        for path in list(self.refused):
            if path not in seen:
                del self.refused[path]

    def touch(self, path: Path, *, complete: bool, modified: bool = False) -> None:
        """Record (or refresh) an entry; `complete` marks it whole (closed or renamed in)."""
        if ignored(path.name):
            return
        try:
            st = lstat_under(self.root, self._rel(path))
        except (FileNotFoundError, NotADirectoryError, FollowError):
            self.tracks.pop(path, None)  # gone, or its folder is a link now (judged as an entry)
            return
        now = time.monotonic()
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, st.st_nlink)
        refused = self.refused.get(path)
        if refused is not None:
            if refused[0] == sig and now - refused[1] < REFUSED_RETRY_SECONDS:
                return
            del self.refused[path]
        track = self.tracks.get(path)
        if track is None:
            track = self.tracks[path] = Track(first_seen=now, sig=sig, since=now)
            if self.on_new is not None:
                self.on_new(path)
        elif track.sig != sig or modified:
            track.sig, track.since, track.complete = sig, now, False
        if complete:
            track.complete = True

    def stable(self, path: Path) -> bool:
        """Whole: closed or renamed in, or unchanged for stable_seconds."""
        track = self.tracks.get(path)
        if track is None:
            return False
        return track.complete or time.monotonic() - track.since >= self.stable_seconds

    def age(self, path: Path) -> float:
        """Seconds since the entry was first seen (0 when unknown)."""
        track = self.tracks.get(path)
        return time.monotonic() - track.first_seen if track else 0.0

    def forget(self, path: Path) -> None:
        """Stop tracking an entry (claimed or quarantined)."""
        self.tracks.pop(path, None)

    def pending_drops(self) -> int:
        """Entries that will become jobs or quarantines (loose media waiting for a manifest excluded)."""
        return sum(1 for p in self.tracks if p.parent != self.inbox or p.name.endswith(MANIFEST_SUFFIX)
                   or p.name.endswith(CANCEL_SUFFIX) or p.name in self.presets)

    def handle_events(self) -> None:
        """Drain inotify without blocking and update the tracks."""
        assert self.inotify is not None
        for event in self.inotify.read(timeout=0):
            if event.mask & inotify_flags.Q_OVERFLOW:
                self.scan()
                continue
            directory = self.wds.get(event.wd)
            if directory is None or not event.name:
                if event.mask & (inotify_flags.DELETE_SELF | inotify_flags.IGNORED) and directory is not None:
                    self.wds.pop(event.wd, None)
                continue
            path = directory / event.name
            if directory == self.inbox and event.name in self.presets:
                self._preset_changed(path)
                continue
            if directory != self.inbox and not self.is_preset_dir(directory):
                continue  # an old watch on a folder that was moved away or replaced
            if event.mask & (inotify_flags.DELETE | inotify_flags.MOVED_FROM):
                self.tracks.pop(path, None)
                self.refused.pop(path, None)
            elif event.mask & (inotify_flags.CLOSE_WRITE | inotify_flags.MOVED_TO):
                self.touch(path, complete=True)
            elif event.mask & inotify_flags.CREATE:
                # Links, FIFOs, device nodes and directories are whole when created.
                try:
                    special = not stat.S_ISREG(lstat_under(self.root, self._rel(path)).st_mode)
                except (FileNotFoundError, NotADirectoryError, FollowError):
                    continue
                self.touch(path, complete=special)
            elif event.mask & (inotify_flags.MODIFY | inotify_flags.ATTRIB):
                self.touch(path, complete=False, modified=True)

    def _preset_changed(self, path: Path) -> None:
        """inbox/<preset> was created, replaced or removed: watch it again if it is a real folder,
        otherwise track it as an entry (a symlink or a file there is quarantined)."""
        for wd, directory in list(self.wds.items()):
            if directory == path:  # the watch follows the old inode: drop it, watch afresh
                del self.wds[wd]
                with contextlib.suppress(OSError):
                    assert self.inotify is not None
                    self.inotify.rm_watch(wd)
        if self.is_preset_dir(path):
            self.tracks.pop(path, None)
            self._watch(path)
        elif os.path.lexists(path):
            self.touch(path, complete=True)
        else:
            self.tracks.pop(path, None)
