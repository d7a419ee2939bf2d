"""SSHSIG (OpenSSH PROTOCOL.sshsig) for Ed25519: what `ssh-keygen -Y sign/verify` read and write.

Only Ed25519 keys and sha512/sha256 message hashes are accepted.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sealfuse.verifier.keys import public_from_raw, raw_public, verify_raw

NAMESPACE = "sealfuse-bundle"
MAGIC = b"SSHSIG"
SIG_VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}


class SshSigFormatError(ValueError):
    """The text is not a well-formed Ed25519 SSHSIG."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SshSigFormatError("SSHSIG blob is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SshSigFormatError("SSHSIG blob has trailing bytes")


@dataclass(frozen=True)
class SshSig:
    """A parsed SSHSIG: the signer's public key, namespace, hash and raw Ed25519 signature."""

    public_key: Ed25519PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes

    def signed_data(self, message: bytes) -> bytes:
        return signed_data(message, self.namespace, self.hash_algorithm)

    def verify(self, message: bytes, namespace: str = NAMESPACE) -> bool:
        """True when the signature is valid over `message` in `namespace`."""
        if self.namespace != namespace:
            return False
        return verify_raw(self.public_key, self.signature, self.signed_data(message))


def signed_data(message: bytes, namespace: str, hash_algorithm: str = "sha512") -> bytes:
    digest = _HASHES[hash_algorithm](message).digest()
    return (MAGIC + _string(namespace.encode()) + _string(b"")
            + _string(hash_algorithm.encode()) + _string(digest))


def _wire_public(key: Ed25519PublicKey) -> bytes:
    return _string(b"ssh-ed25519") + _string(raw_public(key))


def sign(key: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE,
         hash_algorithm: str = "sha512") -> str:
    """An armored SSHSIG over `message`, byte-compatible with `ssh-keygen -Y sign`."""
    sig = key.sign(signed_data(message, namespace, hash_algorithm))
    blob = (MAGIC + struct.pack(">I", SIG_VERSION) + _string(_wire_public(key.public_key()))
            + _string(namespace.encode()) + _string(b"") + _string(hash_algorithm.encode())
            + _string(_string(b"ssh-ed25519") + _string(sig)))
    return armor(blob)


def armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def parse(text: str | bytes) -> SshSig:
    """Parse an armored SSHSIG; raise SshSigFormatError on anything unexpected."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SshSigFormatError("SSHSIG armor is not ASCII") from exc
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise SshSigFormatError("missing SSH SIGNATURE armor lines")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError as exc:
        raise SshSigFormatError(f"SSHSIG body is not base64: {exc}") from exc
    r = _Reader(blob)
    if r.take(6) != MAGIC:
        raise SshSigFormatError("SSHSIG magic preamble missing")
    version = r.uint32()
    if version != SIG_VERSION:
        raise SshSigFormatError(f"unsupported SSHSIG version {version}")
    pub = _Reader(r.string())
    namespace = r.string().decode(errors="replace")
    r.string()  # reserved
    hash_algorithm = r.string().decode(errors="replace")
    sig = _Reader(r.string())
    r.done()
    if pub.string() != b"ssh-ed25519":
        raise SshSigFormatError("only ssh-ed25519 SSHSIG keys are accepted")
    raw = pub.string()
    pub.done()
    if sig.string() != b"ssh-ed25519":
        raise SshSigFormatError("SSHSIG signature type is not ssh-ed25519")
    raw_sig = sig.string()
    sig.done()
    if hash_algorithm not in _HASHES:
        raise SshSigFormatError(f"unsupported SSHSIG hash {hash_algorithm!r}")
    if len(raw) != 32 or len(raw_sig) != 64:
        raise SshSigFormatError("Ed25519 key or signature has the wrong length")
    return SshSig(public_from_raw(raw), namespace, hash_algorithm, raw_sig)
