"""The console's region mask: the regions the engine offers, checked server-side, carried into the
manifest and through a real watch daemon."""

from __future__ import annotations

import json
from pathlib import Path

from tests.console.consolelib import ConsoleEnv, multipart
from tests.console.test_api import read_events
from tests.watch.watchlib import WatchEnv, png_variant


def _post(env: ConsoleEnv, token: str, fields: list[tuple[str, str]], files: list) -> object:
    body, ctype = multipart(fields + files)
    return env.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype}, token=token)


def test_region_mask_fields_reach_the_daemon_and_bad_regions_are_refused(
        watch_env: WatchEnv, console_env: ConsoleEnv, tmp_path: Path, hanks_png: Path) -> None:
    env = console_env
    token = env.login("alice")
    avail = json.loads(env.request("GET", "/api/v1/options", token=token).body)["available"]
    assert "region" in avail["face_mask_types"]
    # no face parser here: the FaceMesh region mask, which does not see glasses
    assert avail["face_mask_regions"] == ["skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye",
                                          "nose", "mouth", "upper-lip", "lower-lip"]

    def files(i: int) -> list:
        return [("source", ("hanks.png", hanks_png.read_bytes(), "image/png")),
                ("target", ("t.png", png_variant(hanks_png, tmp_path / f"t{i}.png", i).read_bytes(), "image/png"))]

    before = env.inbox_entries()
    for i, (regions, words) in enumerate([(["nose", "forehead"], "forehead"), (["glasses"], "glasses"),
                                          ([], "face_mask_regions")], start=1):
        r = _post(env, token, [("face_mask_types", "region"), ("face_mask_regions", ""),
                               *[("face_mask_regions", x) for x in regions]], files(i))
        assert r.status == 422 and r.json()["reason"] == "bad_options", r.text
        assert words in r.text, r.text
    r = _post(env, token, [("options", json.dumps({"face_mask_regions": ["nose", "nose"]}))], files(4))
    assert r.status == 422 and r.json()["reason"] == "bad_options", r.text
    assert env.inbox_entries() == before  # refused submissions store nothing

    # the form's fields (marker, two ticked regions) become the manifest's options
    r = _post(env, token, [("face_mask_types", "region"), ("face_mask_regions", ""),
                           ("face_mask_regions", "nose"), ("face_mask_regions", "mouth")], files(5))
    assert r.status == 201, r.text
    ref = r.json()["ref"]
    manifest = json.loads((env.spool / "inbox" / f"{ref}.job.json").read_text())
    assert manifest["options"] == {"face_mask_types": ["region"], "face_mask_regions": ["nose", "mouth"]}
    # regions without the region mask are not passed on
    r = _post(env, token, [("face_mask_types", "box"), ("face_mask_regions", ""),
                           ("face_mask_regions", "nose")], files(6))
    assert r.status == 201, r.text
    box_ref = r.json()["ref"]
    assert json.loads((env.spool / "inbox" / f"{box_ref}.job.json").read_text())["options"] == {
        "face_mask_types": ["box"]}

    watch_env.start()
    events = read_events(env, f"/api/v1/jobs/{ref}/events", token)
    assert [e["state"] for name, e in events if name == "job"][-1] == "done", events
    final = json.loads(env.request("GET", f"/api/v1/jobs/{ref}", token=token).body)
    (result,) = [json.loads(p.read_text()) for p in (env.spool / "outbox").glob("*/result.json")
                 if json.loads(p.read_text())["job_id"] == final["job_id"]]
    assert result["options"] == manifest["options"]
