"""System-test fixtures: a booted container (real systemd as PID 1) per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.container import Container, skip_reason

STATE = Path("/tmp/sealfuse-ct")


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    ct = Container.boot(STATE)
    try:
        yield ct
    finally:
        ct.down()
