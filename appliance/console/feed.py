"""Change feed for live progress: one thread reads inotify events from the daemon's status/,
outbox/, failed/ and inbox/ folders and wakes the server-sent-event streams (no polling loop)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

FLAGS = F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.CREATE | F.DELETE | F.ATTRIB


class ChangeFeed:
    def __init__(self, spool: Path) -> None:
        self.dirs = [spool / "status", spool / "outbox", spool / "failed", spool / "inbox"]
        self.spool = spool
        self.version = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watched: set[Path] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="sealfuse-console-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=3)

    def _add_watches(self, ino: INotify) -> None:
        for d in self.dirs:
            if d not in self._watched and d.is_dir():
                with contextlib.suppress(OSError):
                    ino.add_watch(d, FLAGS)
                    self._watched.add(d)
                    self._bump()  # a folder that appears late may already hold news

    def _run(self) -> None:
        ino = INotify()
        with contextlib.suppress(OSError):
            ino.add_watch(self.spool, F.CREATE | F.MOVED_TO)  # status/ may appear after we start
        try:
            while not self._stop.is_set():
                self._add_watches(ino)
                events = ino.read(timeout=1000)
                if events:
                    self._bump()
        finally:
            ino.close()

    def _bump(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self.version += 1
        assert self._event is not None
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, since: int, timeout: float) -> bool:
        """True once the version passed `since` (something changed), False after `timeout`."""
        if self.version != since:
            return True
        assert self._event is not None
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return self.version != since
        return True
