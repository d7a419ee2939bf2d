"""Face tracks across video frames: association at detect frames, optical flow in between.

Detections are associated with tracks by predicted position (constant velocity), box overlap and
a colour-histogram appearance cue, so track ids survive two faces crossing. Between detect frames
the five landmarks and a few corner points inside each face box follow pyramidal Lucas-Kanade
flow; a similarity transform fitted to them moves the face, and a One-Euro filter removes jitter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from sealfuse.engine.face import Face

__all__ = ["FaceTracker", "MeshSmoother", "OneEuro", "TrackSelector", "iou"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


_EXACT_MAX = 40320  # assignments tried exhaustively (8 tracks x 8 faces); larger problems use scipy


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost assignment of rows to columns (as scipy's `linear_sum_assignment`).

    A video has a handful of faces: trying every assignment in numpy is exact, takes well under a
    millisecond, and spares each video job the import of scipy.optimize (about 0.2 s of CPU).
    """
    n, m = cost.shape
    flip = n > m
    c = cost.T if flip else cost  # rows <= columns
    k, cols = c.shape
    if math.perm(cols, k) > _EXACT_MAX:
        from scipy.optimize import linear_sum_assignment

        return linear_sum_assignment(cost)
    perms = np.array(list(itertools.permutations(range(cols), k)), np.intp).reshape(-1, k)
    best = perms[int(np.argmin(c[np.arange(k), perms].sum(axis=1)))]
    rows = np.arange(k)
    if flip:  # rows of `c` are the columns of `cost`
        order = np.argsort(best)
        return best[order], rows[order]
    return rows, best


class OneEuro:
    """One-Euro filter (Casiez et al. 2012) over a vector, in units normalised by a scale.

    Slow motion is smoothed hard (cut-off `min_cutoff` Hz); fast motion raises the cut-off by
    `beta` times the speed so the filter does not lag behind a moving face.
    """

    def __init__(self, min_cutoff: float = 1.2, beta: float = 4.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self, x: np.ndarray, t: float) -> np.ndarray:
        self._x, self._dx, self._t = x.astype(np.float64), np.zeros_like(x, np.float64), t
        return x

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        if self._x is None or self._t is None or self._dx is None or t <= self._t:
            return self.reset(x, t)
        dt = t - self._t
        s = max(scale, 1e-6)
        dx = (x - self._x) / dt / s
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * float(np.abs(self._dx).max())
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.astype(np.float32)


def _hist(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Hue-saturation histogram of the inner half of a face box (the appearance cue)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
    xa, xb = int(max(0, cx - bw)), int(min(w, cx + bw))
    ya, yb = int(max(0, cy - bh)), int(min(h, cy + bh))
    if xb - xa < 4 or yb - ya < 4:
        return None
    hsv = cv2.cvtColor(frame[ya:yb, xa:xb], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [12, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, None).flatten()


@dataclass
class _Track:
    id: int
    bbox: np.ndarray
    kps: np.ndarray
    score: float
    t: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # px per second
    hist: np.ndarray | None = None
    seen: float = 0.0  # time of the last matching detection
    seen_centre: np.ndarray | None = None  # box centre at that time
    missed: int = 0  # detect frames in a row without a matching detection
    flow_failures: int = 0  # frames in a row where optical flow found too few points
    visible: bool = True
    filter: OneEuro = field(default_factory=OneEuro)

    @property
    def centre(self) -> np.ndarray:
        return np.array([(self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2], np.float32)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    def predicted(self, t: float) -> np.ndarray:
        shift = self.velocity * max(0.0, t - self.t)
        return self.bbox + np.array([shift[0], shift[1], shift[0], shift[1]], np.float32)

    def face(self) -> Face:
        return Face(bbox=self.bbox.copy(), kps=self.kps.copy(), score=self.score, track_id=self.id)


class FaceTracker:
    """Stable track ids for faces: `detect(...)` at detect frames, `follow(...)` in between.

    Both return the faces visible in that frame, each with its `track_id`. A track that finds no
    detection is kept (coasting on its velocity, not visible) for `max_coast_s` seconds, and at
    least `min_missed` detect frames, so that a face hidden while another crosses it gets its id back.
    """

    def __init__(self, *, max_coast_s: float = 1.0, min_missed: int = 2, min_iou: float = 0.05,
                 max_flow_failures: int = 2) -> None:
        self.max_coast_s = max_coast_s
        self.min_missed = min_missed
        self.min_iou = min_iou
        self.max_flow_failures = max_flow_failures
        self.tracks: list[_Track] = []
        self._next_id = 1
        self._prev: np.ndarray | None = None
        self._prev_t = 0.0

    def ids(self) -> set[int]:
        return {t.id for t in self.tracks}

    def visible(self) -> list[Face]:
        return [t.face() for t in self.tracks if t.visible]

    # -- detect frames ------------------------------------------------------------------------------
    def detect(self, frame: np.ndarray, faces: list[Face], t: float) -> list[Face]:
        """Associate fresh detections with tracks (by predicted box, overlap and appearance)."""
        hists = [_hist(frame, f.bbox) for f in faces]
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        if self.tracks and faces:
            cost = np.full((len(self.tracks), len(faces)), 10.0, np.float64)
            for i, tr in enumerate(self.tracks):
                pred = tr.predicted(t)
                pc = np.array([(pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2])
                for j, f in enumerate(faces):
                    overlap = iou(pred, f.bbox)
                    fc = np.array([(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2])
                    dist = float(np.linalg.norm(fc - pc)) / max(tr.width, 1.0)
                    if overlap < self.min_iou and dist > 0.75:
                        continue  # gate: too far from where this track should be
                    look = 0.5
                    if tr.hist is not None and hists[j] is not None:
                        look = 1.0 - float(cv2.compareHist(tr.hist, hists[j], cv2.HISTCMP_CORREL))
                    cost[i, j] = (1.0 - overlap) + 0.5 * dist + 0.3 * look
            rows, cols = _assign(cost)
            for i, j in zip(rows, cols, strict=True):
                if cost[i, j] >= 10.0:
                    continue
                self._update(self.tracks[i], faces[j], hists[j], t)
                matched_tracks.add(i)
                matched_dets.add(j)
        survivors = []
        for i, tr in enumerate(self.tracks):
            if i not in matched_tracks:
                tr.missed += 1
                tr.visible = False
                tr.bbox = tr.predicted(t)
                tr.kps = tr.kps + tr.velocity * max(0.0, t - tr.t)
                tr.t = t
            if tr.missed <= self.min_missed or t - tr.seen <= self.max_coast_s:
                survivors.append(tr)
        self.tracks = survivors
        for j, f in enumerate(faces):
            if j not in matched_dets:
                tr = _Track(id=self._next_id, bbox=f.bbox.astype(np.float32), kps=f.kps.astype(np.float32),
                            score=float(f.score), t=t, seen=t, hist=hists[j])
                tr.filter.reset(np.concatenate([tr.kps.ravel(), tr.bbox]), t)
                tr.seen_centre = tr.centre
                self._next_id += 1
                self.tracks.append(tr)
        self._prev, self._prev_t = frame, t
        return self.visible()

    def _update(self, tr: _Track, f: Face, hist: np.ndarray | None, t: float) -> None:
        old_c, old_t = tr.centre, tr.t
        smoothed = tr.filter(np.concatenate([f.kps.ravel(), f.bbox]).astype(np.float32), t, tr.width)
        tr.kps = smoothed[:10].reshape(5, 2).astype(np.float32)
        tr.bbox = smoothed[10:].astype(np.float32)
        if tr.missed and tr.seen_centre is not None and t > tr.seen:
            # back from coasting: the velocity over the whole gap, not from the extrapolated position
            tr.velocity = ((tr.centre - tr.seen_centre) / (t - tr.seen)).astype(np.float32)
        elif t > old_t:
            tr.velocity = (0.5 * (tr.centre - old_c) / (t - old_t) + 0.5 * tr.velocity).astype(np.float32)
        tr.seen_centre = tr.centre
        tr.t, tr.seen, tr.score, tr.missed, tr.flow_failures, tr.visible = t, t, float(f.score), 0, 0, True
        if hist is not None:
            tr.hist = hist if tr.hist is None else (0.7 * tr.hist + 0.3 * hist).astype(np.float32)

    # -- frames in between --------------------------------------------------------------------------
    def follow(self, frame: np.ndarray, t: float) -> list[Face]:
        """Move every visible track by optical flow from the previous frame."""
        prev = self._prev
        for tr in self.tracks:
            if not tr.visible or prev is None:
                continue
            moved = _flow(prev, frame, tr.bbox, tr.kps)
            if moved is None:
                tr.flow_failures += 1
                if tr.flow_failures > self.max_flow_failures:
                    tr.visible = False  # lost until the next detect frame re-finds it
                    continue
                shift = tr.velocity * max(0.0, t - tr.t)
                bbox = tr.bbox + np.array([shift[0], shift[1], shift[0], shift[1]], np.float32)
                kps = tr.kps + shift
            else:
                tr.flow_failures = 0
                bbox, kps = moved
            old_c, old_t = tr.centre, tr.t
            smoothed = tr.filter(np.concatenate([kps.ravel(), bbox]).astype(np.float32), t, tr.width)
            tr.kps = smoothed[:10].reshape(5, 2).astype(np.float32)
            tr.bbox = smoothed[10:].astype(np.float32)
            if t > old_t:
                v = (tr.centre - old_c) / (t - old_t)
                tr.velocity = (0.7 * tr.velocity + 0.3 * v).astype(np.float32)
            tr.t = t
        self._prev, self._prev_t = frame, t
        return self.visible()


_LK = {"winSize": (15, 15), "maxLevel": 2,
       "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
_FLOW_WIDTH = 128.0  # faces are tracked at about this many pixels wide (bounded cost at 4K)


def _flow(prev: np.ndarray, cur: np.ndarray, bbox: np.ndarray, kps: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray] | None:
    """New (bbox, kps) of one face from `prev` to `cur`, or None if too few points agree."""
    h, w = cur.shape[:2]
    bw, bh = float(bbox[2] - bbox[0]), float(bbox[3] - bbox[1])
    if bw < 4 or bh < 4:
        return None
    pad = 0.5
    xa, ya = int(max(0, bbox[0] - pad * bw)), int(max(0, bbox[1] - pad * bh))
    xb, yb = int(min(w, bbox[2] + pad * bw)), int(min(h, bbox[3] + pad * bh))
    if xb - xa < 8 or yb - ya < 8:
        return None
    s = min(1.0, _FLOW_WIDTH / bw)
    size = (max(8, round((xb - xa) * s)), max(8, round((yb - ya) * s)))

    def gray(img: np.ndarray) -> np.ndarray:
        roi = cv2.cvtColor(img[ya:yb, xa:xb], cv2.COLOR_BGR2GRAY)
        return roi if s == 1.0 else cv2.resize(roi, size, interpolation=cv2.INTER_AREA)

    g0, g1 = gray(prev), gray(cur)
    sx, sy = size[0] / (xb - xa), size[1] / (yb - ya)
    origin = np.array([xa, ya], np.float32)
    scale = np.array([sx, sy], np.float32)
    box_mask = np.zeros(g0.shape, np.uint8)
    bx1, by1 = (np.array(bbox[:2]) - origin) * scale
    bx2, by2 = (np.array(bbox[2:]) - origin) * scale
    box_mask[int(max(0, by1)):int(by2), int(max(0, bx1)):int(bx2)] = 255
    corners = cv2.goodFeaturesToTrack(g0, maxCorners=24, qualityLevel=0.01, minDistance=max(3.0, (bx2 - bx1) / 12),
                                      mask=box_mask)
    pts = ((kps.astype(np.float32) - origin) * scale).reshape(-1, 1, 2)
    if corners is not None:
        pts = np.concatenate([pts, corners.astype(np.float32)], axis=0)
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, pts, None, **_LK)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, nxt, None, **_LK)
    fb = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
    good = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < 1.0)
    if good.sum() < 4:
        return None
    m, inliers = cv2.estimateAffinePartial2D(pts[good], nxt[good], method=cv2.RANSAC, ransacReprojThreshold=1.5)
    if m is None or inliers is None or int(inliers.sum()) < 4:
        return None
    a, b = float(m[0, 0]), float(m[1, 0])
    zoom = math.hypot(a, b)
    if not 0.8 < zoom < 1.25:
        return None  # implausible jump between two frames

    def apply(p: np.ndarray) -> np.ndarray:
        q = (p.reshape(-1, 2) - origin) * scale
        q = q @ m[:, :2].T + m[:, 2]
        return (q / scale + origin).astype(np.float32)

    new_kps = apply(kps)
    c = apply(np.array([[(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2]], np.float32))[0]
    hw, hh = bw * zoom / 2, bh * zoom / 2
    new_box = np.array([c[0] - hw, c[1] - hh, c[0] + hw, c[1] + hh], np.float32)
    return new_box, new_kps


class TrackSelector:
    """Applies the face selector mode per track, so a choice made at a detect frame holds.

    - many: every visible face.
    - one: the largest face at the first detect frame that has one; kept while its track lives.
    - reference: `select` (the pipeline's recognizer match) decides per track at detect frames,
      skipping faces that overlap another (a crossing would mix two faces in one crop); the
      decision sticks until the track fails the match at `strikes` detect frames in a row.
    """

    def __init__(self, mode: str, select: Callable[[list[Face], np.ndarray], list[Face]], *,
                 strikes: int = 2) -> None:
        self.mode = mode
        self.select = select
        self.strikes = strikes
        self.chosen: dict[int, bool] = {}
        self._fails: dict[int, int] = {}
        self._one: int | None = None

    def choose(self, faces: list[Face], frame: np.ndarray, *, detect_frame: bool, alive: set[int]) -> list[Face]:
        for tid in list(self.chosen):
            if tid not in alive:
                self.chosen.pop(tid)
                self._fails.pop(tid, None)
        if self.mode == "many":
            return sorted(faces, key=lambda f: float(f.bbox[0]))
        if self.mode == "one":
            if self._one not in alive:
                self._one = None
            if self._one is None and detect_frame and faces:
                picked = self.select(faces, frame)
                self._one = picked[0].track_id if picked else None
            return [f for f in faces if f.track_id == self._one]
        if detect_frame and faces:
            clear = [f for f in faces if all(g is f or iou(f.bbox, g.bbox) == 0.0 for g in faces)]
            if clear:
                picked = {f.track_id for f in self.select(clear, frame)}
                for f in clear:
                    assert f.track_id is not None
                    if f.track_id in picked:
                        self.chosen[f.track_id] = True
                        self._fails[f.track_id] = 0
                    elif self.chosen.get(f.track_id):
                        self._fails[f.track_id] = self._fails.get(f.track_id, 0) + 1
                        if self._fails[f.track_id] >= self.strikes:
                            self.chosen[f.track_id] = False
        return sorted((f for f in faces if self.chosen.get(f.track_id or -1)), key=lambda f: float(f.bbox[0]))


class MeshSmoother:
    """Each track's 468-point mesh One-Euro filtered across frames, so a swapped face does not shimmer.

    The five alignment points are taken again from the smoothed mesh. Faces without a mesh or a
    track id pass through; filters of tracks no longer alive are dropped. `priors` gives FaceMesh
    each track's region from the previous frame, so one pass finds the next mesh (as MediaPipe
    tracks) instead of two from the tracked box.
    """

    def __init__(self, min_cutoff: float = 0.8, beta: float = 3.0) -> None:
        self.min_cutoff, self.beta = min_cutoff, beta
        self._filters: dict[int, OneEuro] = {}
        # per track: the region its last (unsmoothed) mesh spans, and its box centre then
        self._regions: dict[int, tuple[tuple[np.ndarray, float, float], np.ndarray]] = {}

    def priors(self, faces: list[Face]) -> dict[int, tuple[np.ndarray, float, float]]:
        """For each followed face: its track's last mesh region, moved as the face's box moved since."""
        out = {}
        for f in faces:
            hit = self._regions.get(f.track_id) if f.track_id is not None else None
            if hit is None:
                continue
            (centre, size, angle), was = hit
            now = np.array([(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2], np.float64)
            out[f.track_id] = (centre + (now - was), size, angle)
        return out

    def __call__(self, faces: list[Face], t: float, *, alive: set[int] | None = None) -> list[Face]:
        from sealfuse.engine.detect_facemesh import FaceMesher, five_points_from_mesh

        out = []
        for f in faces:
            if f.mesh is None or f.track_id is None:
                out.append(f)
                continue
            centre = np.array([(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2], np.float64)
            self._regions[f.track_id] = (FaceMesher.roi_from_mesh(f.mesh), centre)
            filt = self._filters.setdefault(f.track_id, OneEuro(self.min_cutoff, self.beta))
            width = float(np.ptp(f.mesh[:, 0])) or 1.0
            mesh = np.asarray(filt(f.mesh.astype(np.float64), t, width), np.float32)
            out.append(f.with_(mesh=mesh, kps=five_points_from_mesh(mesh)))
        if alive is not None:
            for tid in [k for k in self._filters if k not in alive]:
                del self._filters[tid]
                self._regions.pop(tid, None)
        return out
