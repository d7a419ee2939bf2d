"""Staging a verified bundle as a release directory: platform and space checks, extraction
(re-verifying every byte), the venv from the locked wheels, read-only models and their pins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sealfuse.appliance import fsutil
from sealfuse.appliance.errors import InsufficientSpaceError, PlatformMismatchError, VenvError
from sealfuse.appliance.release import Layout, now_iso, write_atomic
from sealfuse.engine import write_lock
from sealfuse.verifier import Trust, VerifiedBundle, extract_bundle


def target_platform(python: str) -> tuple[str, str]:
    """(cpXY tag, machine) of the interpreter the venv will be made from."""
    code = ("import platform,sys; "
            "print(f'cp{sys.version_info[0]}{sys.version_info[1]}', platform.machine())")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                             check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise VenvError(f"cannot run the target interpreter {python}: {exc}",
                        python=python) from exc
    return out[0], out[1]


def check_platform(vb: VerifiedBundle, python: str) -> None:
    """Refuse a bundle built for another Python or CPU than `python` runs on."""
    tag, machine = target_platform(python)
    if vb.platform.python != tag or vb.platform.arch != machine:
        raise PlatformMismatchError(
            f"bundle targets {vb.platform.python}/{vb.platform.arch}, this machine's {python} is "
            f"{tag}/{machine}", bundle=f"{vb.platform.python}/{vb.platform.arch}",
            machine=f"{tag}/{machine}")


def check_space(layout: Layout, bundle: Path) -> None:
    """Refuse when the releases' file system has less than about four bundles free."""
    probe = layout.root
    for candidate in (layout.releases, layout.opt, layout.root / "opt"):
        if candidate.exists():
            probe = candidate
            break
    free = shutil.disk_usage(probe).free
    need = 4 * bundle.stat().st_size
    if free < need:
        raise InsufficientSpaceError(f"{probe} has {free >> 20} MiB free; staging this bundle "
                                     f"needs about {need >> 20} MiB", free=free, need=need)


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONNOUSERSITE="1")
    return env


def build_venv(release: Path, vb: VerifiedBundle, python: str) -> None:
    """venv from the system interpreter, then the locked wheels with hashes, offline."""
    payload = release / "payload"
    venv = release / "venv"
    steps: list[list[str]] = [[python, "-m", "venv", str(venv)]]
    if vb.lock:
        steps.append([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                      "--no-deps", "--require-hashes", "--no-cache-dir", "--only-binary=:all:",
                      "--find-links", str(payload / "wheels"), "-r", str(payload / "lock.txt")])
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, env=_pip_env(),
                                timeout=1800, cwd=payload)
        if result.returncode != 0:
            raise VenvError(f"{' '.join(argv[:4])} ... exited {result.returncode}: "
                            f"{(result.stderr or result.stdout).strip()[-2000:]}",
                            argv=argv, returncode=result.returncode)
    if not (venv / "bin" / "sealfuse").exists():
        raise VenvError("the bundle's wheels do not provide the `sealfuse` command "
                        "(is the sealfuse wheel in the lock?)", venv=str(venv))


def stage_provenance_key(release: Path) -> bool:
    """Move the bundle's C2PA signing key and chain to <release>/provenance/: key 0400 root (the
    tmpfiles.d `z` line hands it to user sealfuse, so only the service reads it), chain 0444."""
    src = release / "payload" / "provenance"
    if not src.is_dir():
        return False
    dir_fd = fsutil.open_dir(src, require_trusted=True)
    try:
        for name, mode in (("signing.key", 0o400), ("chain.pem", 0o444)):
            fd = fsutil.open_file_at(dir_fd, name, os.O_RDONLY, where=str(src))
            try:
                if os.geteuid() == 0:
                    os.fchown(fd, 0, 0)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        os.fchmod(dir_fd, 0o755)
    finally:
        os.close(dir_fd)
    os.rename(src, release / "provenance")
    return True


def model_lock_entries(vb: VerifiedBundle) -> list[dict[str, Any]]:
    """The models.lock.json entries of a verified bundle's models. `licence_class` is the class the
    policy counts (`commercial` under a licence grant: the engine runs the model under a
    commercial policy); a granted entry also keeps its grant and the licence's own class."""
    entries = []
    for m in vb.models:
        entry: dict[str, Any] = {"name": m.name, "file": Path(m.file).name, "sha256": m.sha256,
                                 "size": m.size, "licence": m.licence,
                                 "licence_class": m.policy_class}
        if m.licence_grant is not None:
            entry.update(licence_grant=m.licence_grant, licence_own_class=m.licence_class)
        entries.append(entry)
    return entries


def stage_release(bundle: Path, trust: Trust, staging: Path, *, python: str,
                  allow_downgrade: bool, now: str | None, floor: str | None) -> VerifiedBundle:
    """Extract (re-verifying every byte), build the venv, lay out models read-only."""
    staging.mkdir(mode=0o755)
    vb = extract_bundle(bundle, trust, staging / "payload", floor_version=floor,
                        allow_downgrade=allow_downgrade, now=now)
    stage_provenance_key(staging)  # while payload/ is still 0700
    os.chmod(staging / "payload", 0o755)
    build_venv(staging, vb, python)
    shutil.rmtree(staging / "payload" / "wheels", ignore_errors=True)  # installed; saves space
    models = staging / "models"
    src = staging / "payload" / "models"
    if src.is_dir():
        os.rename(src, models)
    else:
        models.mkdir()
    # The engine's registry refuses any model without a pin: write the pins from the verified
    # manifest, so each session is created only from a file matching its signed sha256.
    # ... and the bundle's licence policy with each model's licence class (verifier/licences.py).
    write_lock(models, model_lock_entries(vb), licence_policy=vb.manifest.licence_policy)
    models_fd = fsutil.open_dir(models, require_trusted=True)
    try:
        for name in os.listdir(models_fd):
            fd = fsutil.open_file_at(models_fd, name, os.O_RDONLY, where=str(models))
            try:
                os.fchown(fd, 0, 0)
                os.fchmod(fd, 0o444)
            finally:
                os.close(fd)
        os.fchmod(models_fd, 0o555)
    finally:
        os.close(models_fd)
    write_atomic(staging / "manifest.json", vb.manifest_bytes, 0o444)
    info = {**{k: v for k, v in vb.to_json().items() if k not in ("members", "ok")},
            "installed": now_iso(), "bundle_file": bundle.name}
    write_atomic(staging / "release.json",
                 (json.dumps(info, indent=2, sort_keys=True) + "\n").encode(), 0o444)
    return vb
