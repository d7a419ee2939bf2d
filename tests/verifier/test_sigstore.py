"""Offline sigstore verification with real vectors, each case run under `unshare --net`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent.parent / "data" / "sigstore"
RUNNER = Path(__file__).with_name("sigstore_runner.py")
GHA = "https://token.actions.githubusercontent.com"
WHEEL_ID = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GH_OAUTH = "https://github.com/login/oauth"

# Only the cases that run sigstore under `unshare --net` need root; the vector checksums and the
# "required but absent" refusal (which never reaches sigstore) run everywhere.
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                   reason="needs root and unshare to cut the network")


def offline(*args: str, home: Path) -> dict[str, object]:
    """Run the runner with no network interfaces at all and an empty HOME (no TUF cache)."""
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
           "XDG_DATA_HOME": str(home / "data")}
    proc = subprocess.run(["unshare", "--net", sys.executable, str(RUNNER), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


CASES = {
    # name: (artifact, bundle, root, identity, issuer, extra, expect_ok); every failing case has
    # the words of its own reason in REASONS below.
    "production-wheel-github-actions": ("production/bundle_v3_github.whl",
                                        "production/bundle_v3_github.whl.sigstore",
                                        "production/trusted_root.json", WHEEL_ID, GHA, [], True),
    "staging-message-signature": ("staging/bundle_v3.txt", "staging/bundle_v3.txt.sigstore",
                                  "staging/trusted_root.json", "william@yossarian.net",
                                  GH_OAUTH, [], True),
    "staging-rekor-v2-with-tsa": ("staging/staging-rekor-v2.txt",
                                  "staging/staging-rekor-v2.txt.sigstore.json",
                                  "staging/trusted_root.json", "jku@goto.fi", GH_OAUTH, [], True),
    "staging-tsa-root-from-trust-config": ("staging-tsa/bundle.txt",
                                           "staging-tsa/bundle.txt.sigstore",
                                           "staging-tsa/trust_config.json",
                                           "alexis.challande@trailofbits.com",
                                           "https://accounts.google.com", [], True),
    "wrong-identity": ("production/bundle_v3_github.whl",
                       "production/bundle_v3_github.whl.sigstore", "production/trusted_root.json",
                       "https://github.com/evil/evil/.github/workflows/x.yml@refs/heads/main",
                       GHA, [], False),
    "wrong-issuer": ("staging/bundle_v3.txt", "staging/bundle_v3.txt.sigstore",
                     "staging/trusted_root.json", "william@yossarian.net",
                     "https://accounts.google.com", [], False),
    "tampered-artifact": ("production/bundle_v3_github.whl",
                          "production/bundle_v3_github.whl.sigstore",
                          "production/trusted_root.json", WHEEL_ID, GHA, ["--tamper"], False),
    "staging-bundle-against-production-root": ("staging/bundle_v3.txt",
                                               "staging/bundle_v3.txt.sigstore",
                                               "production/trusted_root.json",
                                               "william@yossarian.net", GH_OAUTH, [], False),
    "cve-2022-36056-inconsistent-tlog-entry": ("negative/bundle_cve_2022_36056.txt",
                                               "negative/bundle_cve_2022_36056.txt.sigstore",
                                               "staging/trusted_root.json",
                                               "william@yossarian.net", GH_OAUTH, [], False),
}


@needs_unshare
@pytest.mark.parametrize("case", sorted(CASES))
def test_sigstore_vector_offline(case: str, tmp_path: Path) -> None:
    artifact, bundle, root, identity, issuer, extra, expect_ok = CASES[case]
    result = offline(str(DATA / artifact), str(DATA / bundle), str(DATA / root), identity,
                     issuer, *extra, home=tmp_path)
    if expect_ok:
        assert case not in REASONS
        assert result == {"ok": True}
    else:
        assert result["ok"] is False
        assert result["error"] == "SigstoreVerificationError"
        assert REASONS[case] in str(result["message"])  # a missing entry is a KeyError


REASONS = {
    "wrong-identity": "SANs do not match https://github.com/evil/evil",
    "wrong-issuer": "OIDCIssuer does not match",
    "tampered-artifact": "message digest mismatch",
    "staging-bundle-against-production-root": "failed to build timestamp certificate chain",
    "cve-2022-36056-inconsistent-tlog-entry": "transparency log entry is inconsistent",
}


def test_every_failing_vector_names_its_own_reason() -> None:
    failing = {case for case, spec in CASES.items() if not spec[-1]}
    assert set(REASONS) == failing
    assert all(REASONS.values())


def test_vectors_are_intact() -> None:
    import hashlib

    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


BUNDLE_CHECK = """
import json, sys
from sealfuse.verifier import load_trust, verify_bundle
from sealfuse.verifier.errors import VerificationError
try:
    verify_bundle(sys.argv[1], load_trust(sys.argv[2]), now=sys.argv[3])
    print(json.dumps({"ok": True}))
except VerificationError as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__, "message": exc.message}))
"""


def _sigstore_trust(factory: Any, required: bool) -> Path:
    from sealfuse.verifier.trust import SigstorePolicy, make_trust

    base = factory.trust
    policy = SigstorePolicy(WHEEL_ID, GHA, json.loads(
        (DATA / "production" / "trusted_root.json").read_text()), required)
    trust = make_trust(base.product, base.keys.values(), base.threshold, sigstore=policy)
    path = factory.root / "trust-sigstore.json"
    trust.write(path)
    return path


def test_bundle_without_required_sigstore_signature_is_rejected(factory: Any,
                                                                  tmp_path: Path) -> None:
    from sealfuse.verifier import load_trust, verify_bundle
    from sealfuse.verifier.errors import SigstoreVerificationError

    bundle = factory.build()
    trust = load_trust(_sigstore_trust(factory, required=True))
    with pytest.raises(SigstoreVerificationError):
        verify_bundle(bundle, trust, now="2026-06-01T00:00:00Z")
    optional = load_trust(_sigstore_trust(factory, required=False))
    assert verify_bundle(bundle, optional, now="2026-06-01T00:00:00Z").signatures.sigstore == "absent"


@needs_unshare
def test_bundle_with_sigstore_bundle_for_another_artifact_is_rejected_offline(
        factory: Any, tmp_path: Path) -> None:
    from sealfuse.bundle.sign import add_sigstore

    bundle = factory.build()
    add_sigstore(bundle, (DATA / "production" / "bundle_v3_github.whl.sigstore").read_bytes())
    trust_path = _sigstore_trust(factory, required=True)
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", BUNDLE_CHECK, str(bundle),
                           str(trust_path), "2026-06-01T00:00:00Z"], capture_output=True,
                          text=True, env=env, timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is False
    assert result["error"] == "SigstoreVerificationError"
    assert "sigstore verification failed" in result["message"]
