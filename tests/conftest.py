"""Shared fixtures: the real sample photos shipped in insightface's wheel, and a umask that no test
can leak into the next."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _restore_umask() -> Any:
    """Commands run in-process harden themselves (`run-job` and the worker set umask 0077, as the
    units do); put the process umask back so a later test's file modes do not depend on order."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _insightface_images() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface is not installed (engine extra)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


@pytest.fixture(scope="session")
def t1_jpg() -> Path:
    """insightface's t1.jpg: six faces."""
    return _insightface_images() / "t1.jpg"


@pytest.fixture(scope="session")
def hanks_png() -> Path:
    """insightface's Tom_Hanks_54745.png: one face."""
    return _insightface_images() / "Tom_Hanks_54745.png"


@pytest.fixture(scope="session")
def factory_module() -> ModuleType:
    """tests/bundle/factory.py: builds valid bundles and each kind of tampered one."""
    from tests.bundle import factory

    return factory


@pytest.fixture
def factory(tmp_path: Path, factory_module: ModuleType) -> Any:
    return factory_module.BundleFactory(tmp_path / "f")
