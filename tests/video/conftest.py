"""Video fixtures: CPU options without operator models, the real starter pipeline, and clip makers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Pipeline
from tests.starter_models import add_starter
from tests.video.clips import make_clip


@pytest.fixture(scope="session")
def video_options(tmp_path_factory: pytest.TempPathFactory) -> SwapOptions:
    return SwapOptions(models_dir=add_starter(tmp_path_factory.mktemp("no-models")), execution_providers=("cpu",),
                       execution_threads=2)


@pytest.fixture(scope="session")
def pipeline(video_options: SwapOptions, t1_jpg: Path) -> Pipeline:
    """The real default pipeline (starter BlazeFace + FaceMesh, starter swapper); source: t1.jpg's largest face."""
    return Pipeline(video_options, t1_jpg)


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320x240, 20 frames at 15 fps, the Hanks portrait moving over a background, AAC stereo."""
    return make_clip(tmp_path_factory.mktemp("clips") / "face.mp4")
