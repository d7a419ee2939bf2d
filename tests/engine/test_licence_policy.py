"""The engine refuses to load a model outside the licence policy the installer wrote into models.lock.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealfuse.engine.catalog import ModelSpec
from sealfuse.engine.errors import ModelError, ModelLicenceError
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Models, Pipeline, make_registry
from sealfuse.engine.registry import CATALOG, CODE_PINNED_CLASSES, LOCK_FILE, licence_class_of
from tests.engine import standins

GHOST = ("ghost_1_256", "crossface_ghost")


def _lock(models: Path, policy: str | None, classes: dict[str, str | None]) -> None:
    """Rewrite the stand-ins' lock as the installer would: the policy and each file's class."""
    doc = json.loads((models / LOCK_FILE).read_text())
    for entry in doc["models"]:
        cls = classes.get(entry["name"], "commercial")
        entry.pop("licence_class", None)
        if cls is not None:
            entry["licence_class"] = cls
    if policy is not None:
        doc["licence_policy"] = policy
    (models / LOCK_FILE).write_text(json.dumps(doc))


def _options(models: Path, swapper: str = "ghost_1_256", **kw) -> SwapOptions:
    return SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model=swapper, **kw)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return standins.models_dir(tmp_path / "m", swapper=True, extra=GHOST)


def test_a_commercial_install_swaps_with_ghost_when_every_model_it_needs_is_commercial(models, hanks_png, t1_frame):
    _lock(models, "commercial", {})
    pipe = Pipeline(_options(models), hanks_png)
    assert pipe.registry.licence_policy == "commercial"
    out = pipe.render(t1_frame, pipe.select(pipe.detect(t1_frame), t1_frame))
    assert (out != t1_frame).any()


@pytest.mark.parametrize("refused, cls", [("arcface_w600k_r50", "noncommercial"), ("crossface_ghost", "unknown"),
                                          ("ghost_1_256", "research"), ("ghost_1_256", None)])
def test_each_model_outside_the_commercial_policy_is_refused_by_name(models, hanks_png, refused, cls):
    _lock(models, "commercial", {refused: cls})
    with pytest.raises(ModelLicenceError) as info:
        Pipeline(_options(models), hanks_png)
    err = info.value
    assert err.exit_code == 5 and err.reason == "model_licence_refused"
    assert err.evidence["model"] == refused and err.evidence["licence_class"] == (cls or "unknown")
    assert err.evidence["licence_policy"] == "commercial" and CATALOG[refused].file in err.message
    assert CATALOG[refused].licence in err.message


def test_the_licence_is_checked_before_the_file_is_read(models):
    _lock(models, "commercial", {"inswapper_128": "noncommercial"})
    (models / CATALOG["inswapper_128"].file).unlink()  # neither presence nor pin is looked at first
    registry = make_registry(_options(models))
    with pytest.raises(ModelLicenceError):
        registry.session("inswapper_128")


def test_policy_any_and_a_lock_without_a_policy_load_noncommercial_models(models, hanks_png):
    for policy in ("any", None):
        _lock(models, policy, {"inswapper_128": "noncommercial", "arcface_w600k_r50": "noncommercial"})
        pipe = Pipeline(_options(models, "inswapper_128"), hanks_png)
        assert pipe.registry.licence_policy == "any"


def test_auto_skips_a_swapper_the_policy_refuses(models):
    _lock(models, "commercial", {"inswapper_128": "noncommercial"})
    opts = _options(models, "auto")
    assert Models(opts, make_registry(opts)).swapper_name == "mesh"


def test_an_unknown_policy_in_the_lock_is_a_model_error(models, hanks_png):
    _lock(models, "studio-only", {})
    with pytest.raises(ModelError, match="licence_policy 'studio-only'"):
        Pipeline(_options(models), hanks_png)


def test_models_pinned_in_code_have_the_class_of_their_permissive_licence():
    pinned = [s for s in CATALOG.values() if s.sha256]
    assert pinned, "the starter models are pinned in code"
    for spec in pinned:
        assert licence_class_of(spec, None) == "commercial", spec.name
    assert licence_class_of(ModelSpec("x", "x", "x.onnx", "MIT", (), 1), None) == "unknown"  # no pin in code
    assert licence_class_of(CATALOG["mtcnn_pnet"], {"licence_class": "research"}) == "research"  # the lock wins


def test_engine_licences_agree_with_the_verifier_table():
    """The engine keeps its own strings (it imports nothing of ours); verifier/licences.py is the table."""
    licences = pytest.importorskip("sealfuse.verifier.licences")
    for spec in CATALOG.values():
        known = licences.known(spec.file)
        assert known is not None, f"{spec.file} ({spec.name}) is not in verifier/licences.py"
        assert known.licence == spec.licence, spec.file
        if spec.sha256:
            assert str(known.licence_class) == CODE_PINNED_CLASSES[spec.licence], spec.file


def test_models_list_shows_the_policy_each_class_and_what_it_refuses(models):
    from click.testing import CliRunner

    from sealfuse.cli import main

    _lock(models, "commercial", {"inswapper_128": "noncommercial"})
    res = CliRunner().invoke(main, ["models", "list", "--models-dir", str(models), "--json"])
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["inswapper_128"]["licence_class"] == "noncommercial" and not rows["inswapper_128"]["allowed"]
    assert rows["ghost_1_256"]["allowed"] and rows["ghost_1_256"]["licence"] == "Apache-2.0"
    text = CliRunner().invoke(main, ["models", "list", "--models-dir", str(models)]).output
    assert text.startswith("licence policy: commercial")
    assert any(ln.startswith("inswapper_128 ") and "refused" in ln for ln in text.splitlines())
