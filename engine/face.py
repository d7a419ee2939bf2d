"""A detected face: box, five landmarks, score, and (when computed) its 468-point mesh and embedding."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Face:
    bbox: np.ndarray  # float32 (4,): x1, y1, x2, y2 in image pixels
    kps: np.ndarray  # float32 (5, 2): image-left eye, image-right eye, nose, left and right mouth corner
    score: float
    embedding: np.ndarray | None = None  # raw recognizer output (512,), when computed
    track_id: int | None = None  # stable id across video frames, when tracked
    mesh: np.ndarray | None = None  # float32 (468, 3): FaceMesh x, y in image pixels, z relative depth (same scale)
    source_id: int | None = None  # face mapping: index of the mapped source this face gets, when matched

    @property
    def normed_embedding(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        return self.embedding / (np.linalg.norm(self.embedding) + 1e-12)

    @property
    def size(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    def with_(self, **changes: object) -> Face:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 2) for v in self.bbox],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.kps],
            "score": round(float(self.score), 4),
            **({"track_id": self.track_id} if self.track_id is not None else {}),
        }
