"""`sealfuse provenance init`: the studio CA and an appliance certificate of the profile C2PA accepts."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealfuse.cli import main


def _init(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["provenance", "init", "--json", *args])
    return res.exit_code, json.loads(res.stdout)


def test_init_creates_a_ca_and_an_end_entity_signing_certificate(tmp_path):
    code, res = _init("--out", str(tmp_path / "pki"), "--organization", "Studio A", "--appliance", "box-1")
    assert code == 0, res
    ca = x509.load_pem_x509_certificate(Path(res["ca_cert"]).read_bytes())
    chain = x509.load_pem_x509_certificates(Path(res["chain"]).read_bytes())
    leaf = chain[0]
    assert chain[1] == ca and leaf.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert isinstance(leaf.public_key(), ed25519.Ed25519PublicKey)
    life = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=396) < life <= dt.timedelta(days=397)
    for key in (res["key"], res["ca_key"]):
        assert stat.S_IMODE(Path(key).stat().st_mode) == 0o600
    assert "box-1" in res["subject"] and "Studio A" in res["subject"]


def test_init_never_overwrites(tmp_path):
    assert _init("--out", str(tmp_path / "pki"))[0] == 0
    before = (tmp_path / "pki" / "appliance" / "signing.key").read_bytes()
    code, res = _init("--out", str(tmp_path / "pki"))
    assert code == 4 and res["reason"] == "output_exists"
    assert (tmp_path / "pki" / "appliance" / "signing.key").read_bytes() == before


def test_init_takes_the_studios_own_ca_and_refuses_a_leaf_as_ca(tmp_path):
    _init("--out", str(tmp_path / "own"), "--alg", "es256")
    code, res = _init("--out", str(tmp_path / "issued"), "--ca-cert", str(tmp_path / "own" / "ca.pem"),
                      "--ca-key", str(tmp_path / "own" / "ca.key"), "--days", "30")
    assert code == 0, res
    assert res["ca_key"] is None and not (tmp_path / "issued" / "ca.key").exists()
    leaf = x509.load_pem_x509_certificates(Path(res["chain"]).read_bytes())[0]
    assert isinstance(leaf.public_key(), ed25519.Ed25519PublicKey)  # new key: --alg default
    own_ca = x509.load_pem_x509_certificate((tmp_path / "own" / "ca.pem").read_bytes())
    assert isinstance(own_ca.public_key(), ec.EllipticCurvePublicKey) and leaf.issuer == own_ca.subject

    code, res = _init("--out", str(tmp_path / "bad"), "--ca-cert", str(tmp_path / "own" / "appliance" / "chain.pem"),
                      "--ca-key", str(tmp_path / "own" / "appliance" / "signing.key"))
    assert code == 5 and "not a CA" in res["message"] and not (tmp_path / "bad").exists()
    code, res = _init("--out", str(tmp_path / "bad"), "--ca-cert", str(tmp_path / "own" / "ca.pem"),
                      "--ca-key", str(tmp_path / "issued" / "appliance" / "signing.key"))
    assert code == 5 and "is not the key of" in res["message"]


def test_help_lists_exit_codes_and_lifetime():
    res = CliRunner().invoke(main, ["provenance", "init", "--help"], terminal_width=200)
    text = " ".join(res.output.split())
    assert "Exit codes" in text and "[default: 397" in text and " 4 OutputExistsError" in text
    res = CliRunner().invoke(main, ["provenance", "verify", "--help"], terminal_width=200)
    text = " ".join(res.output.split())
    for code in (" 0 Trusted", " 10 UntrustedError", " 11 InvalidManifestError", " 12 NoManifestError"):
        assert code in text


def test_provenance_verify_stays_light():
    """`sealfuse provenance verify` loads c2pa-python only, never the engine's stack."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from sealfuse.cli import main\n"
              "try:\n main(['provenance', 'verify', '--help'])\n"
              "except SystemExit:\n pass\n"
              "import sealfuse.verifier.provenance as p\n"
              "heavy = sorted({'numpy', 'cv2', 'onnxruntime', 'av', 'c2pa', 'sealfuse.engine', 'sealfuse.bundle'}"
              " & set(sys.modules))\n"
              "print('HEAVY=' + ','.join(heavy))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY=", "nothing heavy, and c2pa only when a file is read"


def test_the_bundle_carries_the_appliance_chain_and_key(factory, tmp_path):
    import pytest

    from sealfuse.bundle.build import build_bundle
    from sealfuse.bundle.errors import BuildError
    from sealfuse.verifier.model import Manifest

    assert _init("--out", str(tmp_path / "pki"))[0] == 0
    appliance = tmp_path / "pki" / "appliance"
    result = build_bundle(factory.inputs(out="prov", provenance_dir=appliance))
    manifest = Manifest.from_bytes(tarfile_member(result.path, "manifest.json"))
    members = {m.path: m for m in manifest.members}
    assert members["payload/provenance/chain.pem"].sha256 == _sha256(appliance / "chain.pem")
    assert members["payload/provenance/signing.key"].sha256 == _sha256(appliance / "signing.key")

    _init("--out", str(tmp_path / "other"))
    (appliance / "signing.key").unlink()
    (appliance / "signing.key").write_bytes((tmp_path / "other" / "appliance" / "signing.key").read_bytes())
    with pytest.raises(BuildError, match="is not the key of"):
        build_bundle(factory.inputs(out="bad", provenance_dir=appliance))


def tarfile_member(path: Path, name: str) -> bytes:
    import tarfile

    with tarfile.open(path) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
