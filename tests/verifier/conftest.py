"""Fixtures for verifier tests: the bundle factory from tests/bundle (keys, trust, bundles)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FACTORY_NAME = "sealfuse_tests_bundle_factory"


def load_factory() -> ModuleType:
    """Import tests/bundle/factory.py under the same unique name as tests/bundle/conftest.py."""
    name = FACTORY_NAME
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "bundle" / "factory.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


FACTORY_MODULE = load_factory()  # test modules take it from sys.modules at collection time


@pytest.fixture(scope="session")
def factory_module() -> ModuleType:
    return load_factory()


@pytest.fixture
def factory(tmp_path: Path, factory_module: ModuleType) -> Any:
    return factory_module.BundleFactory(tmp_path / "f")
