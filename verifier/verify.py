"""verify_bundle and extract_bundle: one streaming pass that establishes trust before using the manifest.

Order: manifest.json (first member) and signatures/ are read with size limits, signatures are
checked against the trust file, and only then is the manifest parsed and every payload member
checked (path, type, duplicates, size, sha256) while it streams past.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sealfuse.verifier.archive import Header, TarReader
from sealfuse.verifier.errors import (
    ArchiveLayoutError,
    BadVersionNumberError,
    BundleReadError,
    CreatedInFutureError,
    DuplicateMemberError,
    ExpiredManifestError,
    ExtractError,
    HashMismatchError,
    LengthMismatchError,
    LinkMemberError,
    ManifestError,
    MissingMemberError,
    NotRegularFileError,
    ProductMismatchError,
    SigstoreDuplicateKeyError,
    SigstoreVerificationError,
    UnexpectedMemberError,
    UnsafePathError,
    UnsignedManifestError,
)
from sealfuse.verifier.inputs import loads_strict, open_regular
from sealfuse.verifier.keys import short_keyid
from sealfuse.verifier.model import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURES_DIR,
    SIGSTORE_NAME,
    LockEntry,
    Manifest,
    Member,
    ModelEntry,
    Platform,
    Version,
    check_member_path,
    parse_time,
)
from sealfuse.verifier.signatures import bundle_signatures, classify
from sealfuse.verifier.trust import Trust

MAX_SIGNATURE_BYTES = 1 << 20
MAX_SIGNATURE_FILES = 256
# How far the manifest's `created` may be ahead of the clock (build host and appliance clocks
# differ a little); beyond it the bundle is refused with CreatedInFutureError.
DEFAULT_CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class SignatureReport:
    """Which trusted keys signed, which signatures failed, and which keys are not trusted."""

    valid: tuple[str, ...]
    invalid: tuple[str, ...]
    untrusted: tuple[str, ...]
    threshold: int
    sigstore: str  # "verified", "absent", "not required"


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signatures, policy and every payload byte were verified."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    signatures: SignatureReport
    signer_names: tuple[str, ...]
    downgrade: bool  # True when --allow-downgrade let a version at/below the floor through

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def product(self) -> str:
        return self.manifest.product

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def created(self) -> dt.datetime:
        return self.manifest.created

    @property
    def expires(self) -> dt.datetime:
        return self.manifest.expires

    @property
    def platform(self) -> Platform:
        return self.manifest.platform

    @property
    def members(self) -> tuple[Member, ...]:
        return self.manifest.members

    @property
    def models(self) -> tuple[ModelEntry, ...]:
        return self.manifest.models

    @property
    def lock(self) -> tuple[LockEntry, ...]:
        return self.manifest.lock

    @property
    def signers(self) -> tuple[str, ...]:
        """Key ids of the trusted keys whose signatures verified."""
        return self.signatures.valid

    def to_json(self) -> dict[str, object]:
        """The --json document of `sealfuse verify` (see docs/auditor.md)."""
        return {
            "ok": True,
            "bundle": str(self.path),
            "product": self.product,
            "version": self.version,
            "created": self.manifest.to_json()["created"],
            "expires": self.manifest.to_json()["expires"],
            "platform": {"python": self.platform.python, "arch": self.platform.arch,
                         "tag": self.platform.tag},
            "manifest_sha256": self.manifest_sha256,
            "signers": [{"keyid": k, "name": n} for k, n in zip(self.signers, self.signer_names,
                                                                 strict=True)],
            "threshold": self.signatures.threshold,
            "invalid_signatures": list(self.signatures.invalid),
            "untrusted_signatures": list(self.signatures.untrusted),
            "sigstore": self.signatures.sigstore,
            "downgrade": self.downgrade,
            "members": [{"path": m.path, "size": m.size, "sha256": m.sha256, "kind": m.kind}
                        for m in self.members],
            "licence_policy": self.manifest.licence_policy,
            "models": [{"name": m.name, "file": m.file, "licence": m.licence,
                        "licence_class": m.licence_class, "licence_grant": m.licence_grant,
                        "policy_class": m.policy_class} for m in self.models],
        }


def _as_time(now: dt.datetime | str | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, str):
        return parse_time(now)
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def _check_header(h: Header) -> None:
    name = h.name.rstrip("/") if h.typeflag == b"5" else h.name
    reason = check_member_path(name)
    if reason:
        raise UnsafePathError(f"member {h.name!r} has an unsafe path: {reason}", path=h.name,
                              problem=reason)
    if h.is_link:
        raise LinkMemberError(f"member {h.name!r} is a {h.type_name} to {h.linkname!r}",
                              path=h.name, type=h.type_name, linkname=h.linkname)
    if not h.is_regular:
        raise NotRegularFileError(f"member {h.name!r} is a {h.type_name}, not a regular file",
                                  path=h.name, type=h.type_name)


def check_signatures(manifest_bytes: bytes, files: Mapping[str, bytes], trust: Trust) -> SignatureReport:
    """Count distinct trusted keys with a valid Ed25519 (raw or SSHSIG) signature over the
    manifest bytes (the one classifier, verifier.signatures); raise UnsignedManifestError below
    the threshold, SigstoreVerificationError when the trust file's sigstore policy is not met."""
    found = classify(trust.public_keys, bundle_signatures(files), manifest_bytes)
    valid, invalid, untrusted = set(found.valid), set(found.invalid), set(found.untrusted)
    if len(valid) < trust.threshold:
        raise UnsignedManifestError(
            f"manifest has {len(valid)} valid signature(s) from trusted keys, "
            f"{trust.threshold} required"
            + (f"; invalid signatures by {sorted(short_keyid(k) for k in invalid)}" if invalid else "")
            + (f"; untrusted keys {sorted(short_keyid(k) for k in untrusted)}" if untrusted else ""),
            threshold=trust.threshold, valid_keyids=sorted(valid), invalid_keyids=sorted(invalid),
            untrusted_keyids=sorted(untrusted))
    sigstore_state = "not required"
    if trust.sigstore is not None:
        bundle_json = files.get(SIGSTORE_NAME)
        if bundle_json is None:
            if trust.sigstore.required:
                raise SigstoreVerificationError(
                    f"the trust file requires a sigstore bundle ({SIGSTORE_NAME}); none present",
                    path=SIGSTORE_NAME)
            sigstore_state = "absent"
        else:
            from sealfuse.verifier.sigstore_check import verify_sigstore

            loads_strict(bundle_json, duplicate=SigstoreDuplicateKeyError,
                         invalid=SigstoreVerificationError, what=SIGSTORE_NAME,
                         path=SIGSTORE_NAME)
            verify_sigstore(manifest_bytes, bundle_json, identity=trust.sigstore.identity,
                            issuer=trust.sigstore.issuer, trusted_root=trust.sigstore.trusted_root)
            sigstore_state = "verified"
    ordered = tuple(sorted(valid))
    return SignatureReport(ordered, tuple(sorted(invalid)), tuple(sorted(untrusted)),
                           trust.threshold, sigstore_state)


def check_policy(manifest: Manifest, trust: Trust, *, floor_version: str | None,
                 allow_downgrade: bool, now: dt.datetime,
                 clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW) -> bool:
    """Product, clock, expiry and rollback checks; returns True when a downgrade was allowed."""
    if manifest.product != trust.product:
        raise ProductMismatchError(
            f"bundle is for product {manifest.product!r}, the trust file for {trust.product!r}",
            expected=trust.product, actual=manifest.product)
    if manifest.created > now + clock_skew:
        raise CreatedInFutureError(
            f"bundle was created at {manifest.created.isoformat()}, later than the clock "
            f"({now.isoformat()}) plus the allowed skew of {int(clock_skew.total_seconds())} s: "
            "the clock is behind or the bundle is not what it claims",
            created=manifest.created.isoformat(), now=now.isoformat(),
            skew_seconds=int(clock_skew.total_seconds()))
    if now >= manifest.expires:
        raise ExpiredManifestError(
            f"manifest expired at {manifest.expires.isoformat()} (now {now.isoformat()})",
            expires=manifest.expires.isoformat(), now=now.isoformat())
    if floor_version is not None:
        try:
            floor = Version.parse(floor_version)
        except ValueError as exc:
            raise BadVersionNumberError(f"floor version is invalid: {exc}",
                                        floor=floor_version) from exc
        if manifest.version_key <= floor:
            if not allow_downgrade:
                raise BadVersionNumberError(
                    f"bundle version {manifest.version} is not above the installed "
                    f"{floor_version} (rollback refused; --allow-downgrade overrides)",
                    version=manifest.version, floor=floor_version)
            return True
    return False


Sink = Callable[[Member], "MemberWriter"]


class MemberWriter:
    """Writes one extracted member; `abort` is never needed because the caller removes dest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: memoryview) -> None:
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


@dataclass(frozen=True)
class BundleContents:
    """What an unauthenticated read of a bundle found (payload checked against the manifest,
    signatures NOT checked): for signing and inspecting on the build host."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    signature_files: Mapping[str, bytes]


def _scan(bundle_path: Path, trust: Trust | None, *, floor_version: str | None,
          allow_downgrade: bool, now: dt.datetime | str | None,
          clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
          sink: Sink | None = None) -> VerifiedBundle | BundleContents:
    """The single streaming pass. With trust=None signatures and policy are skipped."""
    when = _as_time(now)
    fd, st = open_regular(bundle_path, "bundle")
    f = os.fdopen(fd, "rb", buffering=0)
    try:
        reader = TarReader(f, limit=st.st_size)
        h = reader.next()
        if h is None:
            raise ArchiveLayoutError("archive is empty; manifest.json must be its first member")
        _check_header(h)
        if h.name != MANIFEST_NAME:
            raise ArchiveLayoutError(f"first member is {h.name!r}, expected {MANIFEST_NAME!r}",
                                     expected=MANIFEST_NAME, actual=h.name)
        if h.size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest.json is {h.size} bytes (limit {MAX_MANIFEST_BYTES})",
                                size=h.size)
        manifest_bytes = reader.read_bytes(h.size)
        seen: set[str] = {MANIFEST_NAME}
        sig_files: dict[str, bytes] = {}
        h = reader.next()
        while h is not None and h.name.startswith(SIGNATURES_DIR):
            _check_header(h)
            if h.name in seen:
                raise DuplicateMemberError(f"member {h.name!r} occurs twice", path=h.name)
            if len(sig_files) >= MAX_SIGNATURE_FILES:
                raise ArchiveLayoutError(f"more than {MAX_SIGNATURE_FILES} signature files",
                                         path=h.name, limit=MAX_SIGNATURE_FILES)
            if h.size > MAX_SIGNATURE_BYTES:
                raise ArchiveLayoutError(f"signature file {h.name!r} is {h.size} bytes",
                                         path=h.name, size=h.size)
            seen.add(h.name)
            sig_files[h.name] = reader.read_bytes(h.size)
            h = reader.next()

        # Trust is established here; nothing in the manifest was used before this point.
        report = None
        downgrade = False
        if trust is not None:
            report = check_signatures(manifest_bytes, sig_files, trust)
        manifest = Manifest.from_bytes(manifest_bytes)
        if trust is not None:
            downgrade = check_policy(manifest, trust, floor_version=floor_version,
                                     allow_downgrade=allow_downgrade, now=when,
                                     clock_skew=clock_skew)

        expected = {m.path: m for m in manifest.members}
        done: set[str] = set()
        while h is not None:
            _check_header(h)
            if h.name in seen:
                raise DuplicateMemberError(f"member {h.name!r} occurs twice", path=h.name)
            seen.add(h.name)
            if h.name.startswith(SIGNATURES_DIR):
                raise ArchiveLayoutError(f"signature {h.name!r} after payload members",
                                         path=h.name)
            member = expected.get(h.name)
            if member is None:
                raise UnexpectedMemberError(f"member {h.name!r} is not listed in the manifest",
                                            path=h.name, size=h.size)
            if h.size != member.size:
                raise LengthMismatchError(
                    f"{h.name}: archive says {h.size} bytes, manifest {member.size}",
                    path=h.name, expected=member.size, actual=h.size)
            hasher = hashlib.sha256()
            if sink is None:
                reader.read_data(h.size, hasher.update)
            else:
                writer = sink(member)
                try:
                    def both(chunk: memoryview, w: MemberWriter = writer,
                             hh: hashlib._Hash = hasher) -> None:
                        hh.update(chunk)
                        w.write(chunk)

                    reader.read_data(h.size, both)
                finally:
                    writer.close()
            digest = hasher.hexdigest()
            if digest != member.sha256:
                raise HashMismatchError(
                    f"{h.name}: sha256 {digest} does not match the manifest's {member.sha256}",
                    path=h.name, expected=member.sha256, actual=digest)
            done.add(h.name)
            h = reader.next()
        missing = sorted(set(expected) - done)
        if missing:
            raise MissingMemberError(f"{len(missing)} manifest member(s) missing from the "
                                     f"archive: {', '.join(missing[:5])}", paths=missing)
    except OSError as exc:
        raise BundleReadError(f"cannot read bundle {bundle_path}: {exc}",
                              path=str(bundle_path)) from exc
    finally:
        f.close()
    if trust is None or report is None:
        return BundleContents(Path(bundle_path), manifest, manifest_bytes, sig_files)
    names = tuple(trust.keys[k].name for k in report.valid)
    return VerifiedBundle(Path(bundle_path), manifest, manifest_bytes, report, names, downgrade)


def verify_bundle(bundle_path: str | os.PathLike[str], trust: Trust, *,
                  floor_version: str | None = None, allow_downgrade: bool = False,
                  now: dt.datetime | str | None = None,
                  clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW) -> VerifiedBundle:
    """Verify a bundle in one streaming pass; raise a VerificationError subclass on any problem.

    `floor_version`: the installed version; the bundle must be strictly above it unless
    `allow_downgrade` (then VerifiedBundle.downgrade is True and the caller should audit it).
    `now`: the time for the expiry check (datetime or ISO 8601 string; default: the clock).
    `clock_skew`: how far `created` may be ahead of `now` (default 5 minutes).
    """
    result = _scan(Path(bundle_path), trust, floor_version=floor_version,
                   allow_downgrade=allow_downgrade, now=now, clock_skew=clock_skew)
    assert isinstance(result, VerifiedBundle)
    return result


def read_bundle(bundle_path: str | os.PathLike[str]) -> BundleContents:
    """Read a bundle checking structure and every payload hash against its manifest, but NOT
    its signatures (nothing here is trusted). For `bundle sign` and `bundle inspect`."""
    result = _scan(Path(bundle_path), None, floor_version=None, allow_downgrade=False, now=None)
    assert isinstance(result, BundleContents)
    return result


def extract_bundle(bundle_path: str | os.PathLike[str], trust: Trust,
                   dest_dir: str | os.PathLike[str], *, floor_version: str | None = None,
                   allow_downgrade: bool = False, now: dt.datetime | str | None = None,
                   clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW) -> VerifiedBundle:
    """Verify fully, then extract payload/ into `dest_dir` (must not exist; created 0700),
    re-verifying every byte as it is written. On any error `dest_dir` is removed entirely.

    Files land at dest_dir/<path below payload/> with mode 0644, directories 0755.
    """
    dest = Path(dest_dir)
    if dest.exists() or dest.is_symlink():
        raise ExtractError(f"destination {dest} already exists", path=str(dest))
    first = verify_bundle(bundle_path, trust, floor_version=floor_version,
                          allow_downgrade=allow_downgrade, now=now, clock_skew=clock_skew)
    try:
        os.mkdir(dest, 0o700)
    except OSError as exc:
        raise ExtractError(f"cannot create {dest}: {exc}", path=str(dest)) from exc
    os.chmod(dest, 0o700)

    def sink(member: Member) -> MemberWriter:
        target = dest.joinpath(*member.relpath.split("/"))
        try:
            if target.parent != dest:
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ExtractError(f"cannot write {target}: {exc}", path=str(target)) from exc
        return MemberWriter(fd)

    try:
        second = _scan(Path(bundle_path), trust, floor_version=floor_version,
                       allow_downgrade=allow_downgrade, now=now, clock_skew=clock_skew,
                       sink=sink)
        assert isinstance(second, VerifiedBundle)
        if second.manifest_bytes != first.manifest_bytes:
            raise ExtractError("bundle changed between verification and extraction",
                               expected=first.manifest_sha256, actual=second.manifest_sha256)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return second
