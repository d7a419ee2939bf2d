"""Errors of the build host (bundle build / sign / inspect): one root, BundleError, each error with
its reason, evidence and exit code; BUILD_EXIT_CODES (the --help table) is generated from them.

BundleError is not a VerificationError: a bundle that cannot be built is not a bundle that failed
verification. Reading an existing bundle (sign, inspect) can still raise the verifier's errors.
"""

from __future__ import annotations

from typing import ClassVar

from sealfuse.verifier.errors import EXIT_CODES as VERIFY_EXIT_CODES
from sealfuse.verifier.errors import EXIT_OK, ErrorFields, exit_code_table


class BundleError(ErrorFields, Exception):
    """Base of every build-host error (the bundle layer's one root)."""

    exit_code = 80
    reason = "bundle"
    classes: ClassVar[list[type[ErrorFields]]] = []


class BuildError(BundleError):
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


class LicencePolicyError(BuildError):
    """--licence-policy commercial refuses a model whose licence is non-commercial, research-only
    or unknown (the error names every such file and licence)."""

    exit_code = 84


class LicenceGrantError(BuildError):
    """A --licence-grant names a model file the bundle does not carry, or its reference is empty,
    not printable or too long."""

    exit_code = 88


class OutputWriteError(BundleError):
    """The bundle or another output cannot be written (disk full, read-only, permissions)."""

    exit_code = 87


class SigningError(BundleError):
    """A signature cannot be added to a bundle."""

    exit_code = 85


class DuplicateSignatureError(SigningError):
    """The bundle already carries a signature by this key."""

    exit_code = 86


# Exit codes of `sealfuse bundle ...`; a bundle read by sign or inspect may also fail one of the
# verifier's structural checks (its codes 20-62, listed by `sealfuse verify --help`).
BUILD_EXIT_CODES: dict[int, str] = exit_code_table(BundleError.classes, {
    EXIT_OK: "success",
    1: VERIFY_EXIT_CODES[1],
    2: "usage error, or an input cannot be read or is not a regular file",
})
