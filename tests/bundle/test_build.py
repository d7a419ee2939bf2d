"""bundle build / sign / inspect: reproducibility, archive layout, lock, SBOM, pinned models."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealfuse.bundle.build import build_bundle
from sealfuse.bundle.errors import (
    DuplicateSignatureError,
    LicenceMissingError,
    ModelDigestError,
    WheelError,
)
from sealfuse.bundle.sign import sign_bundle
from sealfuse.cli import main
from sealfuse.verifier import extract_bundle, verify_bundle
from sealfuse.verifier.errors import HashMismatchError
from tests.bundle import factory as F

NOW = F.NOW


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_building_twice_from_the_same_inputs_gives_the_same_sha256(factory: Any) -> None:
    a = build_bundle(factory.inputs(out="a")).path
    b = build_bundle(factory.inputs(out="b")).path
    assert a.name == b.name == "sealfuse-1.2.0-cp311-x86_64.bundle"
    assert _sha(a) == _sha(b)
    # signing is deterministic too (Ed25519), so signed bundles match as well
    for p in (a, b):
        sign_bundle(p, factory.keys[0])
    assert _sha(a) == _sha(b)
    # and a different SOURCE_DATE_EPOCH gives a different bundle
    c = build_bundle(factory.inputs(out="c", source_date_epoch=F.EPOCH + 1)).path
    assert _sha(c) != _sha(build_bundle(factory.inputs(out="d")).path)


def test_source_date_epoch_comes_from_the_environment(factory: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(F.EPOCH))
    inputs = factory.inputs(out="env", source_date_epoch=None)
    result = build_bundle(inputs)
    assert result.manifest.created.timestamp() == F.EPOCH


def test_archive_layout_is_manifest_then_signatures_then_sorted_payload(factory: Any) -> None:
    bundle = factory.build()
    with tarfile.open(bundle, "r:") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "manifest.json"
    sigs = [n for n in names if n.startswith("signatures/")]
    assert names[1:1 + len(sigs)] == sorted(sigs) and len(sigs) == 4
    payload = names[1 + len(sigs):]
    assert payload == sorted(payload) and all(n.startswith("payload/") for n in payload)
    for m in members:
        assert m.isreg() and m.mtime == F.EPOCH and m.uid == m.gid == 0
        assert m.uname == m.gname == "" and m.mode == 0o644
        assert not m.pax_headers
    with tarfile.open(bundle, "r:") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {m["path"] for m in manifest["members"]} == set(payload)


def test_manifest_lists_platform_models_with_licences_and_the_wheel_lock(factory: Any) -> None:
    result = build_bundle(factory.inputs())
    doc = result.manifest.to_json()
    assert doc["platform"] == {"python": "cp311", "arch": "x86_64",
                               "tag": "manylinux_2_17_x86_64"}
    assert doc["models"][0]["licence"] == "MIT (test stand-in)"
    assert [e["name"] for e in doc["lock"]] == ["sfdemo", "sfhelper"]
    assert {m["kind"] for m in doc["members"]} == {"wheel", "model", "unit", "hardening",
                                                   "lock", "sbom"}
    assert doc["expires"] == "2027-01-01T00:00:00Z"


def test_lock_installs_offline_with_pip_require_hashes(factory: Any, tmp_path: Path) -> None:
    bundle = factory.build()
    dest = tmp_path / "release"
    extract_bundle(bundle, factory.trust, dest, now=NOW)
    lock = (dest / "lock.txt").read_text()
    assert "sfdemo==1.0.0 --hash=sha256:" in lock
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "--target", str(target), "-r", str(dest / "lock.txt")]
    if shutil.which("unshare") and os.geteuid() == 0:
        cmd = ["unshare", "--net", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (target / "sfhelper" / "__init__.py").read_text().startswith('VERSION = "0.3.1"')


def test_sbom_is_cyclonedx_with_every_wheel_and_its_sha256(factory: Any, tmp_path: Path) -> None:
    bundle = factory.build()
    dest = tmp_path / "release"
    v = extract_bundle(bundle, factory.trust, dest, now=NOW)
    sbom = json.loads((dest / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    comps = {c["name"]: c for c in sbom["components"]}
    for entry in v.lock:
        assert comps[entry.name]["version"] == entry.version
        assert comps[entry.name]["hashes"] == [{"alg": "SHA-256", "content": entry.sha256}]
        assert comps[entry.name]["purl"].startswith(f"pkg:pypi/{entry.name}@{entry.version}")


def test_missing_units_and_hardening_dirs_are_warned_not_fatal(factory: Any,
                                                               tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = build_bundle(factory.inputs(units_dir=tmp_path / "nope",
                                         hardening_dir=tmp_path / "empty"))
    assert any("nope does not exist" in w for w in result.warnings)
    assert any("empty is empty" in w for w in result.warnings)
    assert {m.kind for m in result.manifest.members}.isdisjoint({"unit", "hardening"})


def test_model_without_a_licence_is_refused(factory: Any, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "mystery.onnx").write_bytes(b"?")
    with pytest.raises(LicenceMissingError) as info:
        build_bundle(factory.inputs(models_dir=models))
    assert info.value.evidence["file"] == "mystery.onnx"
    result = build_bundle(factory.inputs(models_dir=models,
                                         licences={"mystery.onnx": "CC-BY-4.0"}))
    assert result.manifest.models[0].licence == "CC-BY-4.0"


@pytest.mark.parametrize("wheel", ["native-1.0-cp311-cp311-macosx_11_0_arm64.whl",
                                   "old-1.0-cp39-cp39-manylinux_2_17_x86_64.whl"])
def test_wheel_for_another_platform_is_refused(factory: Any, tmp_path: Path,
                                               wheel: str) -> None:
    house = tmp_path / "house"
    shutil.copytree(factory.inputs().wheelhouse, house)
    (house / wheel).write_bytes(b"PK")
    with pytest.raises(WheelError):
        build_bundle(factory.inputs(wheelhouse=house))


def test_lock_never_carries_both_opencv_builds(factory: Any, tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    F.make_wheel(house, "opencv_python", "4.9.0")
    F.make_wheel(house, "opencv_python_headless", "4.9.0")
    with pytest.raises(WheelError) as info:
        build_bundle(factory.inputs(wheelhouse=house))
    assert info.value.evidence["conflict"] == ["opencv-python", "opencv-python-headless"]


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A real HTTP server on 127.0.0.1 serving one model file."""
    root = tmp_path / "www"
    root.mkdir()
    body = b"downloaded stand-in model " * 100
    (root / "gfpgan_1.4.onnx").write_bytes(body)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/gfpgan_1.4.onnx", body
    finally:
        server.shutdown()
        server.server_close()


def test_model_url_with_pinned_digest_is_fetched_and_pinned(
        factory: Any, model_server: tuple[str, bytes]) -> None:
    url, body = model_server
    digest = hashlib.sha256(body).hexdigest()
    result = build_bundle(factory.inputs(model_urls=[f"{url}#sha256={digest}"]))
    entry = next(m for m in result.manifest.models if m.file.endswith("gfpgan_1.4.onnx"))
    assert entry.sha256 == digest and entry.licence == "Apache-2.0"


def test_model_url_with_wrong_digest_is_refused_and_nothing_is_built(
        factory: Any, model_server: tuple[str, bytes]) -> None:
    url, body = model_server
    wrong = hashlib.sha256(body + b"x").hexdigest()
    inputs = factory.inputs(out="wrong", model_urls=[f"{url}#sha256={wrong}"])
    with pytest.raises(ModelDigestError) as info:
        build_bundle(inputs)
    assert info.value.evidence["expected"] == wrong
    assert info.value.evidence["actual"] == hashlib.sha256(body).hexdigest()
    assert not inputs.out_dir.exists() or not any(inputs.out_dir.iterdir())


def test_signing_twice_with_one_key_is_refused_and_changes_nothing(factory: Any) -> None:
    bundle = factory.build(signers=(0,))
    before = _sha(bundle)
    with pytest.raises(DuplicateSignatureError):
        sign_bundle(bundle, factory.keys[0])
    assert _sha(bundle) == before


def test_signer_refuses_a_bundle_whose_payload_does_not_match(factory: Any) -> None:
    spec = next(a for a in F.ATTACKS if a.name == "flipped-byte-model")
    bundle = spec.make(factory)
    before = _sha(bundle)
    with pytest.raises(HashMismatchError):
        sign_bundle(bundle, factory.keys[2])
    assert _sha(bundle) == before


def test_k_holders_sign_in_turn_with_the_cli_then_verify(factory: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "dist"
    house = factory.inputs().wheelhouse
    d = factory.inputs_dir
    res = runner.invoke(main, ["bundle", "build", "--version", "2.0.1", "--out-dir", str(out),
                               "--wheelhouse", str(house), "--models", str(d / "models"),
                               "--units-dir", str(d / "systemd"), "--hardening-dir",
                               str(d / "hardening")], env={"SOURCE_DATE_EPOCH": str(F.EPOCH)})
    assert res.exit_code == 0, res.output
    assert "licence MIT (test stand-in)" in res.output
    bundle = out / "sealfuse-2.0.1-cp311-x86_64.bundle"
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    keys = [factory.key_path(0), factory.key_path(1, passphrase=b"s3cret")]
    assert runner.invoke(main, ["bundle", "sign", str(bundle), "--key", str(keys[0])]).exit_code == 0
    res = runner.invoke(main, ["bundle", "sign", str(bundle), "--key", str(keys[1]),
                               "--passphrase-file", str(pw)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["bundle", "sign", str(bundle), "--key", str(keys[0])])
    assert res.exit_code == DuplicateSignatureError.exit_code
    res = runner.invoke(main, ["bundle", "inspect", str(bundle), "--json", "--trust",
                               str(factory.trust_path)])
    doc = json.loads(res.output)
    assert len(doc["signatures"]["valid_keyids"]) == 2
    assert doc["models"][0]["licence"] == "MIT (test stand-in)"
    res = runner.invoke(main, ["verify", str(bundle), "--trust", str(factory.trust_path),
                               "--now", NOW])
    assert res.exit_code == 0, res.output
    assert verify_bundle(bundle, factory.trust, now=NOW).version == "2.0.1"


def test_requirements_are_fetched_with_pip_download_for_the_target_platform(
        factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real `pip download`, pointed at a local directory instead of an index (no network)."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("sfhelper==0.3.1\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(factory.inputs().wheelhouse))
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    result = build_bundle(factory.inputs(wheelhouse=empty, requirements=[reqs]))
    assert [(e.name, e.version) for e in result.manifest.lock] == [("sfhelper", "0.3.1")]


def test_an_output_that_cannot_be_written_is_a_named_error_not_a_traceback(
        factory: Any, tmp_path: Path) -> None:
    from sealfuse.bundle.errors import OutputWriteError

    bundle = factory.build()
    res = CliRunner().invoke(main, ["bundle", "manifest", str(bundle), "-o",
                                    str(tmp_path / "missing-dir" / "manifest.json")])
    assert res.exit_code == OutputWriteError.exit_code, res.output
    assert "OutputWriteError" in res.output
    res = CliRunner().invoke(main, ["trust", "allowed-signers", str(factory.trust_path), "-o",
                                    str(tmp_path / "missing-dir" / "allowed_signers")])
    from sealfuse.verifier.errors import OutputExistsError

    assert res.exit_code == OutputExistsError.exit_code and "OutputExistsError" in res.output
