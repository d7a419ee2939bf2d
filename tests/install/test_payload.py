"""A signed bundle that lacks a payload file the installer needs (the unit, sysusers.d, tmpfiles.d,
or one half of the AppArmor or provenance pair) is refused with PayloadIncompleteError (exit 94)
naming the file, before anything is written to /etc or switched; so is a rollback to such a
release. Bundles are built and signed by the real builder from copies of this checkout's
systemd/ and hardening/ with one file removed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.appliance.cli import install
from sealfuse.appliance.errors import INSTALL_EXIT_CODES, PayloadIncompleteError
from sealfuse.appliance.install import InstallOptions
from sealfuse.appliance.install import install as do_install
from sealfuse.appliance.install import rollback as do_rollback
from sealfuse.appliance.release import InstallRecord, Layout
from sealfuse.appliance.units import PAIRED_PAYLOAD, REQUIRED_PAYLOAD
from tests.install.installlib import HARDENING_DIR, SYSTEMD_DIR, FakeSystemd

AUDIT = "var/lib/sealfuse/audit/audit.jsonl"
# the audit log that records the refusal, and the directories it lives in
LOGGED = ("var/lib/sealfuse", "var/lib/sealfuse/audit", AUDIT)


def _bundle(tmp_path: Path, key: Ed25519PrivateKey, version: str, drop: str | None = None,
            wheels: Path | None = None) -> Path:
    """A signed bundle of this checkout's units and hardening without the payload file `drop`
    (a path below payload/)."""
    from sealfuse.bundle.build import BuildInputs, build_bundle
    from sealfuse.bundle.sign import sign_bundle

    src = tmp_path / f"src-{version}"
    shutil.copytree(SYSTEMD_DIR, src / "systemd")
    shutil.copytree(HARDENING_DIR, src / "hardening")
    if drop is not None:
        (src / drop).unlink()
    result = build_bundle(BuildInputs(
        version=version, out_dir=tmp_path / f"out-{version}", wheelhouse=wheels,
        units_dir=src / "systemd", hardening_dir=src / "hardening", configs=(),
        source_date_epoch=1_700_000_000 + int(version) * 60, expires_days=3650))
    sign_bundle(result.path, key)
    return result.path


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """path -> (mode, content or link target) of everything below root but the audit log (which
    records the refusal)."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel in LOGGED:
                continue
            st = p.lstat()
            body: bytes | str = (os.readlink(p) if p.is_symlink() else
                                 p.read_bytes() if p.is_file() else "")
            out[rel] = (st.st_mode, body)
    return out


MISSING = [*REQUIRED_PAYLOAD, *(rel for pair in PAIRED_PAYLOAD for rel in pair
                                if rel.startswith("hardening/"))]


@pytest.mark.parametrize("drop", MISSING)
def test_a_bundle_without_a_file_the_installer_needs_is_refused_and_changes_nothing(
        drop: str, root: Path, tmp_path: Path, signing_key: Ed25519PrivateKey,
        trust_file: Path) -> None:
    bundle = _bundle(tmp_path, signing_key, "1", drop)
    before = _snapshot(root)
    res = CliRunner().invoke(install, ["--root", str(root), str(bundle), "--trust",
                                       str(trust_file), "--no-start", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == PayloadIncompleteError.exit_code == 94, res.output
    doc = json.loads(res.output)
    assert doc["error"] == "PayloadIncompleteError" and doc["reason"] == "payload_incomplete"
    assert doc["evidence"]["missing"] == [drop] and drop in doc["message"]
    # no release, no unit in /etc, no trust pin, no symlink, no directory: nothing at all
    assert _snapshot(root) == before and not (root / "var/lib/sealfuse").exists()
    assert "PayloadIncompleteError" in INSTALL_EXIT_CODES[94]


def test_a_provenance_key_without_its_chain_is_refused(root: Path, tmp_path: Path,
                                                      signing_key: Ed25519PrivateKey,
                                                      trust_file: Path) -> None:
    """The builder ships the pair only together, so the half pair is made in a re-signed copy."""
    import hashlib

    from sealfuse.verifier.keys import keyid_of
    from sealfuse.verifier.model import Manifest, canonical
    from tests.bundle import factory as F

    bundle = _bundle(tmp_path, signing_key, "1")
    entries = [e for e in F.read_entries(bundle) if not e.name.startswith("signatures/")]
    assert not any(e.name.startswith("payload/provenance/") for e in entries)
    key = b"stand-in key, never used here\n"
    data = json.loads(entries[0].data)
    data["members"].append({"path": "payload/provenance/signing.key", "size": len(key),
                            "sha256": hashlib.sha256(key).hexdigest(), "kind": "config"})
    data["members"].sort(key=lambda m: m["path"])
    manifest = canonical(data)
    Manifest.from_bytes(manifest)
    payload = sorted([*entries[1:], F.Entry("payload/provenance/signing.key", key)],
                     key=lambda e: e.name)
    sig = F.Entry(f"signatures/{keyid_of(signing_key.public_key())}.sig",
                  signing_key.sign(manifest))
    half = F.write_entries(tmp_path / "half.bundle",
                           [F.Entry("manifest.json", manifest), sig, *payload])
    before = _snapshot(root)
    with pytest.raises(PayloadIncompleteError) as info:
        do_install(half, InstallOptions(trust=trust_file, start=False, settle=0), Layout(root),
                   FakeSystemd(Layout(root)))
    assert info.value.evidence["missing"] == ["provenance/chain.pem"]
    assert _snapshot(root) == before


@pytest.mark.slow
def test_an_upgrade_or_rollback_to_an_incomplete_release_leaves_the_running_one(
        root: Path, tmp_path: Path, signing_key: Ed25519PrivateKey, trust_file: Path,
        sealfuse_wheelhouse: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    opts = InstallOptions(trust=trust_file, settle=0)
    do_install(_bundle(tmp_path, signing_key, "1", wheels=sealfuse_wheelhouse), opts, layout, sd)
    before = _snapshot(root)
    with pytest.raises(PayloadIncompleteError):
        do_install(_bundle(tmp_path, signing_key, "2", "systemd/sysusers.d/sealfuse.conf",
                           wheels=sealfuse_wheelhouse), opts, layout, sd)
    assert _snapshot(root) == before and os.readlink(layout.current) == "releases/1"
    last = json.loads((root / AUDIT).read_text().splitlines()[-1])
    assert last["event"] == "install_refused" and last["error"] == "PayloadIncompleteError"

    # A kept release that lost a file (an older installer kept it; or a hand edit) is not
    # switched to by rollback either.
    do_install(_bundle(tmp_path, signing_key, "3", wheels=sealfuse_wheelhouse), opts, layout, sd)
    (layout.release("1") / "payload/systemd/tmpfiles.d/sealfuse.conf").unlink()
    before = _snapshot(root)
    with pytest.raises(PayloadIncompleteError) as info:
        do_rollback(layout, sd, to="1", opts=opts)
    assert info.value.evidence["missing"] == ["systemd/tmpfiles.d/sealfuse.conf"]
    assert _snapshot(root) == before and os.readlink(layout.current) == "releases/3"
    assert InstallRecord.load(layout).current == "3"
