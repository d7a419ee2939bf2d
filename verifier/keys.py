"""Ed25519 keys: key ids, OpenSSH/PEM/raw encodings, raw signatures over canonical bytes.

A key id is the lowercase hex sha256 of the 32 raw public key bytes; its short form is the
first 16 hex characters.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SHORT_KEYID_LEN = 16


class KeyFormatError(ValueError):
    """A key file or key string cannot be parsed as Ed25519."""


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keyid_of(key: Ed25519PublicKey | bytes) -> str:
    """sha256 of the raw 32-byte public key, lowercase hex."""
    raw = key if isinstance(key, bytes) else raw_public(key)
    return hashlib.sha256(raw).hexdigest()


def short_keyid(keyid: str) -> str:
    return keyid[:SHORT_KEYID_LEN]


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise KeyFormatError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise KeyFormatError(f"public key is not base64: {exc}") from exc
    return public_from_raw(raw)


def openssh_public(key: Ed25519PublicKey, comment: str = "") -> str:
    """`ssh-ed25519 AAAA... comment`."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    text = line.decode()
    return f"{text} {comment}".rstrip()


def ssh_wire_public(key: Ed25519PublicKey) -> bytes:
    """The SSH wire encoding of the public key (string "ssh-ed25519", string key)."""
    line = openssh_public(key).split()
    return base64.b64decode(line[1])


def pem_public(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_text(text: str) -> Ed25519PublicKey:
    """Parse an OpenSSH `ssh-ed25519 ...` line, a PEM public key, or base64 raw bytes."""
    text = text.strip()
    try:
        if text.startswith("ssh-ed25519 "):
            key = serialization.load_ssh_public_key(" ".join(text.split()[:2]).encode())
        elif text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            return public_from_b64(text)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"cannot parse public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError(f"not an Ed25519 key: {type(key).__name__}")
    return key


def _read_key(path: Path) -> bytes:
    """A key file's bytes: a regular file of at most MAX_KEY_BYTES (KeyFormatError otherwise)."""
    from sealfuse.verifier.errors import VerificationError
    from sealfuse.verifier.inputs import MAX_KEY_BYTES, read_regular

    try:
        return read_regular(path, "key file", MAX_KEY_BYTES)
    except VerificationError as exc:
        raise KeyFormatError(exc.message) from exc


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load an OpenSSH or PEM (PKCS#8) Ed25519 private key, decrypting with `passphrase`."""
    data = _read_key(path)
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, passphrase)
        else:
            key = serialization.load_pem_private_key(data, passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"cannot load private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"{path} is not an Ed25519 key: {type(key).__name__}")
    return key


def private_key_encrypted(path: Path) -> bool:
    """True when the key file needs a passphrase."""
    data = _read_key(path)
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            serialization.load_ssh_private_key(data, None)
        else:
            serialization.load_pem_private_key(data, None)
    except (TypeError, UnsupportedAlgorithm):
        return True
    except ValueError:
        return False
    return False


def serialize_private(key: Ed25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    """Unencrypted: OpenSSH private key format (usable by `ssh-keygen -Y sign` as is).
    With a passphrase: encrypted PKCS#8 PEM (OpenSSH's own encryption needs the bcrypt module,
    which the verifier does not depend on)."""
    if passphrase:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(passphrase))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def verify_raw(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature by `key` over `data`."""
    if len(signature) != 64:
        return False
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
