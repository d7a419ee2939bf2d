"""Region-mask names and the source face position reach the engine from manifests and presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.watch.watchlib import WatchEnv, png_variant


def _changed_pixels(target: Path, output: Path) -> int:
    with Image.open(target) as a, Image.open(output) as b:
        diff = np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16))
    return int((diff.max(axis=2) > 8).sum())


def test_region_names_and_source_face_position_reach_the_engine(watch_env: WatchEnv) -> None:
    env = watch_env
    env.write_config(extra="\n".join([
        "[presets.pos]", f'source = "{env.hanks}"', "[presets.pos.options]", "source_face_position = 1",
        "[presets.first]", f'source = "{env.hanks}"', "[presets.first.options]", "source_face_position = 0"]))
    for name in ("pos", "first"):
        (env.inbox / name).mkdir()
    targets = {name: png_variant(env.hanks, env.inbox / f"{name}.png", i).read_bytes()
               for i, name in enumerate(("box", "nose", "bad"), start=2)}
    jobs = {"box": {}, "nose": {"face_mask_types": ["region"], "face_mask_regions": ["nose"]},
            "bad": {"face_mask_types": ["region"], "face_mask_regions": ["nose", "forehead"]}}
    for i, (name, options) in enumerate(jobs.items(), start=5):  # a manifest claims its source
        png_variant(env.hanks, env.inbox / f"src-{name}.png", i)
        (env.inbox / f"{name}.job.json").write_text(json.dumps(
            {"version": 1, "source": f"src-{name}.png", "target": f"{name}.png", "options": options}))
    png_variant(env.hanks, env.inbox / "pos" / "p.png", 11)
    png_variant(env.hanks, env.inbox / "first" / "f.png", 12)
    proc = env.run_once()
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    done, failed = env.done(), env.failed()
    assert set(done) == {"inbox/src-box.png", "inbox/src-nose.png", "inbox/box.png", "inbox/nose.png",
                         "inbox/box.job.json", "inbox/nose.job.json", "inbox/first/f.png"}
    # the bad name is refused by the manifest schema, naming the field, and nothing ran
    bad = failed["inbox/bad.job.json"]
    assert bad["reason"] == "schema_violation" and "forehead" in json.dumps(bad)
    # a nose-only region mask changes far fewer pixels than the box mask of the same swap
    changed = {}
    for name in ("box", "nose"):
        res = done[f"inbox/{name}.job.json"]
        assert res["options"] == jobs[name]
        (env.spool / "in.png").write_bytes(targets[name])
        changed[name] = _changed_pixels(env.spool / "in.png", env.spool / "outbox" / res["job_id"] / f"{name}.png")
    assert 0 < changed["nose"] < changed["box"] // 3, changed
    # the preset's source_face_position: 0 picks the one face, 1 finds no second face in the source
    assert done["inbox/first/f.png"]["options"] == {"source_face_position": 0}
    pos = failed["inbox/pos/p.png"]
    assert pos["reason"] == "no_face_in_source", pos
    assert "1" in pos["message"]
