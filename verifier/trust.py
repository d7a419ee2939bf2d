"""Trust files: which Ed25519 keys may sign, how many must (k of n), and an optional sigstore policy.

Rotation: a new trust file is accepted only when it raises the trust version and is signed by at
least `threshold` distinct keys of the current trust file.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sealfuse.verifier.errors import (
    BundleReadError,
    RotationError,
    TrustDuplicateKeyError,
    TrustFileError,
)
from sealfuse.verifier.inputs import MAX_TRUST_BYTES, loads_strict, read_regular
from sealfuse.verifier.keys import (
    KeyFormatError,
    keyid_of,
    openssh_public,
    public_from_b64,
    raw_public,
    short_keyid,
    verify_raw,
)
from sealfuse.verifier.model import canonical
from sealfuse.verifier.signatures import classify, raw_signatures
from sealfuse.verifier.sshsig import NAMESPACE

TRUST_TYPE = "sealfuse-trust"


@dataclass(frozen=True)
class TrustedKey:
    """One signer: key id (sha256 of the raw key), Ed25519 public key and a principal name."""

    keyid: str
    public_key: Ed25519PublicKey
    name: str

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "keytype": "ed25519", "name": self.name,
                "public_key": base64.b64encode(raw_public(self.public_key)).decode()}

    @classmethod
    def from_public(cls, key: Ed25519PublicKey, name: str = "") -> TrustedKey:
        keyid = keyid_of(key)
        return cls(keyid, key, name or f"sealfuse-{short_keyid(keyid)}")


@dataclass(frozen=True)
class SigstorePolicy:
    """Offline sigstore check: certificate identity + OIDC issuer, and the trusted root to use."""

    identity: str
    issuer: str
    trusted_root: Mapping[str, Any]
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"identity": self.identity, "issuer": self.issuer,
                "trusted_root": dict(self.trusted_root), "required": self.required}


@dataclass(frozen=True)
class Trust:
    """A pinned trust file."""

    product: str
    version: int
    threshold: int
    keys: Mapping[str, TrustedKey]
    sigstore: SigstorePolicy | None = None
    signatures: tuple[tuple[str, bytes], ...] = ()

    @property
    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """key id -> public key, for the signature classifier."""
        return {k: v.public_key for k, v in self.keys.items()}

    def signed_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "_type": TRUST_TYPE, "spec_version": 1, "product": self.product,
            "version": self.version, "threshold": self.threshold,
            "keys": [k.to_json() for k in sorted(self.keys.values(), key=lambda k: k.keyid)],
        }
        if self.sigstore is not None:
            data["sigstore"] = self.sigstore.to_json()
        return data

    def signed_bytes(self) -> bytes:
        return canonical(self.signed_json())

    def to_json(self) -> dict[str, Any]:
        return {"signed": self.signed_json(),
                "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode()}
                               for k, s in self.signatures]}

    def with_signature(self, key: Ed25519PrivateKey) -> Trust:
        """This trust file with one more signature (for rotation), refusing duplicates."""
        keyid = keyid_of(key.public_key())
        if any(k == keyid for k, _ in self.signatures):
            raise RotationError(f"trust file already signed by key {short_keyid(keyid)}",
                                keyid=keyid)
        sig = key.sign(self.signed_bytes())
        return Trust(self.product, self.version, self.threshold, self.keys, self.sigstore,
                     (*self.signatures, (keyid, sig)))

    def allowed_signers(self) -> str:
        """An OpenSSH allowed_signers file for `ssh-keygen -Y verify -n sealfuse-bundle`."""
        lines = [f'{k.name} namespaces="{NAMESPACE}" {openssh_public(k.public_key)}'
                 for k in sorted(self.keys.values(), key=lambda k: k.name)]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Write atomically (temp file in the same directory, fsync, rename)."""
        write_atomic(Path(path), (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
                     .encode())


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # O_EXCL|O_NOFOLLOW: a name planted at the temporary path is never followed or truncated
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_trust(product: str, keys: Iterable[TrustedKey], threshold: int, version: int = 1,
               sigstore: SigstorePolicy | None = None) -> Trust:
    """A new (unsigned) trust file, validated like a loaded one."""
    key_map = {k.keyid: k for k in keys}
    trust = Trust(product, version, threshold, key_map, sigstore)
    return parse_trust(trust.to_json(), base_dir=None)


def load_trust(path: str | os.PathLike[str]) -> Trust:
    """Load and validate a trust file (the pinned one is trusted as is; its signatures matter
    only when it is offered as a rotation of another trust file)."""
    p = Path(path)
    return trust_from_bytes(read_regular(p, "trust file", MAX_TRUST_BYTES), p)


def read_trust_file(path: str | os.PathLike[str]) -> tuple[Trust, bytes]:
    """(trust, the exact bytes it was parsed from): read once, so what is pinned is what was
    checked. Regular files only, at most MAX_TRUST_BYTES."""
    p = Path(path)
    raw = read_regular(p, "trust file", MAX_TRUST_BYTES)
    return trust_from_bytes(raw, p), raw


def trust_from_bytes(raw: bytes, path: Path) -> Trust:
    """Parse trust file bytes read from `path` (a relative sigstore root is resolved beside it)."""
    data = loads_strict(raw, duplicate=TrustDuplicateKeyError, invalid=TrustFileError,
                        what=f"trust file {path}", path=str(path))
    return parse_trust(data, base_dir=Path(path).parent)


def parse_trust(data: Any, base_dir: Path | None) -> Trust:
    try:
        return _parse(data, base_dir)
    except TrustFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, KeyFormatError) as exc:
        raise TrustFileError(f"trust file violates the schema: {exc!r}") from exc


def _parse(data: Any, base_dir: Path | None) -> Trust:
    if not isinstance(data, dict) or not isinstance(data.get("signed"), dict):
        raise TrustFileError("trust file must be an object with a 'signed' object")
    signed = data["signed"]
    if signed.get("_type") != TRUST_TYPE:
        raise TrustFileError(f"trust _type must be {TRUST_TYPE!r}")
    product = signed["product"]
    version = signed["version"]
    threshold = signed["threshold"]
    if not isinstance(product, str) or not product:
        raise TrustFileError("trust product must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TrustFileError("trust version must be an integer >= 1")
    keys: dict[str, TrustedKey] = {}
    for entry in signed["keys"]:
        if entry.get("keytype", "ed25519") != "ed25519":
            raise TrustFileError(f"unsupported keytype {entry.get('keytype')!r}")
        pub = public_from_b64(entry["public_key"])
        keyid = keyid_of(pub)
        if entry.get("keyid", keyid) != keyid:
            raise TrustFileError("trust key id does not match its public key",
                                 expected=keyid, actual=entry.get("keyid"))
        if keyid in keys:
            raise TrustFileError(f"trust lists key {short_keyid(keyid)} twice", keyid=keyid)
        name = str(entry.get("name") or f"sealfuse-{short_keyid(keyid)}")
        if not name or any(c.isspace() for c in name) or "," in name:
            raise TrustFileError(f"key name {name!r} must be one word (it is an SSH principal)")
        keys[keyid] = TrustedKey(keyid, pub, name)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not (
            1 <= threshold <= len(keys)):
        raise TrustFileError(f"threshold must be between 1 and the number of keys ({len(keys)}),"
                             f" got {threshold!r}", threshold=threshold, keys=len(keys))
    sigstore = None
    if signed.get("sigstore") is not None:
        sigstore = _parse_sigstore(signed["sigstore"], base_dir)
    sigs: list[tuple[str, bytes]] = []
    for s in data.get("signatures", []):
        sigs.append((str(s["keyid"]), base64.b64decode(s["sig"], validate=True)))
    return Trust(product, version, threshold, keys, sigstore, tuple(sigs))


def _parse_sigstore(data: Mapping[str, Any], base_dir: Path | None) -> SigstorePolicy:
    identity, issuer = data["identity"], data["issuer"]
    if not isinstance(identity, str) or not identity or not isinstance(issuer, str) or not issuer:
        raise TrustFileError("sigstore policy needs a non-empty identity and issuer")
    root = data["trusted_root"]
    if isinstance(root, str):
        root_path = Path(root)
        if not root_path.is_absolute() and base_dir is not None:
            root_path = base_dir / root_path
        # A path named inside the trust file: never followed through a symlink.
        try:
            raw = read_regular(root_path, "sigstore trusted_root", MAX_TRUST_BYTES,
                               follow=False)
        except BundleReadError as exc:
            raise TrustFileError(f"cannot use sigstore trusted_root {root_path}: {exc}",
                                 path=str(root_path)) from exc
        root = loads_strict(raw, duplicate=TrustDuplicateKeyError, invalid=TrustFileError,
                            what=f"sigstore trusted_root {root_path}", path=str(root_path))
    if not isinstance(root, dict):
        raise TrustFileError("sigstore trusted_root must be a path or an inline JSON object")
    return SigstorePolicy(identity, issuer, root, bool(data.get("required", True)))


def count_signatures(keys: Mapping[str, TrustedKey], signatures: Iterable[tuple[str, bytes]],
                     data: bytes) -> tuple[set[str], set[str], set[str]]:
    """(valid trusted key ids, key ids with only invalid signatures, untrusted key ids) of raw
    (key id, signature) pairs, through the one classifier (verifier.signatures)."""
    found = classify({k: v.public_key for k, v in keys.items()}, raw_signatures(signatures), data)
    return set(found.valid), set(found.invalid), set(found.untrusted)


def accept_rotation(current: Trust, new: Trust) -> Trust:
    """Return `new` when it is a valid successor of `current`, else raise RotationError."""
    if new.product != current.product:
        raise RotationError(f"new trust file is for product {new.product!r}, current is "
                            f"{current.product!r}", expected=current.product, actual=new.product)
    if new.version <= current.version:
        raise RotationError(f"new trust version {new.version} is not above {current.version}",
                            expected_above=current.version, actual=new.version)
    valid, bad, untrusted = count_signatures(current.keys, new.signatures, new.signed_bytes())
    if len(valid) < current.threshold:
        raise RotationError(
            f"new trust file has {len(valid)} valid signature(s) from current keys; "
            f"{current.threshold} required",
            threshold=current.threshold, valid_keyids=sorted(valid),
            invalid_keyids=sorted(bad), untrusted_keyids=sorted(untrusted))
    return new


def accept_chain(current: Trust, chain: Iterable[Trust]) -> Trust:
    """Walk a chain of rotations from the pinned trust; return the last accepted trust."""
    for new in chain:
        current = accept_rotation(current, new)
    return current


def sign_trust(trust: Trust, key: Ed25519PrivateKey) -> Trust:
    return trust.with_signature(key)


def verify_trust_signature(key: Ed25519PublicKey, trust: Trust, sig: bytes) -> bool:
    return verify_raw(key, sig, trust.signed_bytes())
