"""The appliance's errors (one root, `ApplianceError`) and the exit-code table of each appliance
command (install, rollback, uninstall, status, doctor, audit verify); `--help` is generated from them.
"""

from __future__ import annotations

from typing import ClassVar

from sealfuse.verifier.errors import ErrorFields, exit_code_help

# Outcomes that are not errors (or not one error), named so that no CLI code holds a number.
EXIT_OK = 0
EXIT_UNHEALTHY = 1  # status: the unit is not active; doctor: a check failed
EXIT_USAGE = 2  # click's own usage errors, and an unreadable bundle, trust file or audit log
EXIT_AUDIT_BROKEN = 1  # audit verify: the chain is broken
VERIFIER_CODES = (10, 70)  # the verifier's refusals (table in `sealfuse verify --help`)


class ApplianceError(ErrorFields, Exception):
    """Root of every appliance failure: a stable `reason`, an `exit_code` and the evidence
    (attributes and `to_dict()` shared with every sealfuse layer through ErrorFields)."""

    classes: ClassVar[list[type[ErrorFields]]] = []
    exit_code = 1
    reason = "appliance_error"


# -- installer (install, rollback, uninstall) ----------------------------------------------------
class InstallError(ApplianceError):
    """Base of every installer failure."""

    exit_code = 80
    reason = "install_error"


class StateError(InstallError):
    """The install record or layout on this machine is unusable."""

    exit_code = 80
    reason = "state_unusable"


class LockBusyError(StateError):
    """Another install, rollback or uninstall is running."""

    exit_code = 80
    reason = "lock_busy"


class RolledBackError(InstallError):
    """The new release did not come up; the previous release was restored and is running."""

    exit_code = 81
    reason = "rolled_back"


class ServiceDownError(InstallError):
    """The release did not come up and there was nothing (working) to return to."""

    exit_code = 82
    reason = "service_down"


class NothingToRollBackError(InstallError):
    """No earlier release is kept on disk (or the one asked for is not)."""

    exit_code = 83
    reason = "nothing_to_roll_back"


class NotInstalledError(InstallError):
    """sealfuse is not installed here."""

    exit_code = 84
    reason = "not_installed"


class TrustRequiredError(InstallError):
    """The first install needs --trust; no trust file is pinned yet."""

    exit_code = 85
    reason = "trust_required"


class ReleaseRunningError(InstallError):
    """The bundle's version is the running release already."""

    exit_code = 86
    reason = "release_running"


class PlatformMismatchError(InstallError):
    """The bundle targets another Python or CPU architecture than this machine's."""

    exit_code = 87
    reason = "platform_mismatch"


class InsufficientSpaceError(InstallError):
    """Not enough free space to stage the release."""

    exit_code = 88
    reason = "insufficient_space"


class VenvError(InstallError):
    """Creating the release's venv or installing its locked wheels failed."""

    exit_code = 89
    reason = "venv_failed"


class SystemdError(InstallError):
    """A systemctl, systemd-sysusers or systemd-tmpfiles call failed."""

    exit_code = 90
    reason = "systemd_failed"


class AuditError(ApplianceError):
    """The audit log cannot be appended to (its last line is not a whole audit entry)."""

    exit_code = 91
    reason = "audit_log_unusable"


class UnsafePathError(ApplianceError):
    """A path root would use is a symlink, hardlink, FIFO or foreign-owned where another user can
    write; nothing was followed or changed there."""

    exit_code = 92
    reason = "unsafe_path"


class ClockBehindError(InstallError):
    """The clock is behind the installed release's signed creation time (beyond the skew)."""

    exit_code = 93
    reason = "clock_behind"


class PayloadIncompleteError(InstallError):
    """The bundle or kept release lacks a unit, sysusers.d or tmpfiles.d file; nothing changed.

    Also half of the AppArmor or provenance pair. Every missing file is named (evidence
    `missing`); nothing is switched or written to /etc."""

    exit_code = 94
    reason = "payload_incomplete"


# -- exit-code tables ---------------------------------------------------------------------------
def _line(cls: type[ApplianceError]) -> str:
    return f"{cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}"


def exit_table(ok: str, *errors: type[ApplianceError], extra: dict[int, str] | None = None
               ) -> dict[int, str]:
    """{exit code: meaning} from the outcome of success, extra codes and the error classes."""
    table = {EXIT_OK: ok, **(extra or {})}
    for cls in errors:
        line = _line(cls)
        table[cls.exit_code] = f"{table[cls.exit_code]}; {line}" if cls.exit_code in table else line
    return dict(sorted(table.items()))


_USAGE = {EXIT_USAGE: "usage error, or the bundle or trust file cannot be read"}
_VERIFIER = {VERIFIER_CODES[0]: f"{VERIFIER_CODES[0]}-{VERIFIER_CODES[1]}: the verifier refused "
             "the bundle or trust file (table in `sealfuse verify --help`; 11 a bad trust "
             "rotation, 41 a downgrade); nothing changed"}

INSTALL_EXIT_CODES = exit_table(
    "installed and running (READY), or installed without starting (--no-start, --root)",
    StateError, LockBusyError, RolledBackError, ServiceDownError, NotInstalledError,
    TrustRequiredError, ReleaseRunningError, PlatformMismatchError, InsufficientSpaceError,
    VenvError, SystemdError, AuditError, UnsafePathError, ClockBehindError,
    PayloadIncompleteError, extra={**_USAGE, **_VERIFIER})
ROLLBACK_EXIT_CODES = exit_table(
    "rolled back and running (READY), or switched without starting (--root)",
    StateError, LockBusyError, RolledBackError, ServiceDownError, NothingToRollBackError,
    NotInstalledError, SystemdError, AuditError, UnsafePathError, PayloadIncompleteError,
    extra={EXIT_USAGE: "usage error"})
UNINSTALL_EXIT_CODES = exit_table(
    "removed", StateError, LockBusyError, NotInstalledError, SystemdError, AuditError,
    UnsafePathError, extra={EXIT_USAGE: "usage error"})
STATUS_EXIT_CODES = exit_table(
    "installed and the unit active (or no systemd manages --root)", StateError,
    NotInstalledError, UnsafePathError,
    extra={EXIT_UNHEALTHY: "installed, but the unit is not active", EXIT_USAGE: "usage error"})
DOCTOR_EXIT_CODES = exit_table(
    "every check passed", StateError, NotInstalledError, UnsafePathError,
    extra={EXIT_UNHEALTHY: "a check failed (each check says why)", EXIT_USAGE: "usage error"})
AUDIT_VERIFY_EXIT_CODES = {
    EXIT_OK: "the chain is intact",
    EXIT_AUDIT_BROKEN: "the chain is broken (the first bad line is named)",
    EXIT_USAGE: "usage error, or FILE cannot be read",
}


def epilog(table: dict[int, str]) -> str:
    """A click epilog listing `table` (the verifier's one formatter)."""
    return exit_code_help(table)
