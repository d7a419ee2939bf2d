"""The release's systemd units, sysusers.d/tmpfiles.d entries and drop-ins, copied into /etc,
and the switch that makes a release current.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from sealfuse.appliance import fsutil
from sealfuse.appliance.errors import PayloadIncompleteError, SystemdError, UnsafePathError
from sealfuse.appliance.release import UNIT, Layout, Systemd, switch_symlink, write_atomic

CONSOLE_UNIT = "sealfuse-console.service"
CONSOLE_CONFIG = "etc/sealfuse/console.toml"
# Payload files (below payload/) every release must carry: install_units copies them into /etc.
REQUIRED_PAYLOAD = (f"systemd/{UNIT}", "systemd/sysusers.d/sealfuse.conf",
                    "systemd/tmpfiles.d/sealfuse.conf")
# Optional files that come in pairs: one without the other is an incomplete payload.
PAIRED_PAYLOAD = (("hardening/apparmor/sealfuse-engine", "hardening/apparmor.conf"),
                  ("provenance/signing.key", "provenance/chain.pem"))


def missing_payload(has: Callable[[str], bool]) -> list[str]:
    """The payload files (paths below payload/) the installer needs that `has` says are absent."""
    missing = [rel for rel in REQUIRED_PAYLOAD if not has(rel)]
    for pair in PAIRED_PAYLOAD:
        present = [has(rel) for rel in pair]
        if any(present) and not all(present):
            missing += [rel for rel, there in zip(pair, present, strict=True) if not there]
    return missing


def check_payload(version: str, has: Callable[[str], bool]) -> None:
    """PayloadIncompleteError naming every payload file the installer needs and lacks: from a
    verified manifest's members before anything is written, from a release's files before its
    units are copied into /etc."""
    missing = missing_payload(has)
    if missing:
        raise PayloadIncompleteError(
            f"release {version} lacks payload file(s) the installer needs: {', '.join(missing)} "
            f"(build the bundle with the repository's systemd/ and hardening/ directories)",
            version=version, missing=missing)


def on_disk(payload: Path) -> Callable[[str], bool]:
    """`has` for check_payload: the regular files below a release's payload/ directory."""
    return lambda rel: (payload / rel).is_file()


def console_enabled(layout: Layout) -> bool:
    """`[console] enabled = true` in /etc/sealfuse/console.toml (an unreadable file means off)."""
    import tomllib

    try:
        from sealfuse.appliance.fsutil import read_regular_bytes

        data = tomllib.loads(read_regular_bytes(layout.root / CONSOLE_CONFIG, 1 << 20).decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    console = data.get("console")
    return isinstance(console, dict) and console.get("enabled") is True


def sync_console(layout: Layout, systemd: Systemd) -> str:
    """Enable and (re)start the console unit when the config enables it, else disable and stop
    it. The console never decides whether a release came up: its failure is reported, not fatal."""
    unit = layout.unit_dir / CONSOLE_UNIT
    root_args = [] if layout.root == Path("/") else [f"--root={layout.root}"]
    if console_enabled(layout) and unit.is_file():
        systemd._run(["systemctl", *root_args, "enable", CONSOLE_UNIT])
        if not systemd.available:
            return "enabled"
        r = systemd._run(["systemctl", "restart", CONSOLE_UNIT], check=False)
        return "started" if r.returncode == 0 else f"failed to start: {r.stderr.strip()}"
    stop_console(layout, systemd)
    return "disabled"


def stop_console(layout: Layout, systemd: Systemd) -> None:
    """Disable and stop the console unit (before its file is removed)."""
    if not (layout.unit_dir / CONSOLE_UNIT).exists():
        return
    root_args = [] if layout.root == Path("/") else [f"--root={layout.root}"]
    systemd._run(["systemctl", *root_args, "disable", CONSOLE_UNIT], check=False)
    if systemd.available:
        systemd._run(["systemctl", "stop", CONSOLE_UNIT], check=False)


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
    """The units and the drop-ins that start or shape the services (removed when they must not run)."""
    return [layout.unit_file, layout.dropin_dir / "gpu.conf", layout.dropin_dir / "apparmor.conf",
            layout.unit_dir / CONSOLE_UNIT]


def install_units(layout: Layout, version: str, gpu: bool | None) -> list[str]:
    """Copy the release's unit, sysusers.d, tmpfiles.d and applicable drop-ins into /etc."""
    payload = layout.release(version) / "payload"
    written: list[str] = []

    def put(src: Path, dest: Path) -> None:
        write_atomic(dest, src.read_bytes(), 0o644)
        written.append(str(dest.relative_to(layout.root)))

    check_payload(version, on_disk(payload))  # before anything is written to /etc
    units = payload / "systemd"
    put(units / UNIT, layout.unit_file)
    if (units / CONSOLE_UNIT).is_file():  # started only when the console config enables it
        put(units / CONSOLE_UNIT, layout.unit_dir / CONSOLE_UNIT)
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
    sync_console(layout, systemd)


def _tmpfiles_entries(conf: Path) -> list[tuple[str, str, str]]:
    """(type, path, user) of each `d`/`f` line of a tmpfiles.d file."""
    out = []
    for line in conf.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in ("d", "f"):
            out.append((fields[0], fields[1], fields[3] if len(fields) > 3 else "-"))
    return out


def _uids(layout: Layout) -> dict[str, int]:
    """User name -> uid from the root's /etc/passwd."""
    out = {"root": 0}
    try:
        lines = (layout.root / "etc" / "passwd").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isascii() and fields[2].isdigit():
            out.setdefault(fields[0], int(fields[2]))
    return out


def check_service_paths(layout: Layout, version: str) -> None:
    """Before systemd-tmpfiles (as root) touches the service's directories, refuse any that the
    service user turned into a symlink, a hardlink, a FIFO or another type, or that a stranger
    owns (not root, the line's user or the directory's owner): UnsafePathError, with nothing switched. Missing paths are fine (tmpfiles makes them)."""
    conf = layout.release(version) / "payload" / "systemd" / "tmpfiles.d" / "sealfuse.conf"
    if not conf.is_file():
        return
    uids = _uids(layout)
    for kind, rel, user in _tmpfiles_entries(conf):
        path = layout.root / rel.lstrip("/")
        try:
            dir_fd = fsutil.open_dir(path.parent)
        except FileNotFoundError:
            continue
        try:
            parent = os.fstat(dir_fd)
            try:
                st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            want = stat.S_ISDIR if kind == "d" else stat.S_ISREG
            if not want(st.st_mode):
                raise UnsafePathError(
                    f"{path} is a {_kind(st.st_mode)}, expected a "
                    f"{'directory' if kind == 'd' else 'regular file'}; remove it and install again",
                    path=str(path), found=_kind(st.st_mode))
            if kind == "f" and st.st_nlink != 1:
                raise UnsafePathError(f"{path} has {st.st_nlink} hard links; refused",
                                      path=str(path), nlink=st.st_nlink)
            owners = {0, parent.st_uid} | ({uids[user]} if user in uids else set())
            if st.st_uid not in owners:
                raise UnsafePathError(f"{path} is owned by uid {st.st_uid}, neither root, "
                                      f"{user} nor the owner of its directory",
                                      path=str(path), uid=st.st_uid)
        finally:
            os.close(dir_fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISREG, "regular file"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"
