"""Every way a bundle or trust file can be rejected, as one exception hierarchy (python-tuf style).

Each class carries a stable `reason`, its evidence and an exit code; `EXIT_CODES` (the table that
`sealfuse verify --help` prints) is generated from the classes below.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


def _snake(name: str) -> str:
    base = name[:-len("Error")] if name.endswith("Error") else name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


class VerificationError(Exception):
    """Base of every rejection by the sealfuse verifier.

    `reason` is a stable snake_case id (by default the class name without `Error`), `evidence`
    the facts behind the rejection, `exit_code` the documented exit status of `sealfuse verify`.
    """

    exit_code: ClassVar[int] = 1
    reason: ClassVar[str] = "verification"
    classes: ClassVar[list[type[VerificationError]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" not in cls.__dict__:
            cls.reason = _snake(cls.__name__)
        VerificationError.classes.append(cls)

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence: dict[str, Any] = evidence

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data (the `--json` document of a refusal)."""
        return {
            "ok": False,
            "error": type(self).__name__,
            "reason": self.reason,
            "message": self.message,
            "evidence": {k: _jsonable(v) for k, v in self.evidence.items()},
            "exit_code": self.exit_code,
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


# -- inputs ------------------------------------------------------------------------------------
class BundleReadError(VerificationError):
    """The bundle or a file it needs cannot be read (I/O error, missing file)."""

    exit_code = 2


class NotARegularFileError(BundleReadError):
    """An input (bundle, trust file, key, root) is a FIFO, device, directory or socket: it is
    refused before a single byte is read, so it can never block or stream without end."""

    exit_code = 2


class InputTooLargeError(BundleReadError):
    """A trust file, key or other small input is larger than its documented limit."""

    exit_code = 2


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


class TrustDuplicateKeyError(TrustFileError):
    """A trust file (or its sigstore trusted_root) repeats a key in one JSON object."""

    exit_code = 12


# -- archive structure ---------------------------------------------------------------------------
class ArchiveError(VerificationError):
    """The tar archive is malformed or contains something a bundle never contains."""

    exit_code = 20


class ArchiveFormatError(ArchiveError):
    """A header is corrupt (checksum, magic, numbers), padding is not zero, or a pax key is unknown."""

    exit_code = 20


class HeaderChecksumError(ArchiveFormatError):
    """A header's checksum field is not the unsigned sum of its bytes."""

    exit_code = 20


class HeaderFieldError(ArchiveFormatError):
    """A ustar header field breaks the POSIX grammar (non-octal or non-ASCII digits, missing
    terminator, junk after the terminator, non-ASCII text, bad magic, non-zero padding)."""

    exit_code = 20


class PaxRecordError(ArchiveFormatError):
    """A pax extended header breaks the grammar `<decimal length> <key>=<value>\\n` exactly."""

    exit_code = 20


class AmbiguousHeaderError(ArchiveFormatError):
    """Two readers could read different archives: a repeated pax key, a pax size that contradicts
    the ustar size, a pax header not followed by a member, a link name on a regular file."""

    exit_code = 20


class UnsupportedHeaderError(ArchiveFormatError):
    """A header type sealfuse never writes: global pax, GNU long names, sparse or volume headers,
    GNU base-256 numbers."""

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
    """A member path is absolute, contains `..`, empty components, NUL or control characters."""

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


class ManifestDuplicateKeyError(ManifestError):
    """The signed manifest repeats a key in one JSON object."""

    exit_code = 32


class ExpiredManifestError(VerificationError):
    """The manifest's `expires` time has passed."""

    exit_code = 40


class BadVersionNumberError(VerificationError):
    """The bundle version is not above the installed floor (rollback) and no downgrade was allowed."""

    exit_code = 41


class CreatedInFutureError(VerificationError):
    """The manifest's `created` time is later than the clock plus the allowed skew: the clock
    was set back (which would revive an expired bundle) or the bundle is forged."""

    exit_code = 42


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


class SigstoreDuplicateKeyError(SigstoreVerificationError):
    """The sigstore bundle repeats a key in one JSON object."""

    exit_code = 54


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


EXIT_OK = 0
_FIXED: dict[int, str] = {
    0: "verified",
    1: "internal error (a bug: please report)",
    2: "usage error, or an input cannot be read or is not a regular file",
}


def _table() -> dict[int, str]:
    by_code: dict[int, list[type[VerificationError]]] = {}
    for cls in VerificationError.classes:
        by_code.setdefault(cls.exit_code, []).append(cls)
    table = dict(_FIXED)
    for code, classes in sorted(by_code.items()):
        if code in _FIXED:
            table[code] += " (" + ", ".join(c.__name__ for c in classes) + ")"
            continue
        # The deepest class on the one inheritance line through the code describes it; the
        # others that share the code are named after it.
        line = [c for c in classes
                if all(issubclass(c, d) or issubclass(d, c) for d in classes)]
        main = max(line, key=lambda c: len(c.__mro__)) if line else classes[0]
        others = [c.__name__ for c in classes if c is not main]
        doc = (main.__doc__ or "").strip().split("\n\n")[0]
        first = " ".join(doc.split()).split(": ")[0].rstrip(".")
        table[code] = f"{main.__name__}: {first}" + (f" (also {', '.join(others)})"
                                                     if others else "")
    return table


# Exit codes of `sealfuse verify` (and the library's error classes), in one table.
EXIT_CODES: dict[int, str] = _table()


def exit_code_help(table: dict[int, str] | None = None) -> str:
    """An exit code table as text for a --help epilog."""
    return "\n".join(f"{code:>3}  {text}" for code, text in sorted((table or EXIT_CODES).items()))
