"""The visible disclosure label (Article 50(4)): drawn in the chosen corner of images and every video frame."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.engine.api import swap_file
from sealfuse.engine.errors import ConfigError
from sealfuse.engine.label import Label
from sealfuse.engine.yuv import YuvMatrix, planes, to_bgr
from tests.video.clips import decode_frames, make_clip

TEXT = "AI-generated (face swap)"


def _box(label: Label) -> tuple[slice, slice]:
    return slice(label.y, label.y + label.h), slice(label.x, label.x + label.w)


def test_an_image_gets_the_label_in_its_corner_and_nothing_else_changes(private_names, cpu, tmp_path):
    plain, labelled = tmp_path / "plain.png", tmp_path / "labelled.png"
    swap_file(private_names.source, private_names.target, plain, cpu)
    swap_file(private_names.source, private_names.target, labelled, cpu.with_(label=TEXT, label_corner="top-left"))
    a, b = cv2.imread(str(plain)), cv2.imread(str(labelled))
    label = Label(TEXT, a.shape[1], a.shape[0], "top-left")
    ys, xs = _box(label)
    assert label.x < 40 and label.y < 40, "top-left corner"
    outside = np.ones(a.shape[:2], bool)
    outside[ys, xs] = False
    assert np.array_equal(a[outside], b[outside])
    roi_a, roi_b = a[ys, xs].astype(int), b[ys, xs].astype(int)
    assert roi_b.mean() < roi_a.mean() - 20, "the box darkens the corner"
    assert (roi_b.min(axis=2) > 230).sum() > 100, "white text is drawn"
    assert (roi_a.min(axis=2) > 230).sum() < (roi_b.min(axis=2) > 230).sum()


def test_every_video_frame_carries_the_label(cpu, hanks_png, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, frames=10)
    plain, labelled = tmp_path / "plain.mp4", tmp_path / "labelled.mp4"
    swap_file(hanks_png, clip, plain, cpu)
    swap_file(hanks_png, clip, labelled, cpu.with_(label=TEXT))
    fa, fb = decode_frames(plain), decode_frames(labelled)
    assert len(fa) == len(fb) == 10
    label = Label(TEXT, 320, 240)
    ys, xs = _box(label)
    assert label.x > 160 and label.y > 120, "bottom-right corner by default"
    for a, b in zip(fa, fb, strict=True):
        assert b[ys, xs].astype(int).mean() < a[ys, xs].astype(int).mean() - 20
        assert (b[ys, xs].min(axis=2) > 200).sum() > 30
        top = slice(0, label.y - 8)
        assert np.abs(a[top].astype(int) - b[top].astype(int)).mean() < 2.0, "the rest of the frame is unchanged"


@pytest.mark.parametrize("full_range", [False, True])
def test_the_yuv_blend_matches_the_bgr_blend(full_range):
    """Frames kept as YUV 4:2:0 get the same label as BGR frames (within rounding)."""
    rng = np.random.default_rng(3)
    h, w = 120, 200
    m = YuvMatrix.for_stream(1, full_range)
    arr = rng.integers(40, 200, (h * 3 // 2, w), dtype=np.uint8)
    y, u, v = planes(arr, h, w)
    u[:] = 128 + (u.astype(int) - 128) // 8  # mild colours, so 4:2:0 rounding stays small
    v[:] = 128 + (v.astype(int) - 128) // 8
    label = Label("Deepfake", w, h)
    via_yuv = to_bgr(label.apply_yuv(arr, m), h, w, m).astype(int)
    via_bgr = label.apply_bgr(to_bgr(arr, h, w, m)).astype(int)
    ys, xs = _box(label)
    assert np.abs(via_yuv[ys, xs] - via_bgr[ys, xs]).mean() < 3.0


def test_a_bad_label_is_refused_before_any_output(private_names, cpu, tmp_path):
    out = tmp_path / "o.jpg"
    with pytest.raises(ConfigError, match="printable ASCII"):
        swap_file(private_names.source, private_names.target, out, cpu.with_(label="Deepfake \u2013 KI"))
    assert not out.exists()
    res = CliRunner().invoke(main, ["swap", "-s", str(private_names.source), "-t", str(private_names.target),
                                    "-o", str(out), "--models-dir", str(cpu.models_dir), "--execution-providers",
                                    "cpu", "--label", " ", "--json"])
    assert res.exit_code == 2 and json.loads(res.stdout)["reason"] == "bad_options" and not out.exists()


def test_the_label_is_recorded_in_the_manifest(private_names, cpu, signing, tmp_path):
    from sealfuse.verifier.provenance import read_credentials

    out = tmp_path / "o.jpg"
    swap_file(private_names.source, private_names.target, out, cpu.with_(label=TEXT), provenance=signing)
    creds = read_credentials(out)
    assert creds.options["label"] == TEXT and creds.options["label_corner"] == "bottom-right"
