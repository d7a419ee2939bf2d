"""Engine fixtures: options pointing at stand-in models, and shared decoded sample frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sealfuse.engine.imageio import read_image
from sealfuse.engine.options import SwapOptions
from tests.engine import standins  # noqa: F401  (re-exported for tests)
from tests.starter_models import add_starter


@pytest.fixture(scope="session")
def standin_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.engine.standins import models_dir

    return models_dir(tmp_path_factory.mktemp("models"), enhancer=True, parser=True)


@pytest.fixture(scope="session")
def empty_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No operator-supplied model: only the starter models that every install has."""
    return add_starter(tmp_path_factory.mktemp("no-models"))


@pytest.fixture(scope="session")
def t1_frame(t1_jpg: Path) -> np.ndarray:
    return read_image(t1_jpg, max_pixels=SwapOptions().max_pixels)


@pytest.fixture(scope="session")
def cpu_options(empty_models: Path) -> SwapOptions:
    return SwapOptions(models_dir=empty_models, execution_providers=("cpu",), execution_threads=2)
