"""The one signature classifier: which trusted keys made a valid signature over some bytes, which
signed wrongly, and which keys are not trusted. `sealfuse verify`, `bundle inspect --trust`, `bundle
sign` and trust-file rotation all count signatures through it, so they cannot disagree.

A bundle's signature files are `signatures/<keyid>.sig` (raw Ed25519) and `signatures/<name>.sshsig`
(SSHSIG, namespace sealfuse-bundle, e.g. from `ssh-keygen -Y sign`; the key id comes from the key
inside it). `signatures/manifest.sigstore.json` is checked separately (verify.check_signatures).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sealfuse.verifier.errors import MalformedSignatureError
from sealfuse.verifier.keys import keyid_of, verify_raw
from sealfuse.verifier.model import SIGSTORE_NAME
from sealfuse.verifier.sshsig import NAMESPACE, SshSig, SshSigFormatError
from sealfuse.verifier.sshsig import parse as parse_sshsig

# Member names are matched whole (fullmatch): `$` would also match before a trailing newline.
RAW_SIG = re.compile(r"signatures/([0-9a-f]{64})\.sig")
SSH_SIG = re.compile(r"signatures/[A-Za-z0-9._-]+\.sshsig")


@dataclass(frozen=True)
class Signature:
    """One signature to count: the key id it claims (raw: from its file name; SSHSIG: of the key
    inside it), and either raw Ed25519 bytes or a parsed SSHSIG."""

    keyid: str
    source: str
    raw: bytes | None = None
    sshsig: SshSig | None = None

    def verifies(self, key: Ed25519PublicKey, data: bytes) -> bool:
        """True when this is a valid signature by `key` over `data`."""
        if self.sshsig is not None:  # checked with the trusted key, not the one it carries
            return self.sshsig.namespace == NAMESPACE and verify_raw(
                key, self.sshsig.signature, self.sshsig.signed_data(data))
        return self.raw is not None and verify_raw(key, self.raw, data)


@dataclass(frozen=True)
class Classification:
    """Distinct key ids: trusted with a valid signature, trusted with only invalid ones, untrusted."""

    valid: frozenset[str]
    invalid: frozenset[str]
    untrusted: frozenset[str]


def bundle_signatures(files: Mapping[str, bytes]) -> list[Signature]:
    """Parse a bundle's signature files (sigstore excluded); MalformedSignatureError for a file
    that is neither form, an unparseable SSHSIG, or an SSHSIG in another namespace."""
    out: list[Signature] = []
    for name, data in sorted(files.items()):
        if name == SIGSTORE_NAME:
            continue
        if m := RAW_SIG.fullmatch(name):
            out.append(Signature(m.group(1), name, raw=data))
        elif SSH_SIG.fullmatch(name):
            try:
                sig = parse_sshsig(data)
            except SshSigFormatError as exc:
                raise MalformedSignatureError(f"{name}: {exc}", path=name) from exc
            if sig.namespace != NAMESPACE:
                raise MalformedSignatureError(
                    f"{name}: SSHSIG namespace {sig.namespace!r}, expected {NAMESPACE!r}",
                    path=name, expected=NAMESPACE, actual=sig.namespace)
            out.append(Signature(keyid_of(sig.public_key), name, sshsig=sig))
        else:
            raise MalformedSignatureError(
                f"{name} is not a signature file sealfuse knows (signatures/<keyid>.sig, "
                f"signatures/<name>.sshsig, {SIGSTORE_NAME})", path=name)
    return out


def raw_signatures(pairs: Iterable[tuple[str, bytes]], source: str = "") -> list[Signature]:
    """(key id, raw Ed25519 signature) pairs, as a trust file carries them."""
    return [Signature(keyid, source or keyid, raw=sig) for keyid, sig in pairs]


def classify(keys: Mapping[str, Ed25519PublicKey], signatures: Iterable[Signature],
             data: bytes) -> Classification:
    """Count distinct key ids: a key with one valid signature is valid however many others fail;
    a key id not in `keys` is untrusted and never counts."""
    valid: set[str] = set()
    invalid: set[str] = set()
    untrusted: set[str] = set()
    for sig in signatures:
        key = keys.get(sig.keyid)
        if key is None:
            untrusted.add(sig.keyid)
        elif sig.verifies(key, data):
            valid.add(sig.keyid)
        else:
            invalid.add(sig.keyid)
    return Classification(frozenset(valid), frozenset(invalid - valid), frozenset(untrusted))


def signer_keyids(files: Mapping[str, bytes]) -> set[str]:
    """Key ids that have a signature file in a bundle (valid or not; unparseable ones skipped),
    for refusing a second signature by the same key."""
    ids: set[str] = set()
    for name, data in files.items():
        try:
            ids.update(s.keyid for s in bundle_signatures({name: data}))
        except MalformedSignatureError:
            continue
    return ids
