"""Licence grants: `bundle build --licence-grant FILE=REFERENCE` records that the studio holds a
commercial licence for a model file; the signed manifest keeps the model's own licence and adds the
grant, verify/inspect/status show it, the installer's lock makes the engine run it under the
commercial policy. The end-to-end tests build a real bundle of stand-in ONNX models (GHOST, its
converter, the ArcFace recognizer) plus the real starter detector and swap a real photo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from sealfuse.bundle.errors import LicenceGrantError, LicencePolicyError
from sealfuse.cli import main
from sealfuse.verifier import errors as E
from sealfuse.verifier import extract_bundle, verify_bundle
from sealfuse.verifier.keys import keyid_of
from sealfuse.verifier.licences import KNOWN_MODELS, MAX_GRANT_CHARS, LicencePolicy
from sealfuse.verifier.model import canonical
from tests.bundle import factory as F

NOW = F.NOW
GRANT = "insightface commercial licence IF-2026-0042"
CONVERTER_GRANT = "ai-forever written permission AF-17"
GHOST_FILES = ["ghost_1_256.onnx", "crossface_ghost.onnx", "w600k_r50.onnx"]
GHOST_NAMES = {"ghost_1_256.onnx": "ghost_1_256", "crossface_ghost.onnx": "crossface_ghost",
               "w600k_r50.onnx": "arcface_w600k_r50"}


def _models(tmp_path: Path, files: list[str], catalog: list[dict[str, str]] | None = None,
            standin: bool = False) -> Path:
    """A models directory: stand-in ONNX models computing something checkable (standin=True, with
    the real starter detector) or stand-in bytes (the builder never loads a model)."""
    d = tmp_path / "models"
    d.mkdir()
    if standin:
        from tests.engine import standins
        from tests.starter_models import add_starter

        add_starter(d)
        for file in files:
            standins.standin_for(GHOST_NAMES[file])(d / file)
    else:
        for file in files:
            (d / file).write_bytes(f"stand-in bytes for {file}\n".encode())
    if catalog is not None:
        (d / "catalog.json").write_text(json.dumps({"models": catalog}))
    return d


def _build_cli(factory: Any, models: Path, *extra: str) -> Any:
    args = ["bundle", "build", "--version", "1.2.0", "--out-dir", str(factory.root / "cli-out"),
            "--wheelhouse", str(factory.inputs_dir / "wheels"), "--models", str(models),
            "--units-dir", str(factory.inputs_dir / "systemd"),
            "--hardening-dir", str(factory.inputs_dir / "hardening"), *extra]
    return CliRunner().invoke(main, args, env={"SOURCE_DATE_EPOCH": str(F.EPOCH)})


def _nothing_built(factory: Any) -> bool:
    out = factory.root / "cli-out"
    return not out.exists() or not list(out.iterdir())


def _sign(factory: Any, bundle: Path) -> Path:
    from sealfuse.bundle.sign import sign_bundle

    for key in factory.keys[:2]:
        sign_bundle(bundle, key)
    return bundle


def test_without_a_grant_the_commercial_policy_refuses_the_recognizer_naming_file_and_licence(
        factory: Any, tmp_path: Path) -> None:
    models = _models(tmp_path, ["ghost_1_256.onnx", "w600k_r50.onnx"])
    res = _build_cli(factory, models, "--licence-policy", "commercial", "--json")
    assert res.exit_code == LicencePolicyError.exit_code, res.output
    doc = json.loads(res.output)
    assert doc["evidence"]["refused"] == [{"file": "w600k_r50.onnx",
                                           "licence": KNOWN_MODELS["w600k_r50.onnx"].licence,
                                           "licence_class": "noncommercial"}]
    assert "w600k_r50.onnx" in doc["message"] and "--licence-grant" in doc["message"]
    assert _nothing_built(factory)


def test_a_grant_builds_a_commercial_ghost_bundle_and_is_signed_shown_and_kept(
        factory: Any, tmp_path: Path) -> None:
    models = _models(tmp_path, GHOST_FILES)
    res = _build_cli(factory, models, "--licence-policy", "commercial",
                     "--licence-grant", f"w600k_r50.onnx={GRANT}",
                     "--licence-grant", f"crossface_ghost.onnx={CONVERTER_GRANT}")
    assert res.exit_code == 0, res.output
    assert f"[noncommercial; commercial by grant {GRANT}]" in res.output
    assert f"[unknown; commercial by grant {CONVERTER_GRANT}]" in res.output
    assert "ghost_1_256.onnx): licence Apache-2.0 [commercial]" in res.output
    bundle = _sign(factory, next((factory.root / "cli-out").glob("*.bundle")))

    vb = verify_bundle(bundle, factory.trust, now=NOW)
    assert vb.manifest.licence_policy == "commercial"
    by_file = {Path(m.file).name: m for m in vb.models}
    recognizer = by_file["w600k_r50.onnx"]
    # The model's own licence and class stay; the grant is added and counts as commercial.
    assert recognizer.licence == KNOWN_MODELS["w600k_r50.onnx"].licence
    assert (recognizer.licence_class, recognizer.licence_grant, recognizer.policy_class) == (
        "noncommercial", GRANT, "commercial")
    assert (by_file["crossface_ghost.onnx"].licence_class,
            by_file["crossface_ghost.onnx"].licence_grant) == ("unknown", CONVERTER_GRANT)
    assert by_file["ghost_1_256.onnx"].licence_grant is None
    signed = json.loads(vb.manifest_bytes)  # the signed bytes themselves carry the grant
    assert {m["file"]: m.get("licence_grant") for m in signed["models"]} == {
        "payload/models/ghost_1_256.onnx": None,
        "payload/models/crossface_ghost.onnx": CONVERTER_GRANT,
        "payload/models/w600k_r50.onnx": GRANT}

    runner = CliRunner()
    verify = ["verify", str(bundle), "--trust", str(factory.trust_path), "--now", NOW]
    doc = json.loads(runner.invoke(main, [*verify, "--json"]).output)
    shown = {m["file"].rsplit("/", 1)[-1]: m for m in doc["models"]}
    assert shown["w600k_r50.onnx"]["licence_grant"] == GRANT
    assert shown["w600k_r50.onnx"]["licence_class"] == "noncommercial"
    assert {m["policy_class"] for m in doc["models"]} == {"commercial"}
    text = runner.invoke(main, verify).output
    assert f"arcface_w600k_r50 (noncommercial; commercial by grant {GRANT})" in text
    inspected = json.loads(runner.invoke(main, ["bundle", "inspect", str(bundle), "--json"]).output)
    assert {m["name"]: m.get("licence_grant") for m in inspected["models"]}["arcface_w600k_r50"] \
        == GRANT
    text = runner.invoke(main, ["bundle", "inspect", str(bundle)]).output
    assert f"arcface_w600k_r50: {KNOWN_MODELS['w600k_r50.onnx'].licence} " \
           f"[noncommercial; commercial by grant {GRANT}]" in text


def test_a_bundle_without_grants_has_no_grant_field(factory: Any) -> None:
    manifest = json.loads(F.read_entries(factory.build())[0].data)
    assert manifest["models"] and all("licence_grant" not in m for m in manifest["models"])


@pytest.mark.parametrize("grant, what", [
    ("elsewhere.onnx=contract 7", "no model file elsewhere.onnx in this bundle"),
    ("w600k_r50.onnx=", "must not be empty"),
    ("w600k_r50.onnx=   ", "must not be empty"),
    ("w600k_r50.onnx=line one\nline two", "printable"),
    (f"w600k_r50.onnx={'x' * (MAX_GRANT_CHARS + 1)}", f"at most {MAX_GRANT_CHARS} characters"),
])
def test_a_bad_grant_is_refused_by_name_and_nothing_is_built(
        grant: str, what: str, factory: Any, tmp_path: Path) -> None:
    models = _models(tmp_path, ["ghost_1_256.onnx", "w600k_r50.onnx"])
    res = _build_cli(factory, models, "--licence-grant", grant, "--json")
    assert res.exit_code == LicenceGrantError.exit_code == 88, res.output
    doc = json.loads(res.output)
    assert doc["reason"] == "licence_grant" and what in doc["message"]
    assert grant.partition("=")[0] in doc["message"]
    assert _nothing_built(factory)


def test_a_grant_without_a_file_or_given_twice_is_a_usage_error(factory: Any,
                                                              tmp_path: Path) -> None:
    models = _models(tmp_path, ["w600k_r50.onnx"])
    for args in (["--licence-grant", "no-equals-sign"],
                 ["--licence-grant", "w600k_r50.onnx=a", "--licence-grant", "w600k_r50.onnx=b"]):
        res = _build_cli(factory, models, *args)
        assert res.exit_code == 2 and "--licence-grant" in res.output, res.output
    assert _nothing_built(factory)
    assert "FILE=REFERENCE" in CliRunner().invoke(main, ["bundle", "build", "--help"]).output


def _resign(factory: Any, bundle: Path, edit: Any) -> Path:
    entries = [e for e in F.read_entries(bundle) if not e.name.startswith("signatures/")]
    data = json.loads(entries[0].data)
    edit(data)
    manifest = canonical(data)
    sigs = [F.Entry(f"signatures/{keyid_of(k.public_key())}.sig", k.sign(manifest))
            for k in factory.keys[:2]]
    return factory.variant("resigned", [F.Entry("manifest.json", manifest), *sigs, *entries[1:]])


def _recognizer(data: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in data["models"] if m["file"].endswith("w600k_r50.onnx"))


def test_a_signed_manifest_with_a_broken_or_missing_grant_is_refused(factory: Any,
                                                                     tmp_path: Path) -> None:
    models = _models(tmp_path, ["w600k_r50.onnx"])
    bundle = factory.build(models_dir=models, licence_policy=LicencePolicy.COMMERCIAL,
                           licence_grants={"w600k_r50.onnx": GRANT})
    empty = _resign(factory, bundle, lambda d: _recognizer(d).__setitem__("licence_grant", ""))
    with pytest.raises(E.ManifestError) as info:
        verify_bundle(empty, factory.trust, now=NOW)
    assert info.value.evidence["field"] == "licence_grant"
    dropped = _resign(factory, bundle, lambda d: _recognizer(d).pop("licence_grant"))
    with pytest.raises(E.LicencePolicyViolationError) as policy:
        verify_bundle(dropped, factory.trust, now=NOW)
    assert policy.value.evidence["path"].endswith("w600k_r50.onnx")


# -- end to end: the installer's lock, the engine's policy ---------------------------------------
def _engine(models: Path, hanks_png: Path) -> Any:
    from sealfuse.engine.options import SwapOptions
    from sealfuse.engine.pipeline import Pipeline

    return Pipeline(SwapOptions(models_dir=models, execution_providers=("cpu",),
                                execution_threads=2, face_swapper_model="ghost_1_256"), hanks_png)


def _assert_ghost_swapped(pipe: Any, frame: np.ndarray) -> None:
    """The GHOST stand-in inverts the aligned crop and adds an offset from the converted source:
    inside the pasted face the output is 255 - frame + that offset."""
    from tests.engine.standins import SOURCE_GAIN

    assert pipe.registry.licence_policy == "commercial"
    assert pipe.models.swapper().family == "ghost"
    faces = pipe.select(pipe.detect(frame), frame)
    assert faces
    out, union = pipe.render_with_mask(frame, faces)
    core = union > 0.999
    assert core.sum() > len(faces) * 200
    vector = np.asarray(pipe.models.identity(pipe.source)).reshape(-1)
    expected = 255.0 - frame.astype(np.float32) + (127.5 * SOURCE_GAIN * vector[:3])[::-1]
    ok = core[..., None] & (expected > 8) & (expected < 247)
    assert np.abs(out.astype(np.float32) - expected)[ok].mean() < 12.0
    assert np.array_equal(out[union <= 0], frame[union <= 0])


def _install_models(factory: Any, bundle: Path, dest: Path) -> Path:
    """The bundle's verified models and the models.lock.json the installer writes for them."""
    from sealfuse.appliance.staging import model_lock_entries
    from sealfuse.engine.registry import write_lock

    vb = extract_bundle(bundle, factory.trust, dest, now=NOW)
    models = dest / "models"
    write_lock(models, model_lock_entries(vb), licence_policy=vb.manifest.licence_policy)
    return models


def _t1(t1_jpg: Path) -> np.ndarray:
    from sealfuse.engine.imageio import read_image
    from sealfuse.engine.options import SwapOptions

    return read_image(t1_jpg, max_pixels=SwapOptions().max_pixels)


def test_a_granted_recognizer_runs_under_the_installed_commercial_policy(
        factory: Any, tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> None:
    """Grant for the recognizer; the converter (unknown to sealfuse's table) gets its class from
    the operator's catalog.json. The engine swaps with GHOST under the commercial lock."""
    models = _models(tmp_path, GHOST_FILES, standin=True, catalog=[
        {"file": "crossface_ghost.onnx", "licence": "Apache-2.0 (ai-forever, per vendor)",
         "licence_class": "commercial"}])
    bundle = factory.build(models_dir=models, licence_policy=LicencePolicy.COMMERCIAL,
                           licence_grants={"w600k_r50.onnx": GRANT})
    installed = _install_models(factory, bundle, tmp_path / "release")
    lock = json.loads((installed / "models.lock.json").read_text())
    assert lock["licence_policy"] == "commercial"
    entry = next(e for e in lock["models"] if e["file"] == "w600k_r50.onnx")
    assert (entry["licence_class"], entry["licence_grant"], entry["licence_own_class"]) == (
        "commercial", GRANT, "noncommercial")
    assert next(e for e in lock["models"]
                if e["file"] == "crossface_ghost.onnx")["licence_class"] == "commercial"
    _assert_ghost_swapped(_engine(installed, hanks_png), _t1(t1_jpg))

    listed = CliRunner().invoke(main, ["models", "list", "--models-dir", str(installed), "--json"])
    rows = {r["name"]: r for r in json.loads(listed.output)}
    assert rows["arcface_w600k_r50"]["licence_grant"] == GRANT and rows["arcface_w600k_r50"]["allowed"]
    assert not rows["inswapper_128"]["allowed"]
    text = CliRunner().invoke(main, ["models", "list", "--models-dir", str(installed)]).output
    assert f"(commercial by grant {GRANT})" in text


def test_without_the_grant_the_engine_still_refuses_the_recognizer(
        factory: Any, tmp_path: Path, hanks_png: Path) -> None:
    """The same models installed from a policy-`any` bundle into a commercial lock (as a lock
    edited by hand would be): the recognizer without a grant is refused by the engine."""
    from sealfuse.engine.errors import ModelLicenceError

    models = _models(tmp_path, GHOST_FILES, standin=True, catalog=[
        {"file": "crossface_ghost.onnx", "licence": "Apache-2.0", "licence_class": "commercial"}])
    installed = _install_models(factory, factory.build(models_dir=models), tmp_path / "release")
    doc = json.loads((installed / "models.lock.json").read_text())
    doc["licence_policy"] = "commercial"
    (installed / "models.lock.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLicenceError) as info:
        _engine(installed, hanks_png)
    assert info.value.evidence["model"] == "arcface_w600k_r50"
    assert info.value.evidence["licence_class"] == "noncommercial"


@pytest.mark.slow
def test_install_root_writes_the_granted_class_and_status_shows_the_grant(
        factory: Any, tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> None:
    """The real installer (`install --root`): lock, status, and the engine on the installed
    release's models."""
    from tests.system.wheelhouse import build_sealfuse_wheel

    build_sealfuse_wheel(factory.inputs_dir / "wheels")
    repo = Path(__file__).resolve().parents[2]
    models = _models(tmp_path, GHOST_FILES, standin=True)
    bundle = factory.build(version="3.0.0", models_dir=models, units_dir=repo / "systemd",
                           hardening_dir=repo / "hardening", expires_days=3650,
                           licence_policy=LicencePolicy.COMMERCIAL,
                           licence_grants={"w600k_r50.onnx": GRANT,
                                           "crossface_ghost.onnx": CONVERTER_GRANT})
    root = F.make_install_root(tmp_path / "root")
    runner = CliRunner()
    res = runner.invoke(main, ["install", str(bundle), "--root", str(root), "--trust",
                               str(factory.trust_path), "--no-start", "--python", sys.executable,
                               "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    installed = root / "opt/sealfuse/current/models"
    lock = json.loads((installed / "models.lock.json").read_text())
    assert {e["file"]: (e["licence_class"], e.get("licence_grant")) for e in lock["models"]
            if e["file"] in GHOST_FILES} == {
        "ghost_1_256.onnx": ("commercial", None),
        "crossface_ghost.onnx": ("commercial", CONVERTER_GRANT),
        "w600k_r50.onnx": ("commercial", GRANT)}
    audit = [json.loads(line) for line in
             (root / "var/lib/sealfuse/audit/audit.jsonl").read_text().splitlines()]
    installed_event = next(e for e in audit if e["event"] == "install")
    assert installed_event["licence_grants"] == {"w600k_r50.onnx": GRANT,
                                                 "crossface_ghost.onnx": CONVERTER_GRANT}
    assert installed_event["licence_policy"] == "commercial"
    doc = json.loads(runner.invoke(main, ["status", "--root", str(root), "--json"]).output)
    assert {m["name"]: m["licence_grant"] for m in doc["models"]}["arcface_w600k_r50"] == GRANT
    text = runner.invoke(main, ["status", "--root", str(root)]).output
    assert f"arcface_w600k_r50 (noncommercial; commercial by grant {GRANT})" in text
    _assert_ghost_swapped(_engine(installed, hanks_png), _t1(t1_jpg))
