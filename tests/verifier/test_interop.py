"""Auditors' stock tools accept our signatures: `ssh-keygen -Y verify` and `openssl pkeyutl -rawin`.

And the reverse: an SSHSIG made by `ssh-keygen -Y sign` counts towards the threshold.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.verifier import load_trust, verify_bundle
from sealfuse.verifier.errors import UnsignedManifestError
from sealfuse.verifier.keys import keyid_of

NOW = "2026-06-01T00:00:00Z"
needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _extract(bundle: Path, dest: Path) -> Path:
    """What an auditor does: plain `tar -x` of manifest.json and signatures/."""
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(dest), "manifest.json", "signatures"],
                   check=True)
    return dest


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@needs_ssh
def test_ssh_keygen_verifies_every_sshsig_with_allowed_signers_from_the_trust_file(
        factory: Any, tmp_path: Path) -> None:
    bundle = factory.build()
    d = _extract(bundle, tmp_path / "audit")
    allowed = tmp_path / "allowed_signers"
    _cli("trust", "allowed-signers", str(factory.trust_path), "-o", str(allowed))
    sigs = sorted((d / "signatures").glob("*.sshsig"))
    assert len(sigs) == 2
    for sig in sigs:
        keyid = sig.name.removesuffix(".sshsig")
        name = factory.trust.keys[keyid].name
        with open(d / "manifest.json", "rb") as stdin:
            proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", name,
                                   "-n", "sealfuse-bundle", "-s", str(sig)],
                                  stdin=stdin, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "Good" in proc.stdout
        # a changed manifest is refused by the same stock tool
        proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", name,
                               "-n", "sealfuse-bundle", "-s", str(sig)],
                              input=(d / "manifest.json").read_bytes() + b" ",
                              capture_output=True, check=False)
        assert proc.returncode != 0


@needs_openssl
def test_openssl_verifies_every_raw_signature_with_the_pem_key(factory: Any,
                                                               tmp_path: Path) -> None:
    bundle = factory.build()
    d = _extract(bundle, tmp_path / "audit")
    pems = tmp_path / "pem"
    _cli("trust", "pem", str(factory.trust_path), "-d", str(pems))
    sigs = sorted((d / "signatures").glob("*.sig"))
    assert len(sigs) == 2
    for sig in sigs:
        assert len(sig.read_bytes()) == 64
        keyid = sig.name.removesuffix(".sig")
        cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pems / f"{keyid}.pem"),
               "-rawin", "-in", str(d / "manifest.json"), "-sigfile", str(sig)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "Signature Verified Successfully" in proc.stdout
        tampered = tmp_path / "tampered.json"
        tampered.write_bytes((d / "manifest.json").read_bytes().replace(b"1.2.0", b"1.2.1"))
        cmd[cmd.index(str(d / "manifest.json"))] = str(tampered)
        assert subprocess.run(cmd, capture_output=True, check=False).returncode != 0


@needs_ssh
def test_sshsig_made_by_ssh_keygen_counts_towards_the_threshold(factory: Any,
                                                                tmp_path: Path) -> None:
    # signer0 signs with sealfuse; signer1 holds the same kind of key file and signs with
    # stock `ssh-keygen -Y sign` (our keygen writes OpenSSH private keys).
    bundle = factory.build(signers=(0,))
    trust = load_trust(factory.trust_path)
    with pytest.raises(UnsignedManifestError):
        verify_bundle(bundle, trust, now=NOW)
    manifest = tmp_path / "manifest.json"
    _cli("bundle", "manifest", str(bundle), "-o", str(manifest))
    key = factory.key_path(1)
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "sealfuse-bundle",
                    str(manifest)], check=True, capture_output=True)
    _cli("bundle", "sign", str(bundle), "--sshsig", str(manifest) + ".sig")
    result = verify_bundle(bundle, trust, now=NOW)
    assert set(result.signers) == {keyid_of(factory.keys[0].public_key()),
                                   keyid_of(factory.keys[1].public_key())}


@needs_ssh
def test_key_generated_by_ssh_keygen_can_be_trusted_and_sign(factory: Any,
                                                            tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "auditor-key",
                    "-f", str(key)], check=True)
    trust_path = tmp_path / "trust.json"
    _cli("trust", "create", "--out", str(trust_path), "--key", str(key) + ".pub",
         "--threshold", "1")
    bundle = factory.build(signers=())
    _cli("bundle", "sign", str(bundle), "--key", str(key))
    result = verify_bundle(bundle, load_trust(trust_path), now=NOW)
    assert result.signer_names == ("auditor-key",)


@needs_ssh
def test_inspect_and_verify_count_the_same_signers_when_one_signed_with_ssh_keygen_only(
        factory: Any, tmp_path: Path) -> None:
    """Regression: `bundle inspect --trust` counted only raw .sig files, so a signer who attached
    only an SSHSIG made with `ssh-keygen -Y sign` was valid for verify and missing in inspect."""
    bundle = factory.build(signers=(0,))  # signer0 through sealfuse (.sig and .sshsig)
    manifest = tmp_path / "manifest.json"
    _cli("bundle", "manifest", str(bundle), "-o", str(manifest))
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(factory.key_path(1)), "-n",
                    "sealfuse-bundle", str(manifest)], check=True, capture_output=True)
    _cli("bundle", "sign", str(bundle), "--sshsig", str(manifest) + ".sig")  # signer1: SSHSIG only

    expected = sorted(keyid_of(k.public_key()) for k in factory.keys[:2])
    verified = json.loads(_cli("verify", str(bundle), "--trust", str(factory.trust_path),
                               "--json", "--now", NOW))
    inspected = json.loads(_cli("bundle", "inspect", str(bundle), "--trust",
                                str(factory.trust_path), "--json"))
    assert sorted(s["keyid"] for s in verified["signers"]) == expected
    assert inspected["signatures"]["valid_keyids"] == expected
    assert inspected["signatures"]["threshold_met"] is True
    assert inspected["signatures"]["invalid_keyids"] == []
    text = _cli("bundle", "inspect", str(bundle), "--trust", str(factory.trust_path))
    assert "2 valid of 2 required" in text
