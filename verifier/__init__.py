"""Offline bundle verification: manifest, canonical JSON, hashes, signatures, trust policy.

Never imports numpy, cv2 or onnxruntime (security teams run it on their own workstation).
Public API: load_trust, verify_bundle, extract_bundle, and the error classes in .errors.
"""

from sealfuse.verifier.errors import EXIT_CODES, VerificationError
from sealfuse.verifier.model import LockEntry, Manifest, Member, ModelEntry, Platform, Version
from sealfuse.verifier.trust import (
    Trust,
    TrustedKey,
    accept_rotation,
    load_trust,
    read_trust_file,
)
from sealfuse.verifier.verify import VerifiedBundle, extract_bundle, verify_bundle

__all__ = [
    "EXIT_CODES",
    "LockEntry",
    "Manifest",
    "Member",
    "ModelEntry",
    "Platform",
    "Trust",
    "TrustedKey",
    "VerificationError",
    "VerifiedBundle",
    "Version",
    "accept_rotation",
    "extract_bundle",
    "load_trust",
    "read_trust_file",
    "verify_bundle",
]
