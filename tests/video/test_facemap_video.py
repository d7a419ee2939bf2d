"""Face mapping in video: two real faces cross; each keeps its own mapped source in every frame."""

from __future__ import annotations

import cv2
import numpy as np

from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Pipeline
from sealfuse.engine.video import swap_video, transcode_video
from tests.engine import standins
from tests.video.clips import Sprite, background, compose, decode_frames, make_clip, t1_faces

W, H, N, FPS = 320, 240, 30, 15
SIZE = 110


def test_each_crossing_face_keeps_its_mapped_source_in_every_frame(pipeline, t1_jpg, hanks_png, tmp_path):
    img = cv2.imread(str(t1_jpg))
    faces = sorted(pipeline.detect(img), key=lambda f: float(f.bbox[0]))
    boxes = [faces[0].bbox, faces[4].bbox]
    crops = t1_faces(boxes)
    sprites = [Sprite(crops[0], (0, 0), (W - SIZE, 50), SIZE), Sprite(crops[1], (W - SIZE, 110), (0, 50), SIZE)]
    centres = []
    for (x1, y1, x2, y2), crop in zip(boxes, crops, strict=True):
        s = SIZE / crop.shape[1]
        w, h = x2 - x1, y2 - y1  # the face's centre inside its crop (t1_faces' margin is 0.35)
        centres.append((s * (0.35 * w + w / 2), s * (0.35 * h + h / 2), s * w))
    bg = background(W, H)
    frames = [compose(bg, sprites, i / (N - 1)) for i in range(N)]
    clip = make_clip(tmp_path / "cross.mp4", width=W, height=H, frames=N, fps=FPS, render=lambda i: frames[i],
                     audio=None)
    refs = [tmp_path / "ref_a.png", tmp_path / "ref_b.png"]
    for path, crop in zip(refs, crops, strict=True):
        cv2.imwrite(str(path), crop)
    other = tmp_path / "actor_b.png"
    cv2.imwrite(str(other), t1_faces([faces[2].bbox], margin=0.6)[0])
    models = standins.models_dir(tmp_path / "models", swapper=False, extra=("ghost_1_256", "crossface_ghost"))
    opts = SwapOptions(models_dir=models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model="ghost_1_256", face_map=((refs[0], hanks_png), (refs[1], other)),
                       reference_face_distance=0.1)
    pipe = Pipeline(opts, None)
    offsets = [(127.5 * standins.SOURCE_GAIN * np.asarray(m.identity).reshape(-1)[:3])[::-1] for m in pipe.mappings]
    assert np.abs(offsets[0] - offsets[1]).max() > 15, "the two sources must be told apart by colour"
    swap_video(pipe, clip, tmp_path / "out.mp4")
    transcode_video(opts, clip, tmp_path / "base.mp4")
    out, base = decode_frames(tmp_path / "out.mp4"), decode_frames(tmp_path / "base.mp4")

    tracks = pipe.describe()["tracks_mapped"]
    assert len(tracks) == 2 and {t["source"] for t in tracks} == {str(hanks_png), str(other)}, tracks

    fw = centres[0][2]
    r = int(0.2 * fw)
    checked: list[list[int]] = [[], []]
    for i in range(N):
        pos = []
        for sp, (cx, cy, _) in zip(sprites, centres, strict=True):
            x, y = sp.at(i / (N - 1))
            pos.append((int(x + cx), int(y + cy)))
        (ax, ay), (bx, by) = pos
        x1, y1 = sprites[1].at(i / (N - 1))  # B's sprite passes in front of A
        b_rect = (x1, y1, x1 + SIZE, y1 + SIZE * sprites[1].image.shape[0] / sprites[1].image.shape[1])
        a_hidden = b_rect[0] - fw < ax < b_rect[2] + fw and b_rect[1] - 0.7 * fw < ay < b_rect[3] + 0.7 * fw
        b_clear = abs(ax - bx) > 1.6 * fw or abs(ay - by) > 1.6 * fw
        for who, (x, y), visible in ((0, (ax, ay), not a_hidden), (1, (bx, by), b_clear)):
            if not visible:
                continue
            got = out[i][y - r:y + r, x - r:x + r].astype(np.float32)
            inverted = 255.0 - base[i][y - r:y + r, x - r:x + r].astype(np.float32)
            errs = [np.abs(got - np.clip(inverted + off, 0, 255)).mean() for off in offsets]
            assert errs[who] < errs[1 - who], f"frame {i}: face {'AB'[who]} got the other face's source {errs}"
            assert errs[who] < 12, f"frame {i}: face {'AB'[who]} was not swapped with its source ({errs})"
            checked[who].append(i)
    for seen in checked:  # checked on both sides of the crossing
        assert len(seen) >= 10 and min(seen) < 8 and max(seen) > N - 8, seen
