"""The appliance side of the key: the installer moves the bundle's key out of the payload, readable
by the service user only; tmpfiles.d hands it to that user; the engine finds it there by default."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from sealfuse.appliance.staging import stage_provenance_key
from sealfuse.engine import provenance as prov

ROOT = Path(__file__).resolve().parents[2]


def test_staging_moves_the_key_out_of_the_payload_with_mode_0400(pki, tmp_path):
    release = tmp_path / "releases" / "7"
    src = release / "payload" / "provenance"
    src.mkdir(parents=True)
    os.chmod(release / "payload", 0o700)
    for p in (pki.key, pki.chain):
        shutil.copy(p, src / p.name)
        os.chmod(src / p.name, 0o644)  # as extracted
    assert stage_provenance_key(release)
    assert not src.exists()
    key, chain = release / "provenance" / "signing.key", release / "provenance" / "chain.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400 and stat.S_IMODE(chain.stat().st_mode) == 0o444
    assert key.read_bytes() == pki.key.read_bytes()
    assert not stage_provenance_key(tmp_path / "releases" / "8"), "a bundle without a key stages none"


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="needs systemd-tmpfiles")
def test_tmpfiles_gives_the_key_to_the_service_user(tmp_path):
    root = tmp_path / "root"
    key = root / "opt/sealfuse/releases/7/provenance/signing.key"
    key.parent.mkdir(parents=True)
    key.write_text("k")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("sealfuse:x:990:990::/var/lib/sealfuse:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("sealfuse:x:990:\n")
    res = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                          str(ROOT / "systemd/tmpfiles.d/sealfuse.conf")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    st = key.stat()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (990, 990)
    assert stat.S_IMODE(st.st_mode) == 0o400


def test_the_engine_finds_the_installed_key_by_default(pki, tmp_path, monkeypatch):
    current = tmp_path / "current" / "provenance"
    current.mkdir(parents=True)
    shutil.copy(pki.key, current / "signing.key")
    shutil.copy(pki.chain, current / "chain.pem")
    monkeypatch.delenv("SEALFUSE_PROVENANCE_KEY", raising=False)
    monkeypatch.delenv("SEALFUSE_PROVENANCE_CHAIN", raising=False)
    monkeypatch.setattr(prov, "DEFAULT_DIRS", (current, tmp_path / "etc"))
    cfg = prov.ProvenanceConfig.from_environment(require=True)
    assert cfg.key == current / "signing.key" and cfg.chain == current / "chain.pem" and cfg.require
    assert prov.Provenance(cfg).status()["signing"]
    monkeypatch.setattr(prov, "DEFAULT_DIRS", (tmp_path / "none",))
    assert prov.ProvenanceConfig.from_environment().key is None
    # another user's key (the service user's, 0400) is skipped: unsigned with a warning, not an error
    monkeypatch.setattr(prov, "DEFAULT_DIRS", (current,))
    monkeypatch.setattr(prov.os, "access", lambda path, mode: False)
    assert prov.ProvenanceConfig.from_environment().key is None


def test_doctor_warns_before_the_certificate_expires(pki, tmp_path):
    import datetime as dt

    from cryptography import x509

    from sealfuse.appliance.doctor import check_provenance
    from sealfuse.appliance.release import Layout

    layout = Layout(tmp_path)
    assert check_provenance(layout).ok is None and "UNSIGNED" in check_provenance(layout).detail
    (layout.current / "provenance").mkdir(parents=True)
    shutil.copy(pki.chain, layout.current / "provenance" / "chain.pem")
    end = x509.load_pem_x509_certificates(pki.chain.read_bytes())[0].not_valid_after_utc
    fine = check_provenance(layout, now=end - dt.timedelta(days=200))
    assert fine.ok and "WARNING" not in fine.detail
    soon = check_provenance(layout, now=end - dt.timedelta(days=10))
    assert soon.ok and "WARNING: it expires in 10 days" in soon.detail
    gone = check_provenance(layout, now=end + dt.timedelta(seconds=1))
    assert gone.ok is False and "expired" in gone.detail
