"""Fixtures for the installer and unit tests: repository paths and a scratch systemd root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
HARDENING_DIR = REPO / "hardening"
UNIT = SYSTEMD_DIR / "sealfuse-watch.service"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path
