"""The watch folder's errors: why a drop was refused, why a job failed, why the daemon cannot start.

`JobError` is the root. `reason` is the stable slug written to failed/<job-id>/error.json, the job's
status file and the audit log; `EXIT_CODES` is the table of `sealfuse watch` exit codes.
"""

from __future__ import annotations

from typing import Any

from sealfuse.verifier.errors import exit_code_help

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_SPOOL_LOCKED = 4
EXIT_WORKER = 5

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "stopped cleanly (SIGTERM/SIGINT, or --once drained)",
    EXIT_CONFIG: "invalid config (the message names the key)",
    EXIT_STARTUP: "cannot set up the spool, state dir, audit log or tmp dir",
    EXIT_SPOOL_LOCKED: "another daemon holds this spool's lock (one daemon per spool)",
    EXIT_WORKER: "the worker cannot load the models (the message carries the engine's reason)",
}


class JobError(Exception):
    """Root of the watch folder's errors: a refused drop, a failed job, or a daemon that cannot start."""

    exit_code = EXIT_JOB_FAILED
    reason = "internal_error"

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence: dict[str, Any] = evidence

    @property
    def error_name(self) -> str:
        """The class name recorded in error.json (an engine error keeps the engine's class name)."""
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The shared error shape: ok, error, reason, message, evidence, exit_code."""
        return {"ok": False, "error": self.error_name, "reason": self.reason, "message": self.message,
                "evidence": self.evidence, "exit_code": self.exit_code}


class ReportedError(JobError):
    """A failure the worker (engine) reported as a dict; keeps its class name, reason and exit code."""

    def __init__(self, doc: dict[str, Any]) -> None:
        evidence = doc.get("evidence")
        super().__init__(str(doc.get("message") or doc.get("reason") or "the job failed"),
                         **(evidence if isinstance(evidence, dict) else {}))
        self.reason = str(doc.get("reason") or "internal_error")
        self._name = str(doc.get("error") or type(self).__name__)
        code = doc.get("exit_code")
        self.exit_code = code if isinstance(code, int) else EXIT_JOB_FAILED

    @property
    def error_name(self) -> str:
        return self._name


# ---------------------------------------------------------------- drops refused at admission
class DropError(JobError):
    """The drop cannot become a job; it is quarantined with this reason."""

    reason = "bad_drop"


class BadNameError(DropError):
    """Control characters, invalid UTF-8 or an overlong name."""

    reason = "bad_name"


class SymlinkError(DropError):
    """A symbolic link where a file belongs (never followed)."""

    reason = "symlink"


class SymlinkedFolderError(DropError):
    """A preset folder (or the inbox entry standing for one) is a symbolic link: never listed."""

    reason = "symlinked_folder"


class HardlinkError(DropError):
    """A file with more than one hard link (it may be someone else's file)."""

    reason = "hardlink"


class FifoError(DropError):
    """A FIFO (opening it would block)."""

    reason = "fifo"


class DeviceNodeError(DropError):
    """A character or block device node."""

    reason = "device_node"


class SocketFileError(DropError):
    """A UNIX socket."""

    reason = "socket"


class DirectoryError(DropError):
    """A directory where a file belongs (never walked: moved aside in one rename)."""

    reason = "directory"


class ForeignFilesystemError(DropError):
    """An entry on another filesystem than the spool (a mount point): not moved, never followed."""

    reason = "foreign_filesystem"


class UnknownPresetError(DropError):
    """A folder or manifest names a preset the config does not define."""

    reason = "unknown_preset"


class EmptyDropError(DropError):
    """A zero-byte file."""

    reason = "empty_file"


class TooLargeDropError(DropError):
    """A file over max_input_mb."""

    reason = "input_too_large"


class UnsupportedExtensionError(DropError):
    """Not a supported image or video extension."""

    reason = "unsupported_extension"


class ManifestTooLargeError(DropError):
    """A manifest over manifest_max_bytes."""

    reason = "manifest_too_large"


class InvalidJsonError(DropError):
    """A manifest that is not UTF-8 JSON."""

    reason = "invalid_json"


class SchemaViolationError(DropError):
    """A manifest that breaks the job schema."""

    reason = "schema_violation"


class PathEscapeError(DropError):
    """A manifest names a path outside its drop (absolute, `..`, or with a directory part)."""

    reason = "path_escape"


class MissingMediaError(DropError):
    """A manifest's media did not arrive within manifest_wait_seconds."""

    reason = "missing_media"


class OrphanMediaError(DropError):
    """Loose media in inbox/ that no manifest claimed within orphan_seconds."""

    reason = "orphan_media"


class UnknownJobError(DropError):
    """A cancel file (`*.cancel.json`) names a job id or client_ref the daemon does not know."""

    reason = "unknown_job"


# ---------------------------------------------------------------- jobs failed after the claim
class RemovedError(JobError):
    """The job was removed on request (a `*.cancel.json`) while queued or running."""

    reason = "removed"


class DuplicateJobError(JobError):
    """The same content and options were already done or are running under another job id."""

    reason = "duplicate"


class PresetSourceError(JobError):
    """An input (often the preset's source face) cannot be read for hashing."""

    reason = "preset_source_unreadable"


class WorkerCrashError(JobError):
    """The worker process died during the job (native crash, abort, OOM kill)."""

    reason = "worker_crashed"


class JobTimeoutError(JobError):
    """The job ran past job_timeout_seconds."""

    reason = "timeout"


class MemoryLimitError(JobError):
    """The worker's resident memory passed max_rss_mb during the job."""

    reason = "memory_limit"


class AttemptsExhaustedError(JobError):
    """The job was interrupted (daemon restarts) max_attempts times."""

    reason = "attempts_exhausted"


class ClaimIncompleteError(JobError):
    """After a restart, a claimed file was found neither in work/ nor in the inbox."""

    reason = "claim_incomplete"


class OutputMissingError(JobError):
    """The worker reported success but its output file is missing or unreadable."""

    reason = "output_missing"


class CommitFailedError(JobError):
    """Writing or moving the job's result failed (disk full, quota, read-only, I/O error)."""

    reason = "commit_failed"


class ScratchUnavailableError(JobError):
    """The job's private temporary directory cannot be made (its tmpfs is full or gone)."""

    reason = "scratch_unavailable"


class RecoveryFailedError(JobError):
    """A job left by a previous run could not be recovered; it is quarantined instead."""

    reason = "recovery_failed"


# ---------------------------------------------------------------- the daemon cannot start
class StartupError(JobError):
    """The daemon cannot start; `exit_code` is its exit code."""

    exit_code = EXIT_STARTUP
    reason = "startup_failed"


class ConfigError(StartupError):
    """The configuration is invalid (also raised for a preset whose face image is unreadable)."""

    exit_code = EXIT_CONFIG
    reason = "invalid_config"


class SpoolLockedError(StartupError):
    """Another daemon holds the spool's lock."""

    exit_code = EXIT_SPOOL_LOCKED
    reason = "spool_locked"


class WorkerLoadError(StartupError):
    """The worker cannot load the engine or the models."""

    exit_code = EXIT_WORKER
    reason = "worker_load_failed"


def exit_codes_epilog() -> str:
    """The `--help` epilog listing every exit code of `sealfuse watch`."""
    return exit_code_help(EXIT_CODES)
