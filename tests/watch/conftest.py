"""Fixtures for the watch-folder tests; helpers live in watchlib.py (importable by the tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watch.watchlib import WatchEnv  # noqa: E402


@pytest.fixture
def watch_env(tmp_path: Path, hanks_png: Path) -> Iterator[WatchEnv]:
    env = WatchEnv(tmp_path, hanks_png)
    yield env
    env.stop_all()
