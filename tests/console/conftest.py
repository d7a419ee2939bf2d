"""Fixtures for the console tests: a real watch daemon and a real console on a temporary spool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.consolelib import ConsoleEnv
from tests.watch.watchlib import WatchEnv


@pytest.fixture
def watch_env(tmp_path: Path, hanks_png: Path) -> Iterator[WatchEnv]:
    env = WatchEnv(tmp_path, hanks_png)
    yield env
    env.stop_all()


@pytest.fixture
def console_env(tmp_path: Path, watch_env: WatchEnv) -> Iterator[ConsoleEnv]:
    env = ConsoleEnv(tmp_path, watch_env.spool)
    env.add_user("alice", "submitter")
    env.add_user("bob", "submitter")
    env.add_user("rita", "reviewer")
    env.add_user("audrey", "auditor")
    env.add_user("adam", "admin")
    old = os.umask(0o077)  # as under the units' UMask=0077: sharing must not rely on the umask
    try:
        env.start()
    finally:
        os.umask(old)
    yield env
    env.stop()
