"""The real starter models (BlazeFace, FaceMesh) for tests: found where scripts/setup.sh put them.

`scripts/setup.sh` runs `sealfuse models fetch-starter` into the default models directory; a test
models directory gets copies of those verified files next to its stand-ins.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

STARTER = ("blazeface_full_range", "blazeface_short_range", "facemesh_468")


def starter_source() -> Path:
    """The directory holding the fetched starter models ($SEALFUSE_STARTER_MODELS, else the default models dir)."""
    from sealfuse.engine.options import default_models_dir
    from sealfuse.engine.registry import CATALOG

    env = os.environ.get("SEALFUSE_STARTER_MODELS")
    candidates = [Path(env)] if env else []
    candidates += [default_models_dir(), Path.home() / ".local/share/sealfuse/models"]
    for d in candidates:
        if all((d / CATALOG[n].file).is_file() for n in STARTER):
            return d
    raise RuntimeError("the starter models are missing: run scripts/setup.sh (it runs "
                       "'sealfuse models fetch-starter') before the tests")


def add_starter(models_dir: Path) -> Path:
    """Copy the three starter model files into `models_dir` (copies: a test may tamper with them)."""
    from sealfuse.engine.registry import CATALOG

    src = starter_source()
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in STARTER:
        f = CATALOG[name].file
        if (models_dir / f).exists():
            continue
        shutil.copyfile(src / f, models_dir / f)
    return models_dir
