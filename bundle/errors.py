"""Errors of the build host (bundle build / sign / inspect), each with its evidence and exit code."""

from __future__ import annotations

from sealfuse.verifier.errors import VerificationError


class BuildError(VerificationError):
    """A bundle cannot be built from these inputs."""

    exit_code = 80


class WheelError(BuildError):
    """A wheel's name cannot be parsed, does not fit the target platform, or conflicts."""

    exit_code = 81


class ModelDigestError(BuildError):
    """A model fetched from --model-url does not match its pinned sha256."""

    exit_code = 82


class LicenceMissingError(BuildError):
    """A model has no recorded licence (the builder refuses to ship a model of unknown terms)."""

    exit_code = 83


class SigningError(VerificationError):
    """A signature cannot be added to a bundle."""

    exit_code = 85


class DuplicateSignatureError(SigningError):
    """The bundle already carries a signature by this key."""

    exit_code = 86


BUILD_EXIT_CODES: dict[int, str] = {
    0: "success",
    2: "usage error or unreadable input",
    80: "BuildError: bundle cannot be built from these inputs",
    81: "WheelError: bad wheel name, wrong platform, or conflicting wheels",
    82: "ModelDigestError: downloaded model does not match its pinned sha256",
    83: "LicenceMissingError: a model has no recorded licence",
    85: "SigningError: signature cannot be added",
    86: "DuplicateSignatureError: the bundle is already signed by this key",
}
