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


class ErrorFields:
    """What every sealfuse error carries, whatever its layer: `exit_code`, a stable snake_case
    `reason` (by default the class name without `Error`), `evidence`, a message and `to_dict()`.

    Each layer's root error (VerificationError here, BundleError in the bundle layer) mixes this
    in and keeps its own `classes` registry, from which its exit-code table is generated.
    """

    exit_code: ClassVar[int] = 1
    reason: ClassVar[str] = "internal"
    classes: ClassVar[list[type[ErrorFields]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" not in cls.__dict__:
            cls.reason = _snake(cls.__name__)
        if "classes" in cls.__dict__:  # a layer's root
            return
        for base in cls.__mro__[1:]:
            if "classes" in base.__dict__:
                base.classes.append(cls)
                break

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


class VerificationError(ErrorFields, Exception):
    """Base of every rejection by the sealfuse verifier (the verifier layer's one root)."""

    exit_code = 1
    reason = "verification"
    classes: ClassVar[list[type[ErrorFields]]] = []


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


class UnusableKeyError(BundleReadError):
    """A signing key cannot be loaded (not Ed25519, wrong passphrase, unparseable)."""

    exit_code = 2


class OutputExistsError(VerificationError):
    """Refusing to overwrite an existing key or trust file, or it cannot be written."""

    exit_code = 3


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


class LicencePolicyViolationError(ManifestError):
    """The signed manifest declares `licence_policy: commercial` but lists a model whose licence
    class is not commercial."""

    exit_code = 33


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


def exit_code_table(classes: list[type[ErrorFields]], fixed: dict[int, str]) -> dict[int, str]:
    """code -> text for --help: `fixed` rows (0, 1, 2 ...) plus one row per exit code of
    `classes`, described by the deepest class on the one inheritance line through the code."""
    by_code: dict[int, list[type[ErrorFields]]] = {}
    for cls in classes:
        by_code.setdefault(cls.exit_code, []).append(cls)
    table = dict(fixed)
    for code, members in sorted(by_code.items()):
        if code in fixed:
            table[code] += " (" + ", ".join(c.__name__ for c in members) + ")"
            continue
        line = [c for c in members
                if all(issubclass(c, d) or issubclass(d, c) for d in members)]
        main = max(line, key=lambda c: len(c.__mro__)) if line else members[0]
        others = [c.__name__ for c in members if c is not main]
        doc = (main.__doc__ or "").strip().split("\n\n")[0]
        first = " ".join(doc.split()).split(": ")[0].rstrip(".")
        table[code] = f"{main.__name__}: {first}" + (f" (also {', '.join(others)})"
                                                     if others else "")
    return table


def exit_code_help(table: dict[int, str]) -> str:
    """An exit code table as a click epilog (`\\b` keeps click from rewrapping it)."""
    rows = "\n".join(f"{code:>3}  {text}" for code, text in sorted(table.items()))
    return "\b\nExit codes:\n" + rows


# Exit codes of `sealfuse verify` (and the library's error classes), in one table.
EXIT_CODES: dict[int, str] = exit_code_table(VerificationError.classes, {
    EXIT_OK: "verified",
    1: "internal error (a bug: please report)",
    2: "usage error, or an input cannot be read or is not a regular file",
})
del EXIT_CODES[OutputExistsError.exit_code]  # `keygen` and `trust create` only

# `sealfuse trust ...`: the trust file errors only.
TRUST_EXIT_CODES: dict[int, str] = exit_code_table(
    [c for c in VerificationError.classes
     if issubclass(c, (TrustError, BundleReadError, OutputExistsError))],
    {EXIT_OK: "success", 2: "usage error, or an input cannot be read or is not a regular file"})


# `sealfuse keygen`.
KEYGEN_EXIT_CODES: dict[int, str] = exit_code_table(
    [c for c in VerificationError.classes if issubclass(c, (OutputExistsError, BundleReadError))],
    {EXIT_OK: "key written", 2: "usage error, or an input cannot be read"})
