"""Region-mask names and the source face position reach the engine from manifests and presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.watch.watchlib import WatchEnv, png_variant


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.int16)


def _changed(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a - b).max(axis=2) > 8).sum())


def test_region_names_and_source_face_position_reach_the_engine(watch_env: WatchEnv, t1_jpg: Path) -> None:
    env = watch_env
    # t1.jpg has six faces (positions 0-5 from the left)
    presets = {"left": 0, "right": 5, "past": 6}
    env.write_config(extra="\n".join(
        line for name, pos in presets.items()
        for line in (f"[presets.{name}]", f'source = "{t1_jpg}"', f"[presets.{name}.options]",
                     f"source_face_position = {pos}")))
    targets = {}
    for i, name in enumerate(presets, start=1):
        (env.inbox / name).mkdir()
        targets[name] = _pixels(png_variant(env.hanks, env.inbox / name / f"{name}.png", i))
    jobs = {"box": {"source_face_position": 5},
            "nose": {"source_face_position": 5, "face_mask_types": ["region"], "face_mask_regions": ["nose"]},
            "bad": {"face_mask_types": ["region"], "face_mask_regions": ["nose", "forehead"]}}
    for i, (name, options) in enumerate(jobs.items(), start=5):  # a manifest claims its own source
        png_variant(t1_jpg, env.inbox / f"src-{name}.png", i)
        targets[name] = _pixels(png_variant(env.hanks, env.inbox / f"{name}.png", i + 10))
        (env.inbox / f"{name}.job.json").write_text(json.dumps(
            {"version": 1, "source": f"src-{name}.png", "target": f"{name}.png", "options": options}))
    proc = env.run_once()
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    done, failed = env.done(), env.failed()
    assert set(done) == {"inbox/src-box.png", "inbox/src-nose.png", "inbox/box.png", "inbox/nose.png",
                         "inbox/box.job.json", "inbox/nose.job.json", "inbox/left/left.png",
                         "inbox/right/right.png"}
    # a bad region name is refused by the manifest schema, naming the value, and nothing ran
    bad = failed["inbox/bad.job.json"]
    assert bad["reason"] == "schema_violation" and "forehead" in json.dumps(bad)
    # a position past the source's faces is the engine's refusal
    assert failed["inbox/past/past.png"]["reason"] == "no_face_in_source"

    out = {}
    for name, drop in [("box", "box.job.json"), ("nose", "nose.job.json"),
                       ("left", "left/left.png"), ("right", "right/right.png")]:
        res = done[f"inbox/{drop}"]
        assert res["options"] == jobs.get(name, {"source_face_position": presets.get(name)})
        out[name] = _pixels(env.spool / "outbox" / res["job_id"] / f"{name}.png")
    changed = {name: _changed(targets[name], out[name]) for name in out}
    # a nose-only region mask changes far fewer pixels than the box mask of the same swap
    assert 0 < changed["nose"] < changed["box"] // 2, changed
    # the leftmost and the rightmost source faces give different results on the same target
    assert _changed(out["left"], out["right"]) > 100, changed
