"""The offline installer: verify a signed bundle, stage it as a release, switch `current`
atomically, restart the unit and wait for READY, and return to the previous release by itself
when the new one does not come up. Also rollback and uninstall.

Nothing is written before the bundle verifies. See docs/operator.md for the exit codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealfuse.appliance.release import (
    UNIT,
    InstallRecord,
    Layout,
    StartResult,
    Systemd,
    locked,
    now_iso,
    remove_tree,
    switch_symlink,
    systemd_for,
    write_atomic,
)
from sealfuse.engine.registry import write_lock
from sealfuse.verifier import (
    Trust,
    VerificationError,
    VerifiedBundle,
    accept_rotation,
    extract_bundle,
    load_trust,
    verify_bundle,
)


# -- errors ---------------------------------------------------------------------------------
class InstallError(Exception):
    """Base of every installer failure; carries its evidence and an exit code."""

    exit_code = 80

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence = evidence

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "exit_code": self.exit_code,
                "message": self.message,
                "evidence": json.loads(json.dumps(self.evidence, default=str))}


class StateError(InstallError):
    """The install record or layout on this machine is unusable."""

    exit_code = 80


class LockBusyError(StateError):
    """Another install, rollback or uninstall is running."""

    exit_code = 80


class RolledBackError(InstallError):
    """The new release did not come up; the previous release was restored and is running."""

    exit_code = 81


class ServiceDownError(InstallError):
    """The release did not come up and there was nothing (working) to return to."""

    exit_code = 82


class NothingToRollBackError(InstallError):
    """No earlier release is kept on disk (or the one asked for is not)."""

    exit_code = 83


class NotInstalledError(InstallError):
    """sealfuse is not installed here."""

    exit_code = 84


class TrustRequiredError(InstallError):
    """The first install needs --trust; no trust file is pinned yet."""

    exit_code = 85


class ReleaseRunningError(InstallError):
    """The bundle's version is the running release already."""

    exit_code = 86


class PlatformMismatchError(InstallError):
    """The bundle targets another Python or CPU architecture than this machine's."""

    exit_code = 87


class InsufficientSpaceError(InstallError):
    """Not enough free space to stage the release."""

    exit_code = 88


class VenvError(InstallError):
    """Creating the release's venv or installing its locked wheels failed."""

    exit_code = 89


class SystemdError(InstallError):
    """A systemctl, systemd-sysusers or systemd-tmpfiles call failed."""

    exit_code = 90


EXIT_CODES: dict[int, str] = {
    0: "installed and running (READY), or installed without starting (--no-start, --root)",
    2: "usage error, or the bundle or trust file cannot be read",
    10: "10-70: the verifier refused the bundle or trust file (table in `sealfuse verify "
        "--help`; 11 a bad trust rotation, 41 a downgrade); nothing changed",
    80: "StateError/LockBusyError: install record unusable or another installer running",
    81: "RolledBackError: new release did not come up; previous release restored and running",
    82: "ServiceDownError: release did not come up and nothing to return to (service stopped)",
    83: "NothingToRollBackError: no earlier release kept on disk",
    84: "NotInstalledError: sealfuse is not installed",
    85: "TrustRequiredError: first install needs --trust",
    86: "ReleaseRunningError: that version is already running",
    87: "PlatformMismatchError: bundle built for another Python/arch",
    88: "InsufficientSpaceError: not enough free space",
    89: "VenvError: venv or pip install of the locked wheels failed; nothing switched",
    90: "SystemdError: systemctl/sysusers/tmpfiles failed",
}


def exit_code_help() -> str:
    return "\n".join(f"{code:>3}  {text}" for code, text in sorted(EXIT_CODES.items()))


# -- options and results --------------------------------------------------------------------
@dataclass(frozen=True)
class InstallOptions:
    trust: Path | None = None
    allow_downgrade: bool = False
    start: bool = True
    ready_timeout: float = 180.0
    settle: float = 3.0
    python: str = "/usr/bin/python3"
    keep: int = 3
    gpu: bool | None = None  # None: install the GPU drop-in when /dev/nvidiactl exists
    now: str | None = None  # expiry check time (tests); default: the clock


@dataclass
class InstallResult:
    version: str
    previous: str | None
    started: bool | None
    detail: str
    downgrade: bool = False
    trust: str = "pinned"  # pinned | first-pin | rotated
    pruned: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "previous": self.previous,
                "started": self.started, "detail": self.detail, "downgrade": self.downgrade,
                "trust": self.trust, "pruned": self.pruned}


# -- helpers --------------------------------------------------------------------------------
def _audit(layout: Layout, event: str, **fields: Any) -> None:
    """Append to the audit log when its directory exists (never create it before verification)."""
    if not layout.audit_log.parent.is_dir():
        return
    from sealfuse.appliance.audit import AuditLog

    AuditLog(layout.audit_log).append(event, **fields)


def resolve_trust(layout: Layout, offered: Path | None) -> tuple[Trust, str, bytes | None]:
    """(trust to verify with, how it was chosen, bytes to pin or None). Reads only."""
    if layout.trust.exists():
        pinned = load_trust(layout.trust)
        if offered is None or Path(offered).read_bytes() == layout.trust.read_bytes():
            return pinned, "pinned", None
        new = load_trust(offered)
        accept_rotation(pinned, new)  # RotationError (exit 11) unless signed by the threshold
        return new, "rotated", Path(offered).read_bytes()
    if offered is None:
        raise TrustRequiredError(f"no trust file is pinned at {layout.trust}; the first install "
                                 "needs --trust FILE", path=str(layout.trust))
    return load_trust(offered), "first-pin", Path(offered).read_bytes()


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
    tag, machine = target_platform(python)
    if vb.platform.python != tag or vb.platform.arch != machine:
        raise PlatformMismatchError(
            f"bundle targets {vb.platform.python}/{vb.platform.arch}, this machine's {python} is "
            f"{tag}/{machine}", bundle=f"{vb.platform.python}/{vb.platform.arch}",
            machine=f"{tag}/{machine}")


def check_space(layout: Layout, bundle: Path) -> None:
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


def stage_release(bundle: Path, trust: Trust, staging: Path, opts: InstallOptions,
                  floor: str | None) -> VerifiedBundle:
    """Extract (re-verifying every byte), build the venv, lay out models read-only."""
    staging.mkdir(mode=0o755)
    vb = extract_bundle(bundle, trust, staging / "payload", floor_version=floor,
                        allow_downgrade=opts.allow_downgrade, now=opts.now)
    os.chmod(staging / "payload", 0o755)
    build_venv(staging, vb, opts.python)
    shutil.rmtree(staging / "payload" / "wheels", ignore_errors=True)  # installed; saves space
    models = staging / "models"
    src = staging / "payload" / "models"
    if src.is_dir():
        os.rename(src, models)
    else:
        models.mkdir()
    # The engine's registry refuses any model without a pin: write the pins from the verified
    # manifest, so each session is created only from a file matching its signed sha256.
    write_lock(models, [{"name": m.name, "file": Path(m.file).name, "sha256": m.sha256,
                         "size": m.size, "licence": m.licence} for m in vb.models])
    for entry in models.iterdir():
        os.chown(entry, 0, 0)
        os.chmod(entry, 0o444)
    os.chmod(models, 0o555)
    write_atomic(staging / "manifest.json", vb.manifest_bytes, 0o444)
    info = {**{k: v for k, v in vb.to_json().items() if k not in ("members", "ok")},
            "installed": now_iso(), "bundle_file": bundle.name}
    write_atomic(staging / "release.json",
                 (json.dumps(info, indent=2, sort_keys=True) + "\n").encode(), 0o444)
    return vb


def _want_gpu(layout: Layout, opts_gpu: bool | None) -> bool:
    if opts_gpu is not None:
        return opts_gpu
    return (layout.root / "dev" / "nvidiactl").exists()


def _apparmor_enabled(layout: Layout) -> bool:
    return (layout.root == Path("/") and Path("/sys/kernel/security/apparmor/profiles").exists()
            and shutil.which("apparmor_parser") is not None)


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
    if _want_gpu(layout, gpu) and (hardening / "gpu.conf").is_file():
        put(hardening / "gpu.conf", gpu_dropin)
    else:
        gpu_dropin.unlink(missing_ok=True)
    profile = hardening / "apparmor" / "sealfuse-engine"
    if _apparmor_enabled(layout) and profile.is_file() and (hardening / "apparmor.conf").is_file():
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


def prune(layout: Layout, record: InstallRecord, keep: int) -> list[str]:
    """Keep the current release and the most recent others up to `keep` in all."""
    if not layout.releases.is_dir():
        return []
    keep_set = {record.current} | set([v for v in reversed(record.order) if v != record.current]
                                      [: max(keep - 1, 0)])
    removed = []
    for path in sorted(layout.releases.iterdir()):
        name = path.name
        if name.startswith(".") or name in keep_set:
            continue
        remove_tree(path)
        record.forget(name)
        removed.append(name)
    return removed


def _return_to(layout: Layout, record: InstallRecord, systemd: Systemd, failed: str,
               previous: str | None, opts: InstallOptions, why: str, action: str) -> InstallError:
    """The new release `failed` did not come up: switch back to `previous` and restart it."""
    journal = systemd.journal_tail()
    if previous is None:
        systemd.stop()
        systemd.disable()
        layout.current.unlink(missing_ok=True)
        for path in (layout.unit_file, layout.dropin_dir / "gpu.conf",
                     layout.dropin_dir / "apparmor.conf"):
            path.unlink(missing_ok=True)
        systemd.daemon_reload()
        record.forget(failed)
        record.log(f"{action}_failed", version=failed, reason=why)
        record.save(layout)
        _audit(layout, f"{action}_failed", version=failed, reason=why)
        return ServiceDownError(f"release {failed} did not come up ({why}); there is no earlier "
                                f"release to return to, so the service is stopped",
                                version=failed, reason=why, journal=journal)
    activate(layout, previous, systemd, opts.gpu)
    back = systemd.restart(opts.ready_timeout, opts.settle)
    record.activate(previous)
    record.log(f"{action}_rolled_back", version=failed, restored=previous, reason=why,
               restored_ok=back.ok)
    record.save(layout)
    _audit(layout, f"{action}_rolled_back", version=failed, restored=previous, reason=why,
           restored_ok=back.ok)
    if back.ok is False:
        return ServiceDownError(f"release {failed} did not come up ({why}); returned to "
                                f"{previous}, which did not come up either ({back.detail})",
                                version=failed, restored=previous, reason=why, journal=journal)
    return RolledBackError(f"release {failed} did not come up ({why}); returned to {previous}, "
                           f"which is {back.detail}", version=failed, restored=previous,
                           reason=why, journal=journal)


# -- commands -------------------------------------------------------------------------------
def install(bundle: Path, opts: InstallOptions, layout: Layout | None = None,
            systemd: Systemd | None = None) -> InstallResult:
    """Verify, stage, switch, restart, wait for READY; return to the previous release if not."""
    layout = layout or Layout()
    systemd = systemd or systemd_for(layout)
    bundle = Path(bundle)
    trust, trust_how, pin = resolve_trust(layout, opts.trust)
    record = InstallRecord.load(layout)
    floor = record.current
    try:
        vb = verify_bundle(bundle, trust, floor_version=floor,
                           allow_downgrade=opts.allow_downgrade, now=opts.now)
    except VerificationError as exc:
        _audit(layout, "install_refused", bundle=bundle.name, error=type(exc).__name__,
               exit_code=exc.exit_code, message=exc.message, installed=floor)
        raise
    if vb.version == record.current:
        raise ReleaseRunningError(f"version {vb.version} is the running release",
                                  version=vb.version)
    check_platform(vb, opts.python)
    check_space(layout, bundle)

    with locked(layout):
        if InstallRecord.load(layout).current != floor:
            raise StateError("the installed release changed while this bundle was verified; "
                             "run the install again", expected=floor)
        layout.releases.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.opt, 0o755)
        os.chmod(layout.releases, 0o755)
        # Staged at its final path: venv scripts and pyvenv.cfg carry absolute paths. A
        # release is complete once release.json exists (written last); until `current` points
        # at it, nothing runs it.
        final = layout.release(vb.version)
        remove_tree(final)  # a kept, non-running copy of this version (downgrade/reinstall)
        try:
            vb = stage_release(bundle, trust, final, opts, floor)
        except BaseException as exc:
            remove_tree(final)
            if isinstance(exc, (InstallError, VerificationError)):
                record.log("install_failed", version=vb.version, error=type(exc).__name__)
                record.save(layout)
                _audit(layout, "install_failed", version=vb.version, error=type(exc).__name__,
                       message=str(exc)[:500])
            raise
        if pin is not None:
            write_atomic(layout.trust, pin, 0o644)
        previous = record.current
        activate(layout, vb.version, systemd, opts.gpu)
        record.activate(vb.version)
        record.log("install", version=vb.version, previous=previous, downgrade=vb.downgrade,
                   manifest_sha256=vb.manifest_sha256, signers=list(vb.signer_names))
        record.save(layout)
        _audit(layout, "install", version=vb.version, previous=previous, downgrade=vb.downgrade,
               bundle=bundle.name, manifest_sha256=vb.manifest_sha256,
               signers=list(vb.signers), trust=trust_how)
        if trust_how != "pinned":
            _audit(layout, f"trust_{trust_how.replace('-', '_')}", trust_version=trust.version,
                   keys=sorted(trust.keys), threshold=trust.threshold)

        started: StartResult = StartResult(None, "not started (--no-start)")
        if opts.start:
            started = systemd.restart(opts.ready_timeout, opts.settle)
            if started.ok is False:
                err = _return_to(layout, record, systemd, vb.version, previous, opts,
                                 started.detail, "install")
                remove_tree(final)
                if previous is None and trust_how == "first-pin":
                    layout.trust.unlink(missing_ok=True)
                raise err
            _audit(layout, "service_ready", version=vb.version, detail=started.detail)
        pruned = prune(layout, record, opts.keep)
        record.save(layout)
        return InstallResult(vb.version, previous, started.ok, started.detail, vb.downgrade,
                             trust_how, pruned)


@dataclass
class RollbackResult:
    version: str
    previous: str
    started: bool | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "previous": self.previous,
                "started": self.started, "detail": self.detail}


def rollback(layout: Layout | None = None, systemd: Systemd | None = None, *,
             to: str | None = None, opts: InstallOptions | None = None) -> RollbackResult:
    """Switch back to the previous kept release (or `to`), restart, wait for READY."""
    layout = layout or Layout()
    systemd = systemd or systemd_for(layout)
    opts = opts or InstallOptions()
    with locked(layout):
        record = InstallRecord.load(layout)
        current = record.current
        if current is None:
            raise NotInstalledError("sealfuse is not installed", path=str(layout.record))
        target = to or record.previous(layout)
        if (target is None or target == current
                or not (layout.release(target) / "release.json").is_file()):
            kept = sorted(p.name for p in layout.releases.iterdir() if not p.name.startswith("."))
            raise NothingToRollBackError(
                f"no earlier release to roll back to (current {current}; kept: {kept})",
                current=current, requested=to, kept=kept)
        activate(layout, target, systemd, opts.gpu)
        record.activate(target)
        record.log("rollback", version=target, previous=current)
        record.save(layout)
        _audit(layout, "rollback", version=target, previous=current)
        started = systemd.restart(opts.ready_timeout, opts.settle)
        if started.ok is False:
            raise _return_to(layout, record, systemd, target, current, opts, started.detail,
                             "rollback")
        return RollbackResult(target, current, started.ok, started.detail)


@dataclass
class UninstallResult:
    removed: list[str]
    kept: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "removed": self.removed, "kept": self.kept}


def _delete_user(layout: Layout) -> list[str]:
    """Remove the sealfuse user and group that sysusers.d created."""
    removed = []
    root_args = [] if layout.root == Path("/") else ["--root", str(layout.root)]
    for tool, name, db in (("userdel", "sealfuse", "passwd"), ("groupdel", "sealfuse", "group")):
        dbfile = layout.root / "etc" / db
        if dbfile.exists() and any(line.startswith(f"{name}:")
                                   for line in dbfile.read_text().splitlines()):
            result = subprocess.run([tool, *root_args, name], capture_output=True, text=True,
                                    timeout=60)
            if result.returncode != 0:
                raise SystemdError(f"{tool} {name} failed: {result.stderr.strip()}")
            removed.append(f"{db}:{name}")
    return removed


def uninstall(layout: Layout | None = None, systemd: Systemd | None = None, *,
              purge: bool = False) -> UninstallResult:
    """Stop and remove the service, units and releases. Without `purge` the spool, audit log,
    state, install record and pinned trust stay; with it everything sealfuse made goes."""
    layout = layout or Layout()
    systemd = systemd or systemd_for(layout)
    record = InstallRecord.load(layout)
    if record.current is None and not layout.opt.exists() and not purge:
        raise NotInstalledError("sealfuse is not installed", path=str(layout.opt))
    removed: list[str] = []
    with locked(layout):
        _audit(layout, "uninstall", version=record.current, purge=purge)
        systemd.stop()
        systemd.disable()
        ours = [layout.unit_file, layout.dropin_dir / "gpu.conf",
                layout.dropin_dir / "apparmor.conf", layout.sysusers_file, layout.tmpfiles_file]
        if layout.apparmor_file.exists() and _apparmor_enabled(layout):
            subprocess.run(["apparmor_parser", "-R", str(layout.apparmor_file)],
                           capture_output=True, timeout=60)
        ours.append(layout.apparmor_file)
        for path in ours:
            if path.exists():
                path.unlink()
                removed.append(str(path))
        if layout.dropin_dir.is_dir() and (purge or not any(layout.dropin_dir.iterdir())):
            shutil.rmtree(layout.dropin_dir)
            removed.append(str(layout.dropin_dir))
        systemd.daemon_reload()
        if layout.opt.exists():
            remove_tree(layout.opt)
            removed.append(str(layout.opt))
        if purge:
            for path in (layout.var, layout.etc, layout.root / "run" / "sealfuse"):
                if path.exists():
                    remove_tree(path)
                    removed.append(str(path))
            removed += _delete_user(layout)
            for d in (layout.sysusers_file.parent, layout.tmpfiles_file.parent,
                      layout.apparmor_file.parent):
                with contextlib.suppress(OSError):  # only when empty: others' files stay
                    d.rmdir()
                    removed.append(str(d))
            kept: list[str] = []
        else:
            record.current = None
            record.order = []
            record.log("uninstall")
            record.save(layout)
            kept = [str(p) for p in (layout.spool, layout.audit_log, layout.var / "state",
                                     layout.record, layout.trust, layout.watch_config)
                    if p.exists()]
    if purge:
        layout.lock.unlink(missing_ok=True)
    return UninstallResult(removed, kept)

