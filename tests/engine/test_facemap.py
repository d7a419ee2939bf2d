"""Several source images averaged into one identity, and face mapping on real photos (t1.jpg)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.engine.api import Engine
from sealfuse.engine.errors import ConfigError, ModelMissingError, NoReferenceMatchError
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Pipeline
from tests.engine import standins
from tests.engine.standins import GHOST_CONVERTER, SOURCE_GAIN


@pytest.fixture(scope="module")
def ghost_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standins.models_dir(tmp_path_factory.mktemp("ghost"), swapper=False,
                               extra=("ghost_1_256", "crossface_ghost"))


def _options(models: Path, **kw) -> SwapOptions:
    return SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model="ghost_1_256", **kw)


def _offset(vector: np.ndarray) -> np.ndarray:
    """The BGR pixel offset the GHOST stand-in adds for a source vector (un-normalised by 0.5)."""
    return (127.5 * SOURCE_GAIN * np.asarray(vector).reshape(-1)[:3])[::-1]


@pytest.fixture(scope="module")
def t1_crops(t1_frame: np.ndarray, tmp_path_factory: pytest.TempPathFactory, ghost_models: Path,
             hanks_png: Path) -> tuple[list, list[Path]]:
    """t1.jpg's six faces left to right, and a padded crop of each written as its own image."""
    pipe = Pipeline(_options(ghost_models), hanks_png)
    faces = sorted(pipe.detect(t1_frame), key=lambda f: float(f.bbox[0]))
    out = tmp_path_factory.mktemp("crops")
    paths = []
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = f.bbox.astype(int)
        pad = int((x2 - x1) * 0.6)
        path = out / f"face{i}.png"
        cv2.imwrite(str(path), t1_frame[max(y1 - pad, 0):y2 + pad, max(x1 - pad, 0):x2 + pad])
        paths.append(path)
    return faces, paths


def test_several_sources_are_averaged_into_one_identity_with_a_consistency_report(
        ghost_models, hanks_png, t1_crops, tmp_path):
    _, crops = t1_crops
    resized = tmp_path / "hanks_small.png"
    img = cv2.imread(str(hanks_png))
    cv2.imwrite(str(resized), cv2.resize(img, (img.shape[1] * 3 // 4, img.shape[0] * 3 // 4)))
    opts = _options(ghost_models)
    one = [Pipeline(opts, p).source.face for p in (hanks_png, resized)]
    both = Pipeline(opts, [hanks_png, resized])
    mean = (one[0].embedding + one[1].embedding) / 2
    assert np.allclose(both.source.embedding, mean, atol=1e-5)
    identity = np.asarray(both.models.identity(both.source)).reshape(-1)
    assert np.allclose(identity, GHOST_CONVERTER @ mean, atol=1e-4)  # the converter sees the average
    same = both.describe()["sources"]
    cos = float(np.dot(one[0].normed_embedding, one[1].normed_embedding))
    assert same["images"] == 2 and same["min_cosine"] == pytest.approx(cos, abs=1e-4)
    assert len(same["pairwise_cosine"]) == 2 and same["pairwise_cosine"][0][0] == pytest.approx(1.0, abs=1e-4)
    mixed = Pipeline(opts, [hanks_png, crops[4]]).describe()["sources"]
    assert mixed["min_cosine"] < same["min_cosine"], (mixed, same)


def test_swap_cli_takes_several_sources_and_reports_them(ghost_models, hanks_png, t1_jpg, t1_crops, tmp_path):
    _, crops = t1_crops
    res = CliRunner().invoke(main, ["swap", "-s", str(hanks_png), "-s", str(crops[2]), "-t", str(t1_jpg),
                                    "-o", str(tmp_path / "o.jpg"), "--models-dir", str(ghost_models),
                                    "--face-swapper-model", "ghost_1_256", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["source"] == [str(hanks_png), str(crops[2])]
    assert report["sources"]["images"] == 2 and -1.0 <= report["sources"]["min_cosine"] <= 1.0


def test_two_people_in_t1_get_two_different_sources_and_the_rest_stay_untouched(
        ghost_models, hanks_png, t1_frame, t1_jpg, t1_crops, tmp_path):
    faces, crops = t1_crops
    a, b = 1, 4  # two different people, mapped to two different sources
    opts = _options(ghost_models, face_map=((crops[a], hanks_png), (crops[b], crops[2])),
                    reference_face_distance=0.1)
    pipe = Pipeline(opts, None)
    embedded = pipe.embed(t1_frame, faces)
    dists = [pipe.mapping_of(f)["distance"] for f in embedded]
    # the stand-in recognizer separates them: each reference is near its own face only
    assert dists[a] < 0.05 and dists[b] < 0.05
    assert all(d > 0.1 for i, d in enumerate(dists) if i not in (a, b)), dists
    offsets = [_offset(m.identity) for m in pipe.mappings]
    assert np.abs(offsets[0] - offsets[1]).max() > 15, "the two sources must be told apart by colour"
    selected = pipe.select(faces, t1_frame)
    assert [s.source_id for s in selected] == [0, 1]
    out, union = pipe.render_with_mask(t1_frame, selected)
    assert np.array_equal(out[union <= 0], t1_frame[union <= 0])
    for i, f in enumerate(faces):
        if i not in (a, b):  # the other four faces are untouched at their centres
            x, y = np.round(f.kps[2]).astype(int)
            assert union[y, x] == 0
    for face_index, mine, other in ((a, offsets[0], offsets[1]), (b, offsets[1], offsets[0])):
        x1, y1, x2, y2 = faces[face_index].bbox.astype(int)
        region = np.zeros(union.shape, bool)
        region[y1:y2, x1:x2] = True
        base = 255.0 - t1_frame.astype(np.float32)
        ok = (region & (union > 0.999))[..., None] & (base + mine > 8) & (base + mine < 247) \
            & (base + other > 8) & (base + other < 247)
        got = out.astype(np.float32)
        err_mine = np.abs(got - (base + mine))[ok].mean()
        err_other = np.abs(got - (base + other))[ok].mean()
        assert err_mine < 3.0 and err_other > 3 * err_mine, (face_index, err_mine, err_other)
    report = Engine(opts).swap_file(None, t1_jpg, tmp_path / "out.png")
    by_source = {f.get("source") for f in report["faces"] if f["selected"]}
    assert by_source == {str(hanks_png), str(crops[2])}
    assert sum(1 for f in report["faces"] if f["selected"]) == 2
    assert report["face_map"] == [{"reference": str(crops[a]), "source": str(hanks_png)},
                                  {"reference": str(crops[b]), "source": str(crops[2])}]


def test_a_face_map_that_matches_nothing_is_a_no_match_error(ghost_models, hanks_png, t1_jpg, tmp_path):
    opts = _options(ghost_models, face_map=((hanks_png, hanks_png),), reference_face_distance=1e-6)
    with pytest.raises(NoReferenceMatchError, match="--face-map") as info:
        Engine(opts).swap_file(None, t1_jpg, tmp_path / "out.png")
    assert len(info.value.evidence["distances"]) == 6 and not (tmp_path / "out.png").exists()


def test_face_map_without_a_recognizer_says_so(tmp_path, hanks_png):
    models = standins.models_dir(tmp_path / "m", swapper=False, recognizer=False)
    opts = SwapOptions(models_dir=models, execution_providers=("cpu",), face_swapper_model="mesh",
                       face_map=((hanks_png, hanks_png),))
    with pytest.raises(ModelMissingError, match="--face-map needs a face recognizer") as info:
        Pipeline(opts, None)
    assert "w600k_r50.onnx" in info.value.message


def test_face_map_with_another_selector_mode_is_an_option_error(ghost_models, hanks_png):
    with pytest.raises(ConfigError, match="face-selector-mode one"):
        Pipeline(_options(ghost_models, face_map=((hanks_png, hanks_png),), face_selector_mode="one"), None)


@pytest.mark.parametrize("args, needle", [(["--face-map", "no-equals-sign"], "REFERENCE=SOURCE"),
                                          (["--face-map", "=b.png"], "REFERENCE=SOURCE"),
                                          (["-s", "a.png", "--face-map", "r.png=s.png"], "not both")])
def test_bad_face_map_arguments_are_usage_errors(args, needle, t1_jpg, tmp_path, empty_models):
    res = CliRunner().invoke(main, ["swap", *args, "-t", str(t1_jpg), "-o", str(tmp_path / "o.jpg"),
                                    "--models-dir", str(empty_models)])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (tmp_path / "o.jpg").exists()


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_track_mapper_matches_the_averaged_track_embedding_and_never_switches():
    from sealfuse.engine.face import Face
    from sealfuse.engine.facemap import Mapping, TrackMapper
    from sealfuse.engine.swappers import Source

    ref_a, ref_b = _unit([1, 0, 0]), _unit([0, 1, 0])

    def face(x: float, tid: int, emb=None) -> Face:
        return Face(bbox=np.array([x, 0, x + 10, 10], np.float32), kps=np.zeros((5, 2), np.float32), score=1.0,
                    track_id=tid, embedding=emb)

    src = Source((), (), "k")
    mappings = [Mapping(0, "a.png", "actor_a.png", face(0, -1, ref_a), src, "A"),
                Mapping(1, "b.png", "actor_b.png", face(0, -1, ref_b), src, "B")]
    first_2, second_2 = _unit([1, 1, 1.2]), _unit([1, 0.1, 0.1])
    schedule: dict[int, list[np.ndarray]] = {
        1: [_unit([1, 0.1, 0]), _unit([0.1, 1, 0])],  # clearly A, then (noise) nearer B
        2: [first_2, second_2],  # unclear at first (matches nothing), then A
    }
    seen_by_embed: list[list[int]] = []

    def embed(_frame, faces):
        seen_by_embed.append([f.track_id for f in faces])
        return [f.with_(embedding=schedule[f.track_id].pop(0)) for f in faces]

    mapper = TrackMapper(mappings, embed, threshold=0.2)
    frame = np.zeros((4, 4, 3), np.uint8)
    picked = mapper.choose([face(0, 1), face(50, 2)], frame, detect_frame=True, alive={1, 2})
    assert [(f.track_id, f.source_id) for f in picked] == [(1, 0)]  # track 2 is not matched yet: untouched
    picked = mapper.choose([face(0, 1), face(50, 2)], frame, detect_frame=False, alive={1, 2})
    assert [(f.track_id, f.source_id) for f in picked] == [(1, 0)]  # between detect frames nothing is embedded
    faces = [face(0, 1), face(50, 2), face(200, 3), face(205, 4)]  # 3 and 4 overlap: neither is embedded
    picked = mapper.choose(faces, frame, detect_frame=True, alive={1, 2, 3, 4})
    assert [(f.track_id, f.source_id) for f in picked] == [(1, 0), (2, 0)]
    assert seen_by_embed == [[1, 2], [2]]  # an assigned track is never embedded (nor switched) again
    rows = {r["track_id"]: r for r in mapper.report()}
    assert rows[1]["source"] == "actor_a.png" and rows[2]["source"] == "actor_a.png"
    averaged = _unit(first_2 + second_2)
    assert rows[2]["observations"] == 2 and rows[2]["distance"] == pytest.approx(1 - averaged[0], abs=1e-4)
    assert rows[3]["source"] is None and rows[3]["observations"] == 0
