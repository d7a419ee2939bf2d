"""mesh: the starter swap, DEMO GRADE: the source face's texture warped onto each target's FaceMesh.

No swap model and no recognizer: it needs only the starter FaceMesh (every face the pipeline
detects carries its 468 points). The method is in `engine.mesh_swap`; this file adapts it to the
`Swapper` interface. Identity transfer is partial (the face shape stays the target's), profiles
and large pose differences smear, and occluders (hands, hair) are painted over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sealfuse.engine.errors import NoFaceInSourceError
from sealfuse.engine.face import Face
from sealfuse.engine.mesh_swap import MeshSource, mesh_swap, prepare_source
from sealfuse.engine.swappers.base import Source, Swapper, SwapResult

if TYPE_CHECKING:
    from sealfuse.engine.registry import ModelRegistry

MESHER = "facemesh_468"


@dataclass(frozen=True)
class MeshIdentity:
    source: MeshSource
    blend: str = "poisson"  # "feather" in video: a tenth of the cost, no visible seam at video sizes


class MeshSwapper(Swapper):
    family = "mesh"
    needs_embedding = False
    # catalog models the pipeline must run for this family (FaceMesh on every face)
    needs_models = (MESHER,)

    def __init__(self, name: str = "mesh") -> None:
        super().__init__(name)

    @classmethod
    def model_names(cls) -> tuple[str, ...]:
        return ("mesh",)

    @classmethod
    def load(cls, name: str, registry: ModelRegistry) -> MeshSwapper:
        registry.resolve(MESHER)  # a missing or altered FaceMesh is the usual model error, here
        return cls(name)

    def prepare(self, source: Source) -> MeshIdentity:
        face = source.face
        if face.mesh is None:
            raise NoFaceInSourceError("the mesh swapper needs the source face's FaceMesh points, and FaceMesh "
                                      "did not confirm a face there", role="source")
        return MeshIdentity(prepare_source(source.image, face.mesh))

    def for_video(self, identity: MeshIdentity) -> MeshIdentity:
        """The identity for streaming: feathered blend with a low-frequency shade match, not Poisson."""
        return replace(identity, blend="feather")

    def swap(self, frame: np.ndarray, target: Face, identity: Any) -> SwapResult:
        ident: MeshIdentity = identity
        out = mesh_swap(frame, target.mesh, ident.source, ident.blend) if target.mesh is not None else None
        if out is None:
            # no mesh for this face, or it is seen edge-on: leave it as it is
            crop = np.zeros((8, 8, 3), np.uint8)
            x1, y1 = float(target.bbox[0]), float(target.bbox[1])
            return SwapResult(crop, np.array([[1, 0, -x1], [0, 1, -y1]], np.float32), np.zeros((8, 8), np.float32))
        return SwapResult(out.crop, out.matrix, out.mask)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "blend": "poisson (images), feather (video)"}
