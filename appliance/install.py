"""The offline installer: verify a signed bundle, stage it as a release, switch `current`
atomically, restart the unit and wait for READY, and return to the previous release by itself
when the new one does not come up. Also rollback (uninstall is in uninstall.py).

Nothing is written before the bundle verifies. Exit codes: errors.py, docs/operator.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealfuse.appliance.clock import check_installed
from sealfuse.appliance.errors import (
    ApplianceError,
    ClockBehindError,
    InstallError,
    NothingToRollBackError,
    NotInstalledError,
    PayloadIncompleteError,
    ReleaseRunningError,
    RolledBackError,
    ServiceDownError,
    StateError,
    TrustRequiredError,
)
from sealfuse.appliance.release import (
    InstallRecord,
    Layout,
    StartResult,
    Systemd,
    audit_event,
    locked,
    own_dir,
    remove_tree,
    systemd_for,
    write_atomic,
)
from sealfuse.appliance.staging import check_platform, check_space, stage_release
from sealfuse.appliance.units import (
    activate,
    check_payload,
    check_service_paths,
    on_disk,
    service_files,
    stop_console,
)
from sealfuse.verifier import (
    Trust,
    VerificationError,
    accept_rotation,
    read_trust_file,
    verify_bundle,
)


# -- options and results --------------------------------------------------------------------
@dataclass(frozen=True)
class InstallOptions:
    """How to install (the `sealfuse install` options); rollback uses the start ones."""

    trust: Path | None = None
    allow_downgrade: bool = False
    start: bool = True
    ready_timeout: float = 180.0
    settle: float = 3.0
    python: str = "/usr/bin/python3"
    keep: int = 3
    gpu: bool | None = None  # None: install the GPU drop-in when /dev/nvidiactl exists
    now: str | None = None  # expiry and clock check time (tests); default: the clock


@dataclass
class InstallResult:
    """What an install did: the new and previous versions, whether it started, trust, prunes."""

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
def resolve_trust(layout: Layout, offered: Path | None) -> tuple[Trust, str, bytes | None]:
    """(trust to verify with, how it was chosen, bytes to pin or None). Reads only."""
    # Each trust file is read once (regular files only: a FIFO never blocks the installer), and
    # the bytes pinned are the bytes that were checked.
    if layout.trust.exists():
        pinned, pinned_raw = read_trust_file(layout.trust)
        if offered is None:
            return pinned, "pinned", None
        new, raw = read_trust_file(offered)
        if raw == pinned_raw:
            return pinned, "pinned", None
        accept_rotation(pinned, new)  # RotationError (exit 11) unless signed by the threshold
        return new, "rotated", raw
    if offered is None:
        raise TrustRequiredError(f"no trust file is pinned at {layout.trust}; the first install "
                                 "needs --trust FILE", path=str(layout.trust))
    new, raw = read_trust_file(offered)
    return new, "first-pin", raw


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
        stop_console(layout, systemd)
        systemd.stop()
        systemd.disable()
        layout.current.unlink(missing_ok=True)
        for path in service_files(layout):
            path.unlink(missing_ok=True)
        systemd.daemon_reload()
        record.forget(failed)
        record.log(f"{action}_failed", version=failed, reason=why)
        record.save(layout)
        audit_event(layout, f"{action}_failed", version=failed, reason=why)
        return ServiceDownError(f"release {failed} did not come up ({why}); there is no earlier "
                                f"release to return to, so the service is stopped",
                                version=failed, reason=why, journal=journal)
    activate(layout, previous, systemd, opts.gpu)
    back = systemd.restart(opts.ready_timeout, opts.settle)
    record.activate(previous)
    record.log(f"{action}_rolled_back", version=failed, restored=previous, reason=why,
               restored_ok=back.ok)
    record.save(layout)
    audit_event(layout, f"{action}_rolled_back", version=failed, restored=previous,
                reason=why, restored_ok=back.ok)
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
        check_installed(layout, floor, opts.now)
    except ClockBehindError as exc:
        audit_event(layout, "install_refused", bundle=bundle.name, error=type(exc).__name__,
                    exit_code=exc.exit_code, message=exc.message, installed=floor)
        raise
    try:
        vb = verify_bundle(bundle, trust, floor_version=floor,
                           allow_downgrade=opts.allow_downgrade, now=opts.now)
        members = {m.relpath for m in vb.members}
        check_payload(vb.version, members.__contains__)  # nothing is written before this
    except (VerificationError, PayloadIncompleteError) as exc:
        audit_event(layout, "install_refused", bundle=bundle.name, error=type(exc).__name__,
                    exit_code=exc.exit_code, message=exc.message, installed=floor)
        raise
    if vb.version == record.current:
        raise ReleaseRunningError(f"version {vb.version} is the running release",
                                  version=vb.version)
    check_platform(vb, opts.python)
    check_space(layout, bundle)
    if record.current is not None:  # before anything is written; the new release's list later
        check_service_paths(layout, record.current)

    with locked(layout):
        if InstallRecord.load(layout).current != floor:
            raise StateError("the installed release changed while this bundle was verified; "
                             "run the install again", expected=floor)
        own_dir(layout.opt)
        own_dir(layout.releases)
        # Staged at its final path: venv scripts and pyvenv.cfg carry absolute paths. A
        # release is complete once release.json exists (written last); until `current` points
        # at it, nothing runs it.
        final = layout.release(vb.version)
        remove_tree(final)  # a kept, non-running copy of this version (downgrade/reinstall)
        try:
            vb = stage_release(bundle, trust, final, python=opts.python,
                               allow_downgrade=opts.allow_downgrade, now=opts.now, floor=floor)
            check_service_paths(layout, vb.version)
        except BaseException as exc:
            remove_tree(final)
            if isinstance(exc, (ApplianceError, VerificationError)):
                record.log("install_failed", version=vb.version, error=type(exc).__name__)
                record.save(layout)
                audit_event(layout, "install_failed", version=vb.version,
                            error=type(exc).__name__, message=str(exc)[:500])
            raise
        if pin is not None:
            write_atomic(layout.trust, pin, 0o644)
        previous = record.current

        def give_up(why: str) -> InstallError:
            """Back to `previous` (or stopped), the new release removed."""
            err = _return_to(layout, record, systemd, vb.version, previous, opts, why, "install")
            remove_tree(final)
            if previous is None and trust_how == "first-pin":
                layout.trust.unlink(missing_ok=True)
            return err

        try:
            activate(layout, vb.version, systemd, opts.gpu)
        except ApplianceError as exc:  # e.g. systemd-tmpfiles failed after the switch
            raise give_up(f"{exc.reason}: {exc.message}") from exc
        record.activate(vb.version)
        record.log("install", version=vb.version, previous=previous, downgrade=vb.downgrade,
                   manifest_sha256=vb.manifest_sha256, signers=list(vb.signer_names))
        record.save(layout)
        audit_event(layout, "install", version=vb.version, previous=previous,
                    downgrade=vb.downgrade, bundle=bundle.name,
                    manifest_sha256=vb.manifest_sha256, signers=list(vb.signers), trust=trust_how,
                    licence_policy=vb.manifest.licence_policy,
                    # the studio's attestations of commercial licences (bundle build --licence-grant)
                    licence_grants={Path(m.file).name: m.licence_grant for m in vb.models
                                    if m.licence_grant is not None})
        if trust_how != "pinned":
            audit_event(layout, f"trust_{trust_how.replace('-', '_')}",
                        trust_version=trust.version, keys=sorted(trust.keys),
                        threshold=trust.threshold)

        started: StartResult = StartResult(None, "not started (--no-start)")
        if opts.start:
            started = systemd.restart(opts.ready_timeout, opts.settle)
            if started.ok is False:
                raise give_up(started.detail)
            audit_event(layout, "service_ready", version=vb.version, detail=started.detail)
        pruned = prune(layout, record, opts.keep)
        record.save(layout)
        return InstallResult(vb.version, previous, started.ok, started.detail, vb.downgrade,
                             trust_how, pruned)


@dataclass
class RollbackResult:
    """What a rollback did: the version now current, the one before, whether it started."""

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
        check_payload(target, on_disk(layout.release(target) / "payload"))  # before any change
        check_service_paths(layout, target)
        try:
            activate(layout, target, systemd, opts.gpu)
        except ApplianceError as exc:
            raise _return_to(layout, record, systemd, target, current, opts,
                             f"{exc.reason}: {exc.message}", "rollback") from exc
        record.activate(target)
        record.log("rollback", version=target, previous=current)
        record.save(layout)
        audit_event(layout, "rollback", version=target, previous=current)
        started = systemd.restart(opts.ready_timeout, opts.settle)
        if started.ok is False:
            raise _return_to(layout, record, systemd, target, current, opts, started.detail,
                             "rollback")
        return RollbackResult(target, current, started.ok, started.detail)
