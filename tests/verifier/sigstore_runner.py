"""Run one offline sigstore check and print its outcome as JSON (tests run this under unshare --net).

Usage: python sigstore_runner.py ARTIFACT SIGSTORE_BUNDLE ROOT_JSON IDENTITY ISSUER [--tamper]
ROOT_JSON is a trusted_root.json, or a trust_config.json whose trustedRoot is used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sealfuse.verifier.errors import VerificationError
from sealfuse.verifier.sigstore_check import verify_sigstore


def main(argv: list[str]) -> int:
    artifact_path, bundle_path, root_path, identity, issuer = argv[:5]
    artifact = Path(artifact_path).read_bytes()
    if "--tamper" in argv:
        artifact = artifact[:-1] + bytes([artifact[-1] ^ 1])
    root = json.loads(Path(root_path).read_text())
    root = root.get("trustedRoot", root)
    try:
        verify_sigstore(artifact, Path(bundle_path).read_bytes(), identity=identity,
                        issuer=issuer, trusted_root=root)
    except VerificationError as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": exc.message}))
        return 0
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
