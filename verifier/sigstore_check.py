"""Offline sigstore verification of a bundle's manifest with an explicit trusted root and identity.

Uses `Verifier(trusted_root=...)` only; never `Verifier.production()` (it refreshes a TUF cache
over the network). sigstore is imported lazily: it is an optional dependency.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from typing import Any

from sealfuse.verifier.errors import SigstoreVerificationError


def verify_sigstore(artifact: bytes, bundle_json: bytes, *, identity: str, issuer: str,
                    trusted_root: Mapping[str, Any]) -> None:
    """Raise SigstoreVerificationError unless `bundle_json` is a valid sigstore bundle over
    `artifact`, chaining to `trusted_root` and issued to `identity` by `issuer`."""
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import Bundle, TrustedRoot
        from sigstore.verify import Verifier, policy
    except ImportError as exc:
        raise SigstoreVerificationError(
            "the trust file requires a sigstore signature but sigstore is not installed "
            "(pip install 'sealfuse[sigstore]')", missing=str(exc.name)) from exc
    try:
        # TrustedRoot.from_file is the public loader; an inline root goes through a temp file.
        with tempfile.NamedTemporaryFile("w", suffix=".json") as tmp:
            json.dump(dict(trusted_root), tmp)
            tmp.flush()
            root = TrustedRoot.from_file(tmp.name)
    except Exception as exc:  # sigstore raises several types for a bad root
        raise SigstoreVerificationError(f"sigstore trusted_root is invalid: {exc}") from exc
    try:
        bundle = Bundle.from_json(bundle_json)
    except Exception as exc:
        raise SigstoreVerificationError(f"sigstore bundle cannot be parsed: {exc}") from exc
    verifier = Verifier(trusted_root=root)
    try:
        verifier.verify_artifact(artifact, bundle, policy.Identity(identity=identity,
                                                                   issuer=issuer))
    except SigstoreError as exc:
        raise SigstoreVerificationError(
            f"sigstore verification failed: {exc}", identity=identity, issuer=issuer) from exc
    except ValueError as exc:
        raise SigstoreVerificationError(
            f"sigstore verification failed: {exc}", identity=identity, issuer=issuer) from exc
