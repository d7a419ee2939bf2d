"""Every way a bundle or trust file can be rejected, as one exception hierarchy (python-tuf style).

Each class carries its evidence as attributes (digests, key ids, paths) and a documented exit code.
"""

from __future__ import annotations

from typing import Any


class VerificationError(Exception):
    """Base of every rejection by the sealfuse verifier."""

    exit_code: int = 1

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence: dict[str, Any] = evidence

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data: class name, exit code, message and evidence."""
        return {
            "error": type(self).__name__,
            "exit_code": self.exit_code,
            "message": self.message,
            "evidence": {k: _jsonable(v) for k, v in self.evidence.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    return str(value)


# -- trust --------------------------------------------------------------------------------------
class TrustError(VerificationError):
    """The trust file itself cannot be used."""

    exit_code = 10


class TrustFileError(TrustError):
    """The trust file is unreadable, not canonical JSON, or violates its schema."""

    exit_code = 10


class RotationError(TrustError):
    """A new trust file is not signed by the current threshold, or does not raise the version."""

    exit_code = 11


# -- archive structure ---------------------------------------------------------------------------
class ArchiveError(VerificationError):
    """The tar archive is malformed or contains something a bundle never contains."""

    exit_code = 20


class ArchiveFormatError(ArchiveError):
    """A header is corrupt (checksum, magic, numbers), padding is not zero, or a pax key is unknown."""

    exit_code = 20


class ArchiveLayoutError(ArchiveError):
    """manifest.json is not the first member, or signatures/ do not directly follow it."""

    exit_code = 21


class NotRegularFileError(ArchiveError):
    """A member is a directory, device, FIFO or other non-regular file."""

    exit_code = 22


class LinkMemberError(NotRegularFileError):
    """A member is a symbolic or hard link."""

    exit_code = 23


class UnsafePathError(ArchiveError):
    """A member path is absolute, contains `..`, empty components or NUL."""

    exit_code = 24


class DuplicateMemberError(ArchiveError):
    """The same path occurs twice in the archive."""

    exit_code = 25


class UnexpectedMemberError(ArchiveError):
    """A payload member is not listed in the signed manifest."""

    exit_code = 26


class MissingMemberError(ArchiveError):
    """The signed manifest lists a member the archive does not contain."""

    exit_code = 27


class TrailingDataError(ArchiveError):
    """Non-zero bytes follow the end-of-archive marker."""

    exit_code = 28


class TruncatedArchiveError(ArchiveError):
    """The archive ends inside a member or before its end-of-archive marker."""

    exit_code = 29


# -- manifest -----------------------------------------------------------------------------------
class ManifestError(VerificationError):
    """The (signed) manifest is not canonical JSON or violates the manifest schema."""

    exit_code = 30


class ProductMismatchError(ManifestError):
    """The manifest names a different product than the trust file."""

    exit_code = 31


class ExpiredManifestError(VerificationError):
    """The manifest's `expires` time has passed."""

    exit_code = 40


class BadVersionNumberError(VerificationError):
    """The bundle version is not above the installed floor (rollback) and no downgrade was allowed."""

    exit_code = 41


# -- signatures ----------------------------------------------------------------------------------
class SignatureError(VerificationError):
    """Signatures over the manifest do not establish trust."""

    exit_code = 50


class MalformedSignatureError(SignatureError):
    """A signature file cannot be parsed (bad armor, SSHSIG blob, namespace or length)."""

    exit_code = 51


class UnsignedManifestError(SignatureError):
    """Fewer distinct trusted keys than the threshold made valid signatures over the manifest."""

    exit_code = 52


class SigstoreVerificationError(SignatureError):
    """The sigstore bundle over the manifest fails offline verification or the identity policy."""

    exit_code = 53


# -- content -------------------------------------------------------------------------------------
class LengthOrHashMismatchError(VerificationError):
    """A member's content does not match the manifest."""

    exit_code = 60


class LengthMismatchError(LengthOrHashMismatchError):
    """A member's size (tar header or bytes read) differs from the manifest."""

    exit_code = 61


class HashMismatchError(LengthOrHashMismatchError):
    """A member's sha256 differs from the manifest."""

    exit_code = 62


# -- extraction ----------------------------------------------------------------------------------
class ExtractError(VerificationError):
    """Extraction could not start or finish (destination exists, bundle changed between passes)."""

    exit_code = 70


class BundleReadError(VerificationError):
    """The bundle or a file it needs cannot be read (I/O error, missing file)."""

    exit_code = 2


# Exit codes of `sealfuse verify` (and the library's error classes), in one table.
EXIT_OK = 0
EXIT_CODES: dict[int, str] = {
    0: "verified",
    1: "internal error (a bug: please report)",
    2: "usage error, or the bundle/trust file cannot be read (BundleReadError)",
    10: "TrustFileError: trust file invalid",
    11: "RotationError: new trust file not signed by the current threshold",
    20: "ArchiveFormatError: corrupt tar header, non-zero padding, unknown pax key",
    21: "ArchiveLayoutError: manifest.json not first or signatures/ out of place",
    22: "NotRegularFileError: directory, device, FIFO member",
    23: "LinkMemberError: symlink or hardlink member",
    24: "UnsafePathError: absolute or '..' path",
    25: "DuplicateMemberError: a path occurs twice",
    26: "UnexpectedMemberError: member not listed in the manifest",
    27: "MissingMemberError: manifest member absent from the archive",
    28: "TrailingDataError: data after the end-of-archive marker",
    29: "TruncatedArchiveError: archive ends early",
    30: "ManifestError: manifest not canonical JSON or invalid",
    31: "ProductMismatchError: manifest product differs from the trust file",
    40: "ExpiredManifestError: manifest expired",
    41: "BadVersionNumberError: version not above the floor (rollback)",
    50: "SignatureError: signatures do not establish trust",
    51: "MalformedSignatureError: unparseable signature file",
    52: "UnsignedManifestError: fewer valid trusted signatures than the threshold",
    53: "SigstoreVerificationError: sigstore bundle or identity policy failed",
    60: "LengthOrHashMismatchError: content differs from the manifest",
    61: "LengthMismatchError: size differs from the manifest",
    62: "HashMismatchError: sha256 differs from the manifest",
    70: "ExtractError: destination exists or bundle changed during extraction",
}


def exit_code_help() -> str:
    """The exit code table as text for --help."""
    return "\n".join(f"{code:>3}  {text}" for code, text in sorted(EXIT_CODES.items()))
