"""Face maps in job manifests and presets reach the engine's options (the images claimed with the job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealfuse.appliance.sdnotify import Notifier
from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.config import Preset, WatchConfig, WatchConfigError, load_config
from sealfuse.appliance.watch.daemon import Daemon, Paths
from sealfuse.appliance.watch.worker import to_options_kwargs
from sealfuse.engine.options import SwapOptions
from tests.watch.fakes import CopyDispatcher
from tests.watch.watchlib import png_variant


def _daemon(tmp_path: Path, cfg: WatchConfig) -> tuple[Daemon, CopyDispatcher]:
    paths = Paths(tmp_path / "spool", tmp_path / "state", tmp_path / "state" / "audit.jsonl",
                  tmp_path / "state" / "m.prom", tmp_path / "run")
    (tmp_path / "run").mkdir(exist_ok=True)
    fake = CopyDispatcher()
    return Daemon(paths, cfg, once=True, notifier=Notifier({}), dispatcher=fake), fake


def test_a_manifest_face_map_is_claimed_with_the_job_and_passed_as_options(tmp_path, hanks_png):
    inbox = tmp_path / "spool" / "inbox"
    inbox.mkdir(parents=True)
    for i, name in enumerate(("s.png", "t.png", "ref_a.png", "actor_a.png", "ref_b.png", "actor_b.png")):
        png_variant(hanks_png, inbox / name, i + 1)
    (inbox / "m.job.json").write_text(json.dumps({
        "version": 1, "source": "s.png", "target": "t.png",
        "face_map": [{"reference": "ref_a.png", "source": "actor_a.png"},
                     {"reference": "ref_b.png", "source": "actor_b.png"}]}))
    daemon, fake = _daemon(tmp_path, WatchConfig(stable_seconds=0.1, scan_interval=0.1))
    assert daemon.run() == errors.EXIT_OK and len(fake.submitted) == 1
    pairs = fake.submitted[0].options["face_map"]
    assert [[Path(r).name, Path(s).name] for r, s in pairs] == [["ref_a.png", "actor_a.png"],
                                                                ["ref_b.png", "actor_b.png"]]
    assert all(Path(p).parent.name == "in" and "work" in Path(p).parts for pair in pairs for p in pair)
    assert not any(inbox.glob("*.png")), "every named image was claimed with the job"
    opts = SwapOptions(**to_options_kwargs({"face_map": pairs}))
    assert opts.face_map == tuple((Path(r), Path(s)) for r, s in pairs)


def test_a_face_map_entry_that_is_not_an_image_rejects_the_drop(tmp_path, hanks_png):
    inbox = tmp_path / "spool" / "inbox"
    inbox.mkdir(parents=True)
    for i, name in enumerate(("s.png", "t.png", "ref.png")):
        png_variant(hanks_png, inbox / name, i + 1)
    (inbox / "actor.mp4").write_bytes(b"not an image")
    (inbox / "m.job.json").write_text(json.dumps({
        "version": 1, "source": "s.png", "target": "t.png",
        "face_map": [{"reference": "ref.png", "source": "actor.mp4"}]}))
    daemon, fake = _daemon(tmp_path, WatchConfig(stable_seconds=0.1, scan_interval=0.1))
    daemon.run()
    assert fake.submitted == []
    (err_file,) = (tmp_path / "spool" / "failed").glob("*/error.json")
    assert json.loads(err_file.read_text())["reason"] == "unsupported_extension"


def test_a_preset_face_map_becomes_a_job_option(tmp_path):
    cfg = tmp_path / "watch.toml"
    cfg.write_text('[presets.two]\nsource = "/faces/a.png"\n'
                   'face_map = [{reference = "/refs/a.png", source = "/faces/a.png"},'
                   ' {reference = "/refs/b.png", source = "/faces/b.png"}]\n')
    preset = load_config(cfg).presets["two"]
    assert isinstance(preset, Preset)
    assert preset.options["face_map"] == [["/refs/a.png", "/faces/a.png"], ["/refs/b.png", "/faces/b.png"]]
    cfg.write_text('[presets.two]\nsource = "/faces/a.png"\nface_map = [{reference = "refs/a.png", source = "/b.png"}]\n')
    with pytest.raises(WatchConfigError, match="face_map paths must be absolute"):
        load_config(cfg)


def test_a_job_may_set_codeformers_fidelity_weight_within_0_and_1():
    from sealfuse.appliance.watch.config import JOB_OPTIONS_SCHEMA, validate

    assert validate({"face_enhancer_weight": 0.7}, JOB_OPTIONS_SCHEMA) == []
    assert validate({"face_enhancer_weight": 1.5}, JOB_OPTIONS_SCHEMA)
    assert SwapOptions(**to_options_kwargs({"face_enhancer_weight": 0.7})).face_enhancer_weight == 0.7
