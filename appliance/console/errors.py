"""Why a console request or command was refused: one root class, `ConsoleError`, and one class per reason.

Each carries `reason` (stable snake_case id), `evidence`, the HTTP status the API answers with and
the exit code `sealfuse users` / `sealfuse console` exit with; `EXIT_CODES` is their table.
"""

from __future__ import annotations

from typing import Any

EXIT_CODES: dict[int, str] = {
    0: "done",
    1: "internal error",
    2: "usage error or invalid config",
    3: "the state directory, spool or user store cannot be used",
    4: "no such user, or the user exists already",
    5: "password refused (too short, empty, or the two entries differ)",
    6: "the TLS certificate or key cannot be loaded, or the address cannot be bound",
}


class ConsoleError(Exception):
    """Root of every console error."""

    reason = "console_error"
    status = 500
    exit_code = 1

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence = evidence

    def to_dict(self) -> dict[str, Any]:
        return {"ok": False, "error": type(self).__name__, "reason": self.reason, "message": self.message,
                "evidence": self.evidence, "exit_code": self.exit_code}


class ConfigError(ConsoleError):
    reason = "invalid_config"
    exit_code = 2


class StoreError(ConsoleError):
    reason = "store_unusable"
    exit_code = 3


class NoSuchUserError(ConsoleError):
    reason = "no_such_user"
    status = 404
    exit_code = 4


class UserExistsError(ConsoleError):
    reason = "user_exists"
    status = 409
    exit_code = 4


class BadUserNameError(ConsoleError):
    reason = "bad_user_name"
    status = 400
    exit_code = 2


class BadPasswordError(ConsoleError):
    reason = "bad_password"
    status = 400
    exit_code = 5


class ServeError(ConsoleError):
    reason = "cannot_serve"
    exit_code = 6


# -- request errors (HTTP) -------------------------------------------------------------------
class NotAuthenticatedError(ConsoleError):
    reason = "not_authenticated"
    status = 401


class LoginFailedError(ConsoleError):
    reason = "login_failed"
    status = 401


class RateLimitedError(ConsoleError):
    reason = "rate_limited"
    status = 429


class ForbiddenError(ConsoleError):
    reason = "forbidden"
    status = 403


class CsrfError(ConsoleError):
    reason = "csrf_missing_or_wrong"
    status = 403


class NotFoundError(ConsoleError):
    """Unknown job, or a job the user may not see (the two are not told apart)."""

    reason = "not_found"
    status = 404


class BadRequestError(ConsoleError):
    reason = "bad_request"
    status = 400


class BadUploadNameError(ConsoleError):
    reason = "bad_upload_name"
    status = 400


class UnsupportedTypeError(ConsoleError):
    reason = "unsupported_type"
    status = 415


class UploadTooLargeError(ConsoleError):
    reason = "upload_too_large"
    status = 413


class BadMediaError(ConsoleError):
    """The content fails the engine's own check (truncated, not what the extension says, too large)."""

    reason = "bad_media"
    status = 422


class BadOptionsError(ConsoleError):
    reason = "bad_options"
    status = 422


class GoneError(ConsoleError):
    reason = "media_deleted"
    status = 410


class SpoolError(ConsoleError):
    reason = "spool_unusable"
    status = 503
    exit_code = 3
