"""The release's systemd units, sysusers.d/tmpfiles.d entries and drop-ins, copied into /etc,
and the switch that makes a release current.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sealfuse.appliance.errors import StateError, SystemdError
from sealfuse.appliance.release import UNIT, Layout, Systemd, switch_symlink, write_atomic


def want_gpu(layout: Layout, opts_gpu: bool | None) -> bool:
    """--gpu/--no-gpu, else whether the root has /dev/nvidiactl."""
    if opts_gpu is not None:
        return opts_gpu
    return (layout.root / "dev" / "nvidiactl").exists()


def apparmor_enabled(layout: Layout) -> bool:
    """The running kernel has AppArmor and apparmor_parser exists (never for --root)."""
    return (layout.root == Path("/") and Path("/sys/kernel/security/apparmor/profiles").exists()
            and shutil.which("apparmor_parser") is not None)


def service_files(layout: Layout) -> list[Path]:
    """The unit and the drop-ins that start or shape the service (removed when it must not run)."""
    return [layout.unit_file, layout.dropin_dir / "gpu.conf", layout.dropin_dir / "apparmor.conf"]


def install_units(layout: Layout, version: str, gpu: bool | None) -> list[str]:
    """Copy the release's unit, sysusers.d, tmpfiles.d and applicable drop-ins into /etc."""
    payload = layout.release(version) / "payload"
    written: list[str] = []

    def put(src: Path, dest: Path) -> None:
        write_atomic(dest, src.read_bytes(), 0o644)
        written.append(str(dest.relative_to(layout.root)))

    units = payload / "systemd"
    unit_src = units / UNIT
    if not unit_src.is_file():
        raise StateError(f"release {version} carries no systemd/{UNIT}", version=version)
    put(unit_src, layout.unit_file)
    put(units / "sysusers.d" / "sealfuse.conf", layout.sysusers_file)
    put(units / "tmpfiles.d" / "sealfuse.conf", layout.tmpfiles_file)
    hardening = payload / "hardening"
    gpu_dropin = layout.dropin_dir / "gpu.conf"
    if want_gpu(layout, gpu) and (hardening / "gpu.conf").is_file():
        put(hardening / "gpu.conf", gpu_dropin)
    else:
        gpu_dropin.unlink(missing_ok=True)
    profile = hardening / "apparmor" / "sealfuse-engine"
    if apparmor_enabled(layout) and profile.is_file() and (hardening / "apparmor.conf").is_file():
        put(profile, layout.apparmor_file)
        result = subprocess.run(["apparmor_parser", "-r", str(layout.apparmor_file)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise SystemdError(f"apparmor_parser -r failed: {result.stderr.strip()}")
        put(hardening / "apparmor.conf", layout.dropin_dir / "apparmor.conf")
    return written


def activate(layout: Layout, version: str, systemd: Systemd, gpu: bool | None) -> None:
    """Make `version` the current release: units, then the symlink, then systemd's view."""
    install_units(layout, version, gpu)
    switch_symlink(layout.current, f"releases/{version}")
    systemd.daemon_reload()
    systemd.sysusers()
    systemd.tmpfiles()
    systemd.enable()
