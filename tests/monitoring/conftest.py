"""Fixtures for the monitoring tests: a real node_exporter + Prometheus on 127.0.0.1 per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.monitoring.promlib import Stack, skip_reason
from tests.monitoring.test_rules import RULES


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    stack = Stack(tmp_path_factory.mktemp("prom"), rule_files=[RULES])
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
