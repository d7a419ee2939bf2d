"""What the verifier reads: no FIFO or device can make it block (verify and install, as real
processes under a timeout), every small input is bounded, JSON keys appear once in every signed or
trusted document, and a bundle created in the future is refused."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.verifier import errors as E
from sealfuse.verifier import load_trust, verify_bundle
from sealfuse.verifier.inputs import MAX_TRUST_BYTES, read_regular
from sealfuse.verifier.keys import keyid_of
from sealfuse.verifier.model import Manifest
from tests.bundle import factory as F

NOW = F.NOW
TIMEOUT = 60  # a process that blocks on a FIFO never ends; this only bounds a failing run


def _sealfuse(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from sealfuse.cli import main; main()", *args],
                          capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=cwd, check=False)


def _fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_verify_refuses_a_bundle_that_is_not_a_regular_file_without_reading(
        kind: str, factory: Any, tmp_path: Path) -> None:
    target = _fifo(tmp_path, "b.bundle") if kind == "fifo" else Path("/dev/zero")
    proc = _sealfuse("verify", str(target), "--trust", str(factory.trust_path), "--json",
                     cwd=tmp_path)
    assert proc.returncode == E.NotARegularFileError.exit_code, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["error"] == "NotARegularFileError" and doc["reason"] == "not_a_regular_file"
    assert doc["evidence"]["kind"] == {"fifo": "FIFO", "dev-zero": "character device"}[kind]


def test_library_refuses_a_directory_or_a_symlink_to_a_fifo_as_a_bundle(
        factory: Any, tmp_path: Path) -> None:
    with pytest.raises(E.NotARegularFileError) as info:
        verify_bundle(tmp_path, factory.trust, now=NOW)
    assert info.value.evidence["kind"] == "directory"
    link = tmp_path / "link.bundle"
    link.symlink_to(_fifo(tmp_path, "target"))
    with pytest.raises(E.NotARegularFileError) as info:
        verify_bundle(link, factory.trust, now=NOW)
    assert info.value.evidence["kind"] == "FIFO"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_verify_refuses_a_trust_file_that_is_not_a_regular_file(kind: str, factory: Any,
                                                                  tmp_path: Path) -> None:
    bundle = factory.build()
    trust = _fifo(tmp_path, "trust.json") if kind == "fifo" else Path("/dev/zero")
    proc = _sealfuse("verify", str(bundle), "--trust", str(trust), "--json", cwd=tmp_path)
    assert proc.returncode == E.NotARegularFileError.exit_code, proc.stderr
    assert json.loads(proc.stdout)["error"] == "NotARegularFileError"


def test_install_refuses_a_fifo_bundle_and_writes_nothing_outside_its_root(
        factory: Any, tmp_path: Path) -> None:
    fifo = _fifo(tmp_path, "b.bundle")
    root = tmp_path / "root"
    root.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _sealfuse("install", str(fifo), "--root", str(root), "--trust",
                     str(factory.trust_path), "--no-start", "--json", cwd=tmp_path)
    assert proc.returncode == E.NotARegularFileError.exit_code, proc.stderr
    assert json.loads(proc.stdout)["error"] == "NotARegularFileError"
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_install_refuses_a_fifo_trust_file(factory: Any, tmp_path: Path) -> None:
    bundle = factory.build()
    fifo = _fifo(tmp_path, "trust.json")
    root = tmp_path / "root"
    root.mkdir()
    proc = _sealfuse("install", str(bundle), "--root", str(root), "--trust", str(fifo),
                     "--no-start", "--json", cwd=tmp_path)
    assert proc.returncode == E.NotARegularFileError.exit_code, proc.stderr
    assert json.loads(proc.stdout)["error"] == "NotARegularFileError"


def test_install_with_a_pinned_trust_refuses_a_fifo_offered_as_the_new_trust_file(
        factory: Any, tmp_path: Path) -> None:
    """With a trust file pinned, the offered one is compared byte for byte: that read must not
    block on a FIFO either."""
    from sealfuse.appliance.release import Layout

    root = tmp_path / "root"
    root.mkdir()
    pinned = Layout(root).trust
    pinned.parent.mkdir(parents=True)
    pinned.write_bytes(factory.trust_path.read_bytes())
    fifo = _fifo(tmp_path, "offered.json")
    proc = _sealfuse("install", str(factory.build()), "--root", str(root), "--trust", str(fifo),
                     "--no-start", "--json", cwd=tmp_path)
    assert proc.returncode == E.NotARegularFileError.exit_code, proc.stderr
    assert json.loads(proc.stdout)["error"] == "NotARegularFileError"
    assert pinned.read_bytes() == factory.trust_path.read_bytes()


def test_trust_file_larger_than_its_limit_is_refused_after_limit_plus_one_bytes(
        tmp_path: Path) -> None:
    big = tmp_path / "trust.json"
    big.write_bytes(b" " * (MAX_TRUST_BYTES + 1))
    with pytest.raises(E.InputTooLargeError):
        load_trust(big)
    assert read_regular(big, "x", MAX_TRUST_BYTES + 1) == b" " * (MAX_TRUST_BYTES + 1)


def test_sigstore_root_named_by_a_trust_file_is_never_followed_through_a_symlink(
        factory: Any, tmp_path: Path) -> None:
    data = factory.trust.to_json()
    (tmp_path / "real_root.json").write_text("{}")
    (tmp_path / "root.json").symlink_to(tmp_path / "real_root.json")
    data["signed"]["sigstore"] = {"identity": "a@example.org", "issuer": "https://i.example",
                                  "trusted_root": "root.json"}
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(data))
    with pytest.raises(E.TrustFileError) as info:
        load_trust(path)
    assert "symbolic link" in info.value.message


def _dup(text: str, key: str, first: str) -> str:
    """Insert `"key": first,` before the existing `"key":` so the key appears twice."""
    marker = f'"{key}":'
    assert marker in text
    return text.replace(marker, f'{marker} {first}, {marker}', 1)


def test_trust_file_with_a_duplicate_threshold_is_refused(factory: Any, tmp_path: Path) -> None:
    """"threshold":1,"threshold":2 read as 2 by Python and as 1 by first-wins readers."""
    text = json.dumps(factory.trust.to_json())
    path = tmp_path / "dup.json"
    path.write_text(_dup(text, "threshold", "1"))
    with pytest.raises(E.TrustDuplicateKeyError) as info:
        load_trust(path)
    assert info.value.evidence["key"] == "threshold"
    res = CliRunner().invoke(main, ["verify", str(factory.build()), "--trust", str(path),
                                    "--json", "--now", NOW])
    assert res.exit_code == E.TrustDuplicateKeyError.exit_code
    assert json.loads(res.output)["reason"] == "trust_duplicate_key"


@pytest.mark.parametrize("key", ["keyid", "identity"])
def test_duplicate_keys_nested_anywhere_in_the_trust_file_are_refused(
        key: str, factory: Any, tmp_path: Path) -> None:
    data = factory.trust.to_json()
    data["signed"]["sigstore"] = {"identity": "a@example.org", "issuer": "https://i.example",
                                  "trusted_root": {"mediaType": "x"}}
    path = tmp_path / "dup.json"
    path.write_text(_dup(json.dumps(data), key, '"evil"'))
    with pytest.raises(E.TrustDuplicateKeyError):
        load_trust(path)


def test_rotation_candidate_with_duplicate_keys_is_refused(factory: Any, tmp_path: Path) -> None:
    candidate = tmp_path / "trust-v2.json"
    factory.trust.write(candidate)
    candidate.write_text(_dup(candidate.read_text(), "version", "7"))
    res = CliRunner().invoke(main, ["trust", "accept", str(factory.trust_path), str(candidate)])
    assert res.exit_code == E.TrustDuplicateKeyError.exit_code


def test_signed_manifest_with_a_duplicate_key_is_refused_by_name(factory: Any,
                                                                 tmp_path: Path) -> None:
    """Signed by trusted keys, so only the manifest parser can refuse it."""
    entries = [e for e in F.read_entries(factory.build()) if not e.name.startswith("signatures/")]
    manifest = entries[0].data.replace(b'"version":', b'"version":"9.9.9","version":', 1)
    sigs = [F.Entry(f"signatures/{keyid_of(k.public_key())}.sig", k.sign(manifest))
            for k in factory.keys[:2]]
    bundle = factory.variant("dup-manifest", [F.Entry("manifest.json", manifest), *sigs,
                                              *entries[1:]])
    with pytest.raises(E.ManifestDuplicateKeyError) as info:
        verify_bundle(bundle, factory.trust, now=NOW)
    assert info.value.evidence["key"] == "version"
    with pytest.raises(E.ManifestDuplicateKeyError):
        Manifest.from_bytes(manifest)


def test_sigstore_bundle_with_a_duplicate_key_is_refused_before_sigstore_reads_it(
        factory: Any) -> None:
    from sealfuse.verifier.trust import SigstorePolicy, make_trust
    from sealfuse.verifier.verify import check_signatures

    base = factory.trust
    trust = make_trust(base.product, base.keys.values(), 1,
                       sigstore=SigstorePolicy("a@example.org", "https://i", {}, True))
    manifest = b"{}"
    key = factory.keys[0]
    files = {f"signatures/{keyid_of(key.public_key())}.sig": key.sign(manifest),
             "signatures/manifest.sigstore.json": b'{"mediaType": "a", "mediaType": "b"}'}
    with pytest.raises(E.SigstoreDuplicateKeyError):
        check_signatures(manifest, files, trust)


def test_bundle_created_beyond_the_clock_skew_is_refused_with_its_own_code(
        factory: Any) -> None:
    bundle = factory.build()  # created 2026-01-01T00:00:00Z
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    verify_bundle(bundle, factory.trust, now=created - dt.timedelta(minutes=4))
    with pytest.raises(E.CreatedInFutureError) as info:
        verify_bundle(bundle, factory.trust, now=created - dt.timedelta(minutes=6))
    assert info.value.evidence["skew_seconds"] == 300
    with pytest.raises(E.CreatedInFutureError):
        verify_bundle(bundle, factory.trust, now=created - dt.timedelta(seconds=2),
                      clock_skew=dt.timedelta(0))
    res = CliRunner().invoke(main, ["verify", str(bundle), "--trust", str(factory.trust_path),
                                    "--now", "2025-12-01T00:00:00Z", "--json"])
    assert res.exit_code == E.CreatedInFutureError.exit_code == 42
    assert json.loads(res.output)["reason"] == "created_in_future"
    res = CliRunner().invoke(main, ["verify", str(bundle), "--trust", str(factory.trust_path),
                                    "--now", "2025-12-01T00:00:00Z", "--clock-skew", "3000000"])
    assert res.exit_code == 0, res.output


def test_expired_bundle_cannot_be_revived_by_setting_the_clock_back(factory: Any) -> None:
    bundle = factory.build(expires_days=30)  # 2026-01-01 .. 2026-01-31
    with pytest.raises(E.ExpiredManifestError):
        verify_bundle(bundle, factory.trust, now="2026-06-01T00:00:00Z")
    with pytest.raises(E.CreatedInFutureError):
        verify_bundle(bundle, factory.trust, now="2025-06-01T00:00:00Z")
