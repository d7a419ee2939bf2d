"""The starter `mesh` swap (DEMO GRADE): the source face's texture warped onto the target's FaceMesh.

Per source (once): a crop around the face, its 468 points, a triangulation of the mesh (Delaunay
over the eye-levelled source points, so the eye and mouth openings are closed), and which
triangles the source shows edge-on (left out). Per target face: each triangle's affine map sends
target pixels to source texture (one `remap` for the whole face), triangles that face away in the
target are left out, the target's own mouth opening is kept, the mask stops just above the brows
(a fringe does not come along), colours are matched in Lab, and the face is Poisson-blended or
feathered. Identity transfer is partial: the face shape stays the target's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import cv2
import numpy as np

from sealfuse.engine import mesh_topology as topo

__all__ = ["BLENDS", "MeshSource", "MeshSwapOutput", "mesh_swap", "prepare_source", "triangulate"]

BLENDS = ("poisson", "feather")
EDGE_ON = 0.25  # |normal z| / |normal| below this: the source shows the triangle edge-on
CROP_SCALE = 1.6  # the square crop around a target face, relative to its mesh's extent
WORK_FACE = 128  # faces larger than this (pixels) are swapped at this size and scaled back
OVAL_INSET = 0.85  # the mask's outline: the mesh's hull scaled by this about its centre
BROW_MARGIN = 0.12  # how far above the brows the mask stops, in units of the eye-to-brow height
_LIPS_INNER = np.array(topo.LIPS_INNER)


def _levelled(points: np.ndarray) -> np.ndarray:
    """The mesh's 2-D points rotated so the eye line is horizontal."""
    d = points[topo.LEFT_EYE_OUTER, :2] - points[topo.RIGHT_EYE_OUTER, :2]
    a = -np.arctan2(d[1], d[0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points[:, :2].astype(np.float64) @ rot.T


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (T, 3) of the mesh's points, counter-clockwise in image coordinates."""
    xy = _levelled(points)
    lo = xy.min(0) - 10
    hi = xy.max(0) + 10
    sub = cv2.Subdiv2D((int(np.floor(lo[0])), int(np.floor(lo[1])), int(np.ceil(hi[0] - lo[0])) + 1,
                        int(np.ceil(hi[1] - lo[1])) + 1))
    index = {}
    for i, (x, y) in enumerate(xy):
        index[sub.insert((float(x), float(y)))] = i
    tris = []
    for t in sub.getTriangleList():
        ids = []
        for k in range(3):
            vid, _ = sub.findNearest((float(t[2 * k]), float(t[2 * k + 1])))
            ids.append(index.get(vid, -1))
        if min(ids) >= 0 and len(set(ids)) == 3:
            tris.append(ids)
    tri = np.array(tris, np.int32)
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri[cross < 0] = tri[cross < 0][:, [0, 2, 1]]
    return tri


def _signed_area(xy: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _facing(mesh: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """|normal z| / |normal| of each triangle (1: faces the camera, 0: edge-on)."""
    p = mesh.astype(np.float64)
    n = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
    return np.abs(n[:, 2]) / np.maximum(np.linalg.norm(n, axis=1), 1e-9)


@dataclass(frozen=True)
class MeshSource:
    """A source face prepared once: texture crop, its mesh points in crop pixels, triangles to use."""

    texture: np.ndarray  # BGR uint8
    points: np.ndarray  # (468, 2) float32, texture pixels
    triangles: np.ndarray  # (T, 3) int32, counter-clockwise in the source
    usable: np.ndarray  # (T,) bool: not edge-on in the source


def prepare_source(image: np.ndarray, mesh: np.ndarray) -> MeshSource:
    """Cut the source face out of `image` (with its mesh in image pixels) and triangulate it."""
    xy = mesh[:, :2].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    pad = 0.1 * (hi - lo).max() + 4
    h, w = image.shape[:2]
    x0, y0 = int(max(0, np.floor(lo[0] - pad))), int(max(0, np.floor(lo[1] - pad)))
    x1, y1 = int(min(w, np.ceil(hi[0] + pad))), int(min(h, np.ceil(hi[1] + pad)))
    texture = np.ascontiguousarray(image[y0:y1, x0:x1])
    points = (xy - (x0, y0)).astype(np.float32)
    tri = triangulate(mesh)
    usable = (_facing(mesh, tri) >= EDGE_ON) & (_signed_area(points, tri) > 0.05)
    return MeshSource(texture, points, tri, usable)


@dataclass(frozen=True)
class MeshSwapOutput:
    """The swapped face in a square crop: `crop` (BGR), `matrix` (frame -> crop: scale and shift), `mask` (0..1)."""

    crop: np.ndarray
    matrix: np.ndarray
    mask: np.ndarray


def _crop_geometry(mesh_xy: np.ndarray) -> tuple[np.ndarray, int]:
    """The frame -> crop matrix (a scale and a shift) and the crop's side for a target face.

    The crop is a square CROP_SCALE times the mesh's extent, at a scale where the face is at most
    WORK_FACE pixels wide: the source texture has no more detail than that, and the work per face
    stays bounded however large the face is in the frame.
    """
    lo, hi = mesh_xy.min(0), mesh_xy.max(0)
    extent = float((hi - lo).max())
    scale = min(1.0, WORK_FACE / max(extent, 1.0))
    side = int(np.ceil(extent * CROP_SCALE * scale)) + 2
    cx, cy = (lo + hi) / 2
    m = np.array([[scale, 0.0, side / 2 - cx * scale], [0.0, scale, side / 2 - cy * scale]], np.float64)
    return m, side


def _affines(dst: np.ndarray, src: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(T, 2, 3) affine maps sending each triangle of `dst` onto the same triangle of `src`.

    In closed form (the inverse of each triangle's [x, y, 1] matrix by its adjugate): a batched
    solve costs more than the whole map for a few hundred 3 x 3 systems. Degenerate triangles get 0.
    """
    d = dst[tri]  # (T, 3, 2)
    s = src[tri]
    x, y = d[..., 0], d[..., 1]
    # adjugate rows of [[x0, y0, 1], [x1, y1, 1], [x2, y2, 1]] (its inverse is adj / det)
    ax = y[:, [1, 2, 0]] - y[:, [2, 0, 1]]  # coefficient of x in the barycentric weights
    ay = x[:, [2, 0, 1]] - x[:, [1, 2, 0]]
    a1 = x[:, [1, 2, 0]] * y[:, [2, 0, 1]] - x[:, [2, 0, 1]] * y[:, [1, 2, 0]]
    det = a1.sum(axis=1)
    ok = np.abs(det) > 1e-9
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None]
    # weight_i(p) = (ax_i * px + ay_i * py + a1_i) / det; the map is sum_i weight_i * src_i
    w = np.stack([ax, ay, a1], axis=2) * inv[:, :, None]  # (T, 3 vertices, 3 coefficients)
    return np.einsum("tvc,tvk->tkc", w, s)


def _brow_cut(xy: np.ndarray, side: int) -> np.ndarray:
    """1 below a line just above the brows (across the face's own up direction), 0 above it."""
    up = xy[topo.FOREHEAD_TOP] - xy[topo.CHIN]
    up = up / (np.linalg.norm(up) + 1e-9)
    brows = xy[list(topo.RIGHT_BROW_TOP + topo.LEFT_BROW_TOP)]
    eyes = xy[list(topo.RIGHT_EYE + topo.LEFT_EYE)]
    height = float(np.mean(brows @ up) - np.mean(eyes @ up))
    level = float(np.max(brows @ up)) + BROW_MARGIN * max(height, 1.0)
    # the half plane {p: p . up <= level}, as a polygon far larger than the crop
    across = np.array([-up[1], up[0]])
    base = up * level
    big = 4.0 * side
    poly = np.array([base + across * big, base - across * big, base - across * big - up * big,
                     base + across * big - up * big])
    out = np.zeros((side, side), np.uint8)
    cv2.fillConvexPoly(out, np.round(poly * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    return out


def _lab_match(src: np.ndarray, dst: np.ndarray, core: np.ndarray) -> np.ndarray:
    """`src` with its Lab mean and spread inside `core` moved to those of `dst` there."""
    sel = core.astype(bool)
    if sel.sum() < 16:
        return src
    s_px = cv2.cvtColor(src[sel][None], cv2.COLOR_BGR2LAB)[0].astype(np.float32)
    d_px = cv2.cvtColor(dst[sel][None], cv2.COLOR_BGR2LAB)[0].astype(np.float32)
    sm, ss = s_px.mean(0), s_px.std(0) + 1e-3
    dm, ds = d_px.mean(0), d_px.std(0) + 1e-3
    ratio = np.clip(ds / ss, 0.5, 2.0)
    lab = cv2.cvtColor(src, cv2.COLOR_BGR2LAB).astype(np.float32)
    out = (lab - sm) * ratio + dm
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


# OpenCV's BGR -> YCrCb (without the +128 offsets, which cancel in a mean/spread transfer)
_YCC = np.array([[0.114, 0.587, 0.299], [-0.0813, -0.4187, 0.5], [0.5, -0.3313, -0.1687]], np.float64)
_YCC_INV = np.linalg.inv(_YCC)


def _ycc_moments(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (+1e-3) in YCrCb of (N, 3) BGR pixels, from their BGR mean and covariance
    (one matrix product instead of converting every pixel)."""
    x = px.astype(np.float64)
    mean = x.mean(0)
    cov = x.T @ x / len(x) - np.outer(mean, mean)
    var = np.einsum("ij,jk,ik->i", _YCC, cov, _YCC)
    return _YCC @ mean, np.sqrt(np.maximum(var, 0.0)) + 1e-3


def _ycc_match(src: np.ndarray, dst: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Like `_lab_match` in YCrCb, which is linear in BGR: the whole transfer is one 3x4 matrix
    applied with `cv2.transform` (video: about a tenth of the Lab round trip's cost)."""
    sel = core.astype(bool)
    if sel.sum() < 16:
        return src
    sm, ss = _ycc_moments(src[sel])
    dm, ds = _ycc_moments(dst[sel])
    ratio = np.clip(ds / ss, 0.5, 2.0)
    a = _YCC_INV @ np.diag(ratio) @ _YCC
    b = _YCC_INV @ (dm - ratio * sm)
    return cv2.transform(src, np.hstack([a, b[:, None]]).astype(np.float32))


def _shade_match(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """`src` times the ratio of the two images' low frequencies inside `mask` (a cheap stand-in for
    Poisson blending: the target's local light and skin tone, the source's detail). The low
    frequencies are taken at an eighth of the size (they have no detail to lose)."""
    h, w = mask.shape
    f = 8
    small = (max(1, w // f), max(1, h // f))
    m = cv2.resize(mask.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    s_small = cv2.resize(src, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    d_small = cv2.resize(dst, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    sg = max(0.8, sigma / f)
    wm = cv2.GaussianBlur(m, (0, 0), sg) + 1e-3
    low_s = cv2.GaussianBlur(s_small * m[..., None], (0, 0), sg) / wm[..., None]
    low_d = cv2.GaussianBlur(d_small * m[..., None], (0, 0), sg) / wm[..., None]
    ratio = np.clip((low_d + 1.0) / (low_s + 1.0), 0.6, 1.6)
    ratio = cv2.resize(ratio, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(src.astype(np.float32) * ratio, 0, 255).astype(np.uint8)


def mesh_swap(frame: np.ndarray, target_mesh: np.ndarray, source: MeshSource,
              blend: str = "poisson") -> MeshSwapOutput | None:
    """Swap `source` onto the face whose mesh is `target_mesh` (image pixels); `frame` is not modified.

    Returns None when no triangle can be drawn (the face is seen edge-on or lies outside the frame).
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}")
    m, side = _crop_geometry(target_mesh[:, :2])
    dst = target_mesh[:, :2].astype(np.float64) @ m[:, :2].T + m[:, 2]
    tri = source.triangles[source.usable]
    if not len(tri):
        return None
    # which triangle covers each crop pixel (0: none), drawn far to near (FaceMesh z grows away),
    # so where the target turns away its near side covers the far one
    ids = np.zeros((side, side), np.float32)
    order = np.argsort(-target_mesh[tri, 2].mean(axis=1))
    corners = np.round(dst * 16).astype(np.int32)[tri[order]]
    fill = cv2.fillConvexPoly
    for poly, k in zip(list(corners), (order + 1).astype(np.float64).tolist(), strict=True):
        fill(ids, poly, k, cv2.LINE_8, 4)
    hull = np.zeros((side, side), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(dst).astype(np.int32)), 1)
    # pixels of the hull that no usable triangle covers (the source showed them edge-on) take the
    # mapping of the nearest triangle: the texture continues instead of leaving a hole
    holes = (ids == 0) & (hull > 0)
    kernel = np.ones((5, 5), np.uint8)
    for _ in range(64):
        if not holes.any():
            break
        grown = cv2.dilate(ids, kernel)
        ids[holes] = grown[holes]
        holes = (ids == 0) & (hull > 0)
    ids = ids.astype(np.int32)
    inside = (ids > 0) & (hull > 0)
    if not inside.any():
        return None
    aff = _affines(dst, source.points.astype(np.float64), tri)
    ys, xs = np.nonzero(inside)
    a = aff[ids[ys, xs] - 1]
    map_x = np.zeros((side, side), np.float32)
    map_y = np.zeros((side, side), np.float32)
    map_x[ys, xs] = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
    map_y[ys, xs] = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
    warped = cv2.remap(source.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    target = cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)

    # the face's outline (the hull of the mesh: it holds the nose of a turned head) drawn a little
    # inside itself, so that hair the source has along its cheeks stays out
    outline = cv2.convexHull(dst.astype(np.float32))[:, 0, :]
    centre = outline.mean(0)
    inset = np.zeros((side, side), np.uint8)
    cv2.fillPoly(inset, [np.round(centre + (outline - centre) * OVAL_INSET).astype(np.int32)], 1)
    mask = inside.astype(np.uint8) & inset & _brow_cut(dst.astype(np.float32), side)
    mouth = np.zeros_like(mask)
    cv2.fillPoly(mouth, [np.round(dst[_LIPS_INNER]).astype(np.int32)], 1)
    mask &= 1 - mouth  # the target's own mouth opening (teeth, tongue) stays
    face_px = float(np.ptp(dst[:, 0]))
    erode = max(1, int(face_px * 0.03))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1)))
    if mask.sum() < 16:
        return None
    core = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * erode + 1, 4 * erode + 1)))
    match = _lab_match if blend == "poisson" else _ycc_match
    warped = match(warped, target, core if core.sum() >= 16 else mask)

    feather = max(1.0, face_px * 0.04)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), feather)
    soft = np.clip((soft - 0.5) * 2.0, 0.0, 1.0)  # 0 at the hull's edge, 1 a feather width inside
    if blend == "feather":
        warped = _shade_match(warped, target, mask, max(2.0, face_px * 0.08))
    else:
        bx, by, bw, bh = cv2.boundingRect(mask)
        if bw > 4 and bh > 4 and bx > 0 and by > 0 and bx + bw < side and by + bh < side:
            centre = (bx + bw // 2, by + bh // 2)
            with contextlib.suppress(cv2.error):  # a degenerate mask keeps the colour-matched texture
                warped = cv2.seamlessClone(warped, target, mask * 255, centre, cv2.NORMAL_CLONE)
            soft = np.maximum(soft, cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0) * mask)
    return MeshSwapOutput(np.ascontiguousarray(warped), m.astype(np.float32), soft.astype(np.float32))
