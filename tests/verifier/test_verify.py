"""verify_bundle / extract_bundle / `sealfuse verify`: the happy path, policy knobs, CLI contract,
extraction safety, the strict tar reader, and the verifier's import graph."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.verifier import EXIT_CODES, extract_bundle, verify_bundle
from sealfuse.verifier import errors as E
from sealfuse.verifier import verify as verify_module
from sealfuse.verifier.trust import Trust
from sealfuse.verifier.verify import VerifiedBundle
from tests.bundle import factory as F

NOW = F.NOW


def test_valid_bundle_verifies_with_typed_manifest(factory: Any) -> None:
    bundle = factory.build(version="1.2.0")
    v = verify_bundle(bundle, factory.trust, now=NOW)
    assert v.version == "1.2.0" and v.product == "sealfuse"
    assert v.platform.python == "cp311" and v.platform.arch == "x86_64"
    assert len(v.signers) == 2 and not v.downgrade
    kinds = {m.kind for m in v.members}
    assert kinds == {"wheel", "model", "unit", "hardening", "lock", "sbom"}
    assert [e.name for e in v.lock] == ["sfdemo", "sfhelper"]
    assert v.models[0].licence == "MIT (test stand-in)"
    assert v.manifest_sha256 == hashlib.sha256(v.manifest_bytes).hexdigest()


def test_version_above_floor_passes_and_allowed_downgrade_is_flagged(factory: Any) -> None:
    bundle = factory.build(version="1.10.0")
    trust = factory.trust
    assert not verify_bundle(bundle, trust, floor_version="1.9.9", now=NOW).downgrade
    with pytest.raises(E.BadVersionNumberError):
        verify_bundle(bundle, trust, floor_version="1.10", now=NOW)
    assert verify_bundle(bundle, trust, floor_version="2.0", allow_downgrade=True,
                         now=NOW).downgrade


def test_expiry_uses_the_given_clock(factory: Any) -> None:
    bundle = factory.build()
    trust = factory.trust
    verify_bundle(bundle, trust, now="2026-12-31T23:59:59Z")
    with pytest.raises(E.ExpiredManifestError) as info:
        verify_bundle(bundle, trust, now="2027-01-01T00:00:00Z")
    assert info.value.evidence["expires"].startswith("2027-01-01")


def test_cli_verify_json_report_and_exit_zero(factory: Any) -> None:
    bundle = factory.build()
    res = CliRunner().invoke(main, ["verify", str(bundle), "--trust",
                                    str(factory.trust_path), "--json", "--now", NOW])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] is True and doc["version"] == "1.2.0" and doc["threshold"] == 2
    assert {s["name"] for s in doc["signers"]} == {"signer0", "signer1"}
    assert len(doc["members"]) == 7


@pytest.mark.parametrize("attack", ["trailing-data", "fewer-than-k-signatures",
                                    "flipped-byte-model", "symlink-member"])
def test_cli_verify_rejection_exit_code_matches_the_documented_table(
        attack: str, factory: Any) -> None:
    spec = next(a for a in F.ATTACKS if a.name == attack)
    bundle = spec.make(factory)
    res = CliRunner().invoke(main, ["verify", str(bundle), "--trust",
                                    str(factory.trust_path), "--json", "--now", NOW])
    assert res.exit_code == spec.error.exit_code
    assert res.exit_code in EXIT_CODES
    doc = json.loads(res.output)
    assert doc["ok"] is False and doc["error"] == spec.error.__name__
    assert doc["evidence"]


def test_every_error_class_has_a_documented_exit_code() -> None:
    classes = [c for c in vars(E).values()
               if isinstance(c, type) and issubclass(c, E.VerificationError)]
    assert len(classes) > 20
    documented = set(EXIT_CODES) | set(E.TRUST_EXIT_CODES) | set(E.KEYGEN_EXIT_CODES)
    for cls in classes:
        assert cls.exit_code in documented, cls
    help_text = CliRunner().invoke(main, ["verify", "--help"]).output
    assert "62  HashMismatchError" in help_text


def test_extract_writes_payload_into_a_new_0700_dir_with_verified_bytes(factory: Any,
                                                                      tmp_path: Path) -> None:
    bundle = factory.build()
    dest = tmp_path / "release"
    v = extract_bundle(bundle, factory.trust, dest, now=NOW)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == sorted(m.relpath for m in v.members)
    for m in v.members:
        assert hashlib.sha256((dest / m.relpath).read_bytes()).hexdigest() == m.sha256


def test_extract_refuses_an_existing_destination_and_leaves_it_alone(factory: Any,
                                                                    tmp_path: Path) -> None:
    bundle = factory.build()
    dest = tmp_path / "release"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(E.ExtractError):
        extract_bundle(bundle, factory.trust, dest, now=NOW)
    assert (dest / "keep").read_text() == "mine"


def test_bundle_swapped_between_verification_and_extraction_leaves_nothing(
        factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file can change between the two passes; the writing pass re-hashes every byte."""
    good = factory.build()
    evil_entries = F.read_entries(good)
    for e in evil_entries:
        if e.name.startswith("payload/wheels/"):
            e.data = e.data[:-1] + bytes([e.data[-1] ^ 1])
    evil = F.write_entries(tmp_path / "evil.bundle", evil_entries)
    real_verify = verify_module.verify_bundle

    def verify_then_swap(path: Path, trust: Trust, **kw: Any) -> VerifiedBundle:
        result = real_verify(path, trust, **kw)
        os.replace(evil, path)  # an attacker swaps the file after the first pass
        return result

    monkeypatch.setattr(verify_module, "verify_bundle", verify_then_swap)
    dest = tmp_path / "release"
    with pytest.raises(E.HashMismatchError):
        verify_module.extract_bundle(good, factory.trust, dest, now=NOW)
    assert not dest.exists()


def test_long_payload_paths_use_pax_and_verify(factory: Any, tmp_path: Path) -> None:
    long_cfg = tmp_path / ("c" * 150 + ".toml")
    long_cfg.write_text("x = 1\n")
    bundle = factory.build(configs=[long_cfg])
    v = verify_bundle(bundle, factory.trust, now=NOW)
    assert any(len(m.path) > 100 and m.kind == "config" for m in v.members)


def _rewrite_bytes(bundle: Path, fn: Callable[[bytearray], object]) -> Path:
    raw = bytearray(bundle.read_bytes())
    fn(raw)
    bundle.write_bytes(bytes(raw))
    return bundle


def test_corrupt_header_checksum_is_an_archive_format_error(factory: Any) -> None:
    bundle = _rewrite_bytes(factory.build(), lambda b: b.__setitem__(
        slice(0, 1), b"M"))
    with pytest.raises(E.ArchiveFormatError) as info:
        verify_bundle(bundle, factory.trust, now=NOW)
    assert info.value.evidence["offset"] == 0


def test_gnu_format_archive_is_refused(factory: Any, tmp_path: Path) -> None:
    entries = F.read_entries(factory.build())
    path = tmp_path / "gnu.bundle"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.size = len(e.data)
            tar.addfile(info, __import__("io").BytesIO(e.data))
    with pytest.raises(E.ArchiveFormatError):
        verify_bundle(path, factory.trust, now=NOW)


def test_extra_zero_blocks_after_the_end_marker_are_fine(factory: Any) -> None:
    bundle = factory.build()
    with open(bundle, "ab") as f:
        f.write(bytes(8192))
    verify_bundle(bundle, factory.trust, now=NOW)


def test_missing_bundle_is_a_read_error_with_exit_2(factory: Any, tmp_path: Path) -> None:
    with pytest.raises(E.BundleReadError):
        verify_bundle(tmp_path / "nope.bundle", factory.trust)
    res = CliRunner().invoke(main, ["verify", str(tmp_path / "nope.bundle"), "--trust",
                                    str(factory.trust_path)])
    assert res.exit_code == 2


IMPORT_CHECK = r"""
import sys
FORBIDDEN = ("numpy", "cv2", "onnxruntime", "onnx", "insightface", "av", "sealfuse.engine",
             "sealfuse.appliance", "sealfuse.bundle")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "cv2", "onnxruntime", "onnx", "insightface", "av"):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import sealfuse.verifier
after_import = sorted(m for m in sys.modules if m.startswith(FORBIDDEN))
from sealfuse.cli import main
try:
    main(["verify", sys.argv[1], "--trust", sys.argv[2], "--now", sys.argv[3]])
except SystemExit as exc:
    code = exc.code
after_verify = sorted(m for m in sys.modules if m.startswith(FORBIDDEN))
print(repr((after_import, after_verify, code, "sigstore" in sys.modules)))
"""


def test_verifier_imports_none_of_the_engine_dependencies(factory: Any) -> None:
    bundle = factory.build()
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(bundle),
                           str(factory.trust_path), NOW],
                          capture_output=True, text=True, timeout=60, check=True)
    after_import, after_verify, code, sigstore_loaded = eval(proc.stdout.strip().splitlines()[-1])
    assert after_import == [] and after_verify == []
    assert code in (0, None)
    assert not sigstore_loaded  # only imported when a trust file asks for sigstore
