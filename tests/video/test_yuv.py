"""YUV 4:2:0 <-> BGR with the stream's matrix: agreement with FFmpeg, and bit-exact write-back."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from sealfuse.engine.yuv import YuvMatrix, planes, to_bgr, write_back


@pytest.fixture(scope="module")
def photo(t1_jpg) -> np.ndarray:
    return cv2.imread(str(t1_jpg))[:720, :1280]


@pytest.mark.parametrize("colorspace", [1, 5])  # BT.709, BT.601
def test_to_bgr_matches_ffmpeg_for_the_streams_colorspace(photo, colorspace):
    h, w = photo.shape[:2]
    frame = av.VideoFrame.from_ndarray(photo, format="bgr24").reformat(format="yuv420p", dst_colorspace=colorspace)
    arr = frame.to_ndarray()
    ours = to_bgr(arr, h, w, YuvMatrix.for_stream(colorspace, False)).astype(int)
    ffmpeg = frame.reformat(format="bgr24", src_colorspace=colorspace).to_ndarray().astype(int)
    assert np.abs(ours - ffmpeg).mean() < 2.0
    assert np.abs(ours - photo.astype(int)).mean() < 2.0  # and it is as close to the source
    other = to_bgr(arr, h, w, YuvMatrix.for_stream(6 - colorspace if colorspace == 1 else 1, False))
    assert np.abs(other.astype(int) - photo.astype(int)).mean() > np.abs(ours - photo.astype(int)).mean()


@pytest.mark.parametrize("full_range", [False, True])
def test_write_back_changes_only_the_touched_pixels(photo, full_range):
    h, w = photo.shape[:2]
    fmt = "yuvj420p" if full_range else "yuv420p"
    arr = av.VideoFrame.from_ndarray(photo, format="bgr24").reformat(format=fmt).to_ndarray()
    m = YuvMatrix.for_stream(5, full_range)
    bgr = to_bgr(arr, h, w, m)
    edited = bgr.copy()
    edited[300:360, 401:503] = (255 - edited[300:360, 401:503]).astype(np.uint8)  # an odd-edged blend
    alpha = np.zeros((100, 160), np.float32)
    alpha[20:80, 21:123] = 1.0
    out = arr.copy()
    write_back(out, h, w, edited, (380, 280, 540, 380), alpha, m)
    y0, u0, v0 = planes(arr, h, w)
    y1, u1, v1 = planes(out, h, w)
    changed = y0 != y1
    assert changed[300:360, 401:503].mean() > 0.9
    changed[300:360, 401:503] = False
    assert not changed.any(), "luma outside the touched pixels must stay bit-exact"
    chroma = (u0 != u1) | (v0 != v1)
    assert chroma[150:180, 200:252].any()
    chroma[150:180, 200:252] = False
    assert not chroma.any(), "chroma outside the touched 2x2 blocks must stay bit-exact"
    # and where untouched content is written back, the round trip is near-lossless
    same = arr.copy()
    write_back(same, h, w, bgr, (380, 280, 540, 380), alpha, m)
    assert np.abs(same.astype(int) - arr.astype(int)).max() <= 2
