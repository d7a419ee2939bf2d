"""The engine's error hierarchy (root `EngineError`) and the exit-code table of `sealfuse swap`.

Callers (the CLI, the watch-folder daemon) catch meaning, not strings: `exit_code` is the process
exit code of `sealfuse swap`, `reason` a stable snake_case id for `error.json`, and `evidence` the
facts (paths, digests, sizes) behind the message. `EXIT_CODES` below is the one table the CLI's
`--help` epilog is generated from.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_OPTIONS = 2
EXIT_INPUT = 3
EXIT_FACE = 4
EXIT_MODEL = 5
EXIT_OUTPUT = 6
EXIT_RESOURCE = 7
EXIT_PROVIDER = 8
EXIT_PROVENANCE = 9
EXIT_INTERRUPTED = 130


class EngineError(Exception):
    """Root of every engine failure. Subclasses set `exit_code` and `reason`."""

    exit_code: int = EXIT_INTERNAL
    reason: str = "internal_error"

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence: dict[str, Any] = {k: _jsonable(v) for k, v in evidence.items()}

    # The exit code under its older name, kept equal to `exit_code` for callers that still read it.
    code: int = EXIT_INTERNAL

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "code" in cls.__dict__ and "exit_code" not in cls.__dict__:
            cls.exit_code = cls.code  # a subclass written with the older name
        cls.code = cls.exit_code

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data for `--json` output and the watch daemon's `error.json`."""
        return {"ok": False, "error": type(self).__name__, "reason": self.reason, "message": self.message,
                "evidence": self.evidence, "exit_code": self.exit_code}


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


class ConfigError(EngineError):
    """Options that cannot work together (exit 2, like a usage error)."""

    exit_code = EXIT_OPTIONS
    reason = "bad_options"


class InputError(EngineError):
    """The source or target media is unusable (exit 3)."""

    exit_code = EXIT_INPUT
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

    exit_code = EXIT_FACE
    reason = "no_face"


class NoFaceInTargetError(FaceError):
    reason = "no_face_in_target"


class NoFaceInSourceError(FaceError):
    reason = "no_face_in_source"


class NoReferenceMatchError(FaceError):
    reason = "no_reference_match"


class ModelError(EngineError):
    """A model is missing, fails its pin, or does not fit its family (exit 5)."""

    exit_code = EXIT_MODEL
    reason = "model_error"


class ModelMissingError(ModelError):
    reason = "model_missing"


class ModelDigestMismatchError(ModelError):
    reason = "model_digest_mismatch"


class ModelLicenceError(ModelError):
    """The model's licence class is outside the licence policy installed with the bundle."""

    reason = "model_licence_refused"


class ModelSignatureError(ModelError):
    """The ONNX graph's inputs/outputs do not match the family's I/O signature."""

    reason = "model_signature"


class ModelFetchError(ModelError):
    """`sealfuse models fetch-starter` could not get or read the pinned wheel (a connected host only)."""

    reason = "model_fetch_failed"


class OutputError(EngineError):
    """The output cannot be written where asked (exit 6)."""

    exit_code = EXIT_OUTPUT
    reason = "bad_output"


class ResourceLimitError(EngineError):
    """A memory or time limit was reached (exit 7)."""

    exit_code = EXIT_RESOURCE
    reason = "resource_limit"


class ProviderError(EngineError):
    """No requested execution provider can run (exit 8)."""

    exit_code = EXIT_PROVIDER
    reason = "provider_unavailable"


EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it)",
    EXIT_OPTIONS: "bad options",
    EXIT_INPUT: "bad input media (unreadable, empty, not media, truncated, too large)",
    EXIT_FACE: "no usable face (none in target or source, or no reference match)",
    EXIT_MODEL: "model missing, failing its sha256 pin, of the wrong signature, or outside the licence policy",
    EXIT_OUTPUT: "output cannot be written (missing directory, not writable)",
    EXIT_RESOURCE: "resource limit reached (memory, time)",
    EXIT_PROVIDER: "no requested execution provider is available",
    EXIT_PROVENANCE: "output must carry C2PA content credentials and cannot (no or unusable signing key, "
                     "a format that cannot carry a manifest, signing failed)",
    EXIT_INTERRUPTED: "interrupted (SIGINT/SIGTERM); no partial output is left",
}


def exit_code_help() -> str:
    """The exit-code table as `--help` epilog lines."""
    return "\n".join(f"{code:>3}  {text}" for code, text in EXIT_CODES.items())
