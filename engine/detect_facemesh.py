"""FaceMesh 468 (Google, Apache-2.0) on LiteRT: a dense mesh for every detected face, and its five points.

For each face a square, eye-levelled region of interest (1.5x the face) is cut out at 192x192;
the model returns 468 points (x, y in pixels, z in the same scale, relative depth). A second pass
on the region the first mesh spans refines it. The five alignment points (eye centres, nose tip,
mouth corners) come from the mesh.
"""

from __future__ import annotations

import cv2
import numpy as np

from sealfuse.engine import mesh_topology as topo
from sealfuse.engine.face import Face
from sealfuse.engine.tflite import TFLiteModel

__all__ = ["FaceMesher", "five_points_from_mesh"]

INPUT = 192
ROI_SCALE = 1.5
MIN_PRESENCE = 0.5
_R_EYE, _L_EYE = np.array(topo.RIGHT_EYE), np.array(topo.LEFT_EYE)


def five_points_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """Image-left eye centre, image-right eye centre, nose tip, image-left and image-right mouth corner."""
    xy = mesh[:, :2]
    return np.stack([xy[_R_EYE].mean(0), xy[_L_EYE].mean(0), xy[topo.NOSE_TIP],
                     xy[topo.MOUTH_RIGHT], xy[topo.MOUTH_LEFT]]).astype(np.float32)


def _roi_matrix(centre: np.ndarray, size: float, angle: float) -> np.ndarray:
    """2x3 affine: image -> INPUT x INPUT crop of a square of `size` px at `centre`, rotated by `angle` (rad)."""
    s = INPUT / max(size, 1e-3)
    c, si = np.cos(angle) * s, np.sin(angle) * s
    # rotate the image by -angle about the centre, so the face's eye line becomes horizontal
    m = np.array([[c, si, 0.0], [-si, c, 0.0]], np.float64)
    m[:, 2] = INPUT / 2 - m[:, :2] @ centre
    return m


class FaceMesher:
    """Adds the 468-point mesh (and mesh-derived five points) to detected faces."""

    def __init__(self, model: TFLiteModel, passes: int = 2) -> None:
        self.model = model
        self.passes = passes

    def _mesh(self, bgr: np.ndarray, centre: np.ndarray, size: float, angle: float) -> tuple[np.ndarray, float]:
        m = _roi_matrix(centre, size, angle)
        crop = cv2.warpAffine(bgr, m, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        rgb = crop[:, :, ::-1].astype(np.float32)  # only the 192x192 crop changes channel order
        raw = self.model.run(rgb[None] * np.float32(1.0 / 255.0))
        pts = next(r for r in raw if r.size == 1404).reshape(468, 3).astype(np.float64)
        logit = float(next(r for r in raw if r.size == 1).ravel()[0])
        presence = 1.0 / (1.0 + np.exp(-np.clip(logit, -80.0, 80.0)))
        im = cv2.invertAffineTransform(m)
        xy = pts[:, :2] @ im[:, :2].T + im[:, 2]
        z = pts[:, 2] * (size / INPUT)
        return np.concatenate([xy, z[:, None]], axis=1).astype(np.float32), presence

    @staticmethod
    def roi_from_mesh(mesh: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The region of interest (centre, side, eye-line angle) that a mesh spans, 1.5x enlarged."""
        xy = mesh[:, :2].astype(np.float64)
        d = xy[topo.LEFT_EYE_OUTER] - xy[topo.RIGHT_EYE_OUTER]
        angle = float(np.arctan2(d[1], d[0]))
        c, s = np.cos(-angle), np.sin(-angle)
        rot = np.array([[c, -s], [s, c]])
        r = xy @ rot.T
        lo, hi = r.min(0), r.max(0)
        centre = rot.T @ ((lo + hi) / 2)
        return centre, float((hi - lo).max() * ROI_SCALE), angle

    def refine_one(self, bgr: np.ndarray, face: Face,
                   prior: tuple[np.ndarray, float, float] | None = None) -> Face | None:
        """The face with its mesh and mesh-derived five points, or None when FaceMesh sees no face there.

        `prior` (a region from the face's mesh in the previous video frame) allows one pass instead
        of two, as MediaPipe tracks; when FaceMesh does not confirm the face there, the face's box is used.
        """
        if prior is not None:
            mesh, presence = self._mesh(bgr, *prior)
            if presence >= MIN_PRESENCE:
                return face.with_(mesh=mesh, kps=five_points_from_mesh(mesh))
        kps = face.kps.astype(np.float64)
        d = kps[1] - kps[0]
        angle = float(np.arctan2(d[1], d[0]))
        x1, y1, x2, y2 = face.bbox.astype(np.float64)
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        size = max(x2 - x1, y2 - y1) * ROI_SCALE
        mesh, presence = self._mesh(bgr, centre, size, angle)
        for _ in range(self.passes - 1):
            if presence < MIN_PRESENCE:
                break
            mesh, presence = self._mesh(bgr, *self.roi_from_mesh(mesh))
        if presence < MIN_PRESENCE:
            return None
        return face.with_(mesh=mesh, kps=five_points_from_mesh(mesh))

    def refine(self, image_bgr: np.ndarray, faces: list[Face],
               priors: dict[int, tuple[np.ndarray, float, float]] | None = None) -> list[Face]:
        """Each face with its mesh; a face FaceMesh does not confirm keeps its own points and no mesh.

        `priors`: track id -> the region of that track's mesh in the previous frame (video).
        """
        if not faces:
            return []
        out = []
        for f in faces:
            prior = priors.get(f.track_id) if priors and f.track_id is not None else None
            refined = self.refine_one(image_bgr, f, prior)
            out.append(refined if refined is not None else f)
        return out
