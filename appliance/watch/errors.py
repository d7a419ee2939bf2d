"""Why a drop or job was quarantined: one named class per reason, carrying its evidence.

`reason` is the stable slug written to failed/<job-id>/error.json and the audit log.
"""

from __future__ import annotations

from typing import Any


class DropError(Exception):
    """Base class: the drop cannot become a job (or the job failed outside the engine)."""

    reason = "bad_drop"

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence = evidence

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "reason": self.reason, "message": self.message,
                "evidence": self.evidence}


class BadNameError(DropError):
    """Control characters, invalid UTF-8 or an overlong name."""

    reason = "bad_name"


class SymlinkError(DropError):
    reason = "symlink"


class HardlinkError(DropError):
    reason = "hardlink"


class FifoError(DropError):
    reason = "fifo"


class DeviceNodeError(DropError):
    reason = "device_node"


class SocketFileError(DropError):
    reason = "socket"


class DirectoryError(DropError):
    """A directory where a file belongs (never walked: moved aside in one rename)."""

    reason = "directory"


class UnknownPresetError(DropError):
    reason = "unknown_preset"


class EmptyDropError(DropError):
    reason = "empty_file"


class TooLargeDropError(DropError):
    reason = "input_too_large"


class UnsupportedExtensionError(DropError):
    reason = "unsupported_extension"


class ManifestTooLargeError(DropError):
    reason = "manifest_too_large"


class InvalidJsonError(DropError):
    reason = "invalid_json"


class SchemaViolationError(DropError):
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


class DuplicateJobError(DropError):
    """The same content and options were already done or are running under another job id."""

    reason = "duplicate"


class WorkerCrashError(DropError):
    """The worker process died during the job (native crash, abort, OOM kill)."""

    reason = "worker_crashed"


class JobTimeoutError(DropError):
    reason = "timeout"


class MemoryLimitError(DropError):
    """The worker's resident memory passed max_rss_mb during the job."""

    reason = "memory_limit"


class AttemptsExhaustedError(DropError):
    """The job was interrupted (daemon restarts) max_attempts times."""

    reason = "attempts_exhausted"


class ClaimIncompleteError(DropError):
    """After a restart, a claimed file was found neither in work/ nor in the inbox."""

    reason = "claim_incomplete"


class PresetSourceError(DropError):
    reason = "preset_source_unreadable"
