"""Face mapping (`--face-map REFERENCE=SOURCE`) and the identity report of several source images.

Each target face is matched to the nearest reference face (cosine distance of recognizer
embeddings under the threshold) and gets that reference's source; unmatched faces stay untouched.
In video the match is made per track from the track's averaged embedding and then holds for the
track's life, so a face never changes identity between frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sealfuse.engine.errors import ConfigError
from sealfuse.engine.face import Face
from sealfuse.engine.swappers import Source
from sealfuse.engine.track import iou


def parse_face_map(items: list[str] | tuple[str, ...]) -> tuple[tuple[Path, Path], ...]:
    """'REFERENCE=SOURCE' strings -> ((reference, source), ...); a malformed item is a ConfigError."""
    out = []
    for item in items:
        ref, sep, src = item.partition("=")
        if not sep or not ref.strip() or not src.strip():
            raise ConfigError(f"--face-map {item!r}: give REFERENCE=SOURCE (two image paths)", face_map=item)
        out.append((Path(ref.strip()), Path(src.strip())))
    return tuple(out)


@dataclass
class Mapping:
    """One reference face and the source its matches get."""

    index: int
    reference_path: str
    source_path: str
    reference: Face  # with its embedding
    source: Source
    identity: Any  # the swapper's prepared identity for `source`

    @property
    def normed(self) -> np.ndarray:
        emb = self.reference.normed_embedding
        assert emb is not None
        return emb


def nearest(mappings: list[Mapping], normed: np.ndarray) -> tuple[int, float]:
    """(index of the nearest reference, its cosine distance)."""
    dists = [1.0 - float(np.dot(m.normed, normed)) for m in mappings]
    best = int(np.argmin(dists))
    return best, dists[best]


def consistency(faces: tuple[Face, ...]) -> dict[str, Any]:
    """How alike the faces of several source images are: pairwise cosine similarity of their embeddings."""
    embs = [f.normed_embedding for f in faces if f.embedding is not None]
    if len(embs) < 2:
        return {"images": len(faces), "embedded": len(embs)}
    m = np.stack(embs) @ np.stack(embs).T
    pairs = [float(m[i, j]) for i in range(len(embs)) for j in range(i + 1, len(embs))]
    return {"images": len(faces), "embedded": len(embs),
            "pairwise_cosine": [[round(float(v), 4) for v in row] for row in m],
            "min_cosine": round(min(pairs), 4), "mean_cosine": round(float(np.mean(pairs)), 4)}


@dataclass
class _TrackState:
    total: np.ndarray | None = None
    observations: int = 0
    assigned: int | None = None
    distance: float | None = None


@dataclass
class TrackMapper:
    """Per-track face mapping for video, with the `choose` call of `track.TrackSelector`.

    At detect frames the faces that overlap no other face are embedded; each unassigned track's
    embeddings are averaged and matched to the nearest reference. Once matched, a track keeps its
    source until it ends. Faces of unmatched tracks are not returned (they stay untouched).
    """

    mappings: list[Mapping]
    embed: Callable[[np.ndarray, list[Face]], list[Face]]
    threshold: float
    tracks: dict[int, _TrackState] = field(default_factory=dict)

    def choose(self, faces: list[Face], frame: np.ndarray, *, detect_frame: bool, alive: set[int]) -> list[Face]:
        for f in faces:
            if f.track_id is not None:
                self.tracks.setdefault(f.track_id, _TrackState())
        if detect_frame and faces:
            clear = [f for f in faces if f.track_id is not None
                     and all(g is f or iou(f.bbox, g.bbox) == 0.0 for g in faces)]
            todo = [f for f in clear if self.tracks[f.track_id].assigned is None]  # type: ignore[index]
            for f in self.embed(frame, todo) if todo else []:
                st = self.tracks[f.track_id]  # type: ignore[index]
                normed = f.normed_embedding
                assert normed is not None
                st.total = normed if st.total is None else st.total + normed
                st.observations += 1
                best, dist = nearest(self.mappings, st.total / (np.linalg.norm(st.total) + 1e-12))
                st.distance = dist
                if dist < self.threshold:
                    st.assigned = best
        picked = []
        for f in faces:
            st = self.tracks.get(f.track_id) if f.track_id is not None else None
            if st is not None and st.assigned is not None:
                picked.append(f.with_(source_id=st.assigned))
        return sorted(picked, key=lambda f: float(f.bbox[0]))

    def report(self) -> list[dict[str, Any]]:
        rows = []
        for tid, st in sorted(self.tracks.items()):
            m = self.mappings[st.assigned] if st.assigned is not None else None
            rows.append({"track_id": tid, "source": m.source_path if m else None,
                         "reference": m.reference_path if m else None,
                         "distance": None if st.distance is None else round(st.distance, 4),
                         "observations": st.observations})
        return rows
