"""Add signatures to a bundle on an offline signing machine, rewriting the tar reproducibly.

Each Ed25519 signature is stored twice over the same canonical manifest bytes: raw
(`signatures/<keyid>.sig`, for openssl) and SSHSIG (`signatures/<keyid>.sshsig`, for ssh-keygen).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.bundle.errors import DuplicateSignatureError, SigningError
from sealfuse.bundle.tarwrite import write_bundle
from sealfuse.verifier import sshsig
from sealfuse.verifier.keys import keyid_of, short_keyid
from sealfuse.verifier.model import MANIFEST_NAME, SIGNATURES_DIR, SIGSTORE_NAME
from sealfuse.verifier.signatures import signer_keyids
from sealfuse.verifier.verify import BundleContents, read_bundle


@dataclass(frozen=True)
class _TarPayload:
    """A payload member copied from the original bundle."""

    arcname: str
    size: int
    opener: Callable[[], IO[bytes]]

    def open(self) -> IO[bytes]:
        return self.opener()


def _rewrite(bundle: Path, contents: BundleContents, new_files: dict[str, bytes]) -> None:
    signatures = dict(contents.signature_files)
    signatures.update(new_files)
    with tarfile.open(bundle, "r:") as tar:
        members = [m for m in tar.getmembers()
                   if m.name != MANIFEST_NAME and not m.name.startswith(SIGNATURES_DIR)]
        mtime = int(tar.getmember(MANIFEST_NAME).mtime)

        def opener(member: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
            def _open() -> IO[bytes]:
                f = tar.extractfile(member)
                if f is None:
                    raise SigningError(f"{member.name} is not a regular file", path=member.name)
                return f
            return _open

        payload = [_TarPayload(m.name, m.size, opener(m)) for m in members]
        write_bundle(bundle, contents.manifest_bytes, signatures, payload, mtime)


def sign_bundle(bundle: Path, key: Ed25519PrivateKey) -> list[str]:
    """Check the bundle's payload against its manifest, add this key's raw + SSHSIG signatures,
    and return the names added. Refuses a second signature by the same key."""
    contents = read_bundle(bundle)
    keyid = keyid_of(key.public_key())
    if keyid in signer_keyids(contents.signature_files):
        raise DuplicateSignatureError(f"bundle is already signed by key {short_keyid(keyid)}",
                                      keyid=keyid)
    manifest = contents.manifest_bytes
    new = {
        f"{SIGNATURES_DIR}{keyid}.sig": key.sign(manifest),
        f"{SIGNATURES_DIR}{keyid}.sshsig": sshsig.sign(key, manifest).encode(),
    }
    _rewrite(Path(bundle), contents, new)
    return sorted(new)


def add_sshsig(bundle: Path, armored: bytes) -> str:
    """Attach an SSHSIG made elsewhere (`ssh-keygen -Y sign -n sealfuse-bundle -f KEY
    manifest.json`); it must verify over this bundle's manifest."""
    contents = read_bundle(bundle)
    try:
        sig = sshsig.parse(armored)
    except sshsig.SshSigFormatError as exc:
        raise SigningError(f"not an Ed25519 SSHSIG: {exc}") from exc
    if not sig.verify(contents.manifest_bytes):
        raise SigningError("the SSHSIG does not verify over this bundle's manifest.json "
                           f"(namespace {sig.namespace!r}, expected {sshsig.NAMESPACE!r})")
    keyid = keyid_of(sig.public_key)
    if keyid in signer_keyids(contents.signature_files):
        raise DuplicateSignatureError(f"bundle is already signed by key {short_keyid(keyid)}",
                                      keyid=keyid)
    name = f"{SIGNATURES_DIR}{keyid}.sshsig"
    _rewrite(Path(bundle), contents, {name: armored})
    return name


def add_sigstore(bundle: Path, sigstore_json: bytes) -> str:
    """Attach a sigstore bundle over manifest.json (made on a connected host with
    `sigstore sign manifest.json`); it is checked at verify time against the trust policy."""
    contents = read_bundle(bundle)
    if SIGSTORE_NAME in contents.signature_files:
        raise DuplicateSignatureError("bundle already carries a sigstore bundle",
                                      path=SIGSTORE_NAME)
    from sealfuse.verifier.inputs import loads_strict

    # the same strict reading verify applies: no repeated keys, no NaN, no nesting past the stack
    loads_strict(sigstore_json, duplicate=SigningError, invalid=SigningError, what="sigstore bundle")
    _rewrite(Path(bundle), contents, {SIGSTORE_NAME: sigstore_json})
    return SIGSTORE_NAME


def manifest_bytes(bundle: Path) -> bytes:
    """The exact signed bytes (for external signing and for auditors)."""
    return read_bundle(bundle).manifest_bytes

