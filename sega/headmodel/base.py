"""The ``HeadModel`` interface: a parametric head mesh with named parts.

All arrays follow ``sega.conventions`` (metres, +X subject's left, +Y up, +Z out of
the face). Shapes use gsplat-style comments: V vertices, F triangles, I identity
components, E expression components, L landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Points on the mesh surface given as (triangle, barycentric) pairs."""

    face_ids: np.ndarray  # [L] int64, index into HeadModel.faces
    barycentrics: np.ndarray  # [L, 3] float32, sum to 1
    valid: np.ndarray | None = None  # [L] bool; False where a landmark has no surface point (not used in fitting)

    def __len__(self) -> int:
        return int(self.face_ids.shape[0])

    def points(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """Surface points of ``vertices: [..., V, 3]`` -> ``[..., L, 3]``."""
        fid = torch.as_tensor(self.face_ids, device=vertices.device)
        bary = torch.as_tensor(self.barycentrics, dtype=vertices.dtype, device=vertices.device)
        tri = faces[fid]  # [L, 3]
        corners = vertices[..., tri, :]  # [..., L, 3, 3]
        return (corners * bary[..., None]).sum(-2)


@dataclass(frozen=True)
class HeadModel:
    """A linear (ICT) or articulated (FLAME, via subclass) head model, CPU numpy storage.

    Deformation: ``v = vertices + identity_basis^T id + expression_basis^T expr``,
    then rigid head pose about ``pivot``. Subclasses may override ``deform``.
    """

    name: str  # "ict" or "flame"
    vertices: np.ndarray  # [V, 3] float32, neutral template, metres
    faces: np.ndarray  # [F, 3] int64 triangles (quads split), counter-clockwise seen from outside
    face_uvs: np.ndarray  # [F, 3, 2] float32 per-corner UVs in the model's own UV layout (may span UDIM tiles)
    face_regions: np.ndarray  # [F] int16, index into region_names
    region_names: tuple[str, ...]  # e.g. ("face", "head_neck", "mouth_interior", "teeth", "eyeball_left", ...)
    identity_basis: np.ndarray  # [I, V, 3] float16/32, metres per unit coefficient (prior N(0, 1))
    expression_basis: np.ndarray  # [E, V, 3] float16/32, metres per unit weight
    expression_names: tuple[str, ...]  # [E]; ARKit names for ICT
    symmetry: np.ndarray  # [V] int64, index of each vertex's left<->right mirror partner
    pivot: np.ndarray  # [3] float32, centre of head rotation, metres
    landmarks: dict[str, LandmarkEmbedding] = field(default_factory=dict)  # e.g. "mediapipe478", "ibug68"
    expression_range: tuple[float, float] = (0.0, 1.0)  # valid expression weight range
    licence: str = ""  # licence / attribution notice to carry into artefacts
    source: dict = field(default_factory=dict)  # provenance: where the data came from, options used

    # ---- sizes ---------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def num_expressions(self) -> int:
        return int(self.expression_basis.shape[0])

    def region_face_mask(self, *names: str) -> np.ndarray:
        """[F] bool: faces belonging to any of the named regions."""
        unknown = set(names) - set(self.region_names)
        if unknown:
            raise KeyError(f"unknown region(s) {sorted(unknown)}; have {self.region_names}")
        ids = [self.region_names.index(n) for n in names]
        return np.isin(self.face_regions, ids)

    def region_vertex_mask(self, *names: str) -> np.ndarray:
        """[V] bool: vertices used by faces of the named regions."""
        mask = np.zeros(self.num_vertices, dtype=bool)
        mask[self.faces[self.region_face_mask(*names)].reshape(-1)] = True
        return mask

    def expression_index(self, name: str) -> int:
        return self.expression_names.index(name)

    def expression_vector(self, **weights: float) -> np.ndarray:
        """[E] float32 with the named weights set, e.g. ``expression_vector(jawOpen=1.0)``."""
        out = np.zeros(self.num_expressions, dtype=np.float32)
        for k, v in weights.items():
            out[self.expression_index(k)] = v
        return out

    # ---- deformation (torch, differentiable) ----------------------------------
    def torch_buffers(self, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> "HeadModelTensors":
        """The arrays needed for deformation as torch tensors on ``device`` (None: torch's default; build once, reuse)."""
        return HeadModelTensors(
            vertices=torch.as_tensor(self.vertices, dtype=dtype, device=device),
            faces=torch.as_tensor(self.faces, dtype=torch.int64, device=device),
            identity_basis=torch.as_tensor(self.identity_basis, device=device).to(dtype).reshape(self.num_identity, -1),
            expression_basis=torch.as_tensor(self.expression_basis, device=device).to(dtype).reshape(self.num_expressions, -1),
            pivot=torch.as_tensor(self.pivot, dtype=dtype, device=device),
        )

    def deform(self, buffers: "HeadModelTensors", identity: Tensor, expression: Tensor) -> Tensor:
        """Unposed vertices.

        identity: Tensor  # [..., I]
        expression: Tensor  # [..., E]
        returns: Tensor  # [..., V, 3] metres
        """
        offs = identity @ buffers.identity_basis + expression @ buffers.expression_basis  # [..., V*3]
        return buffers.vertices + offs.reshape(*offs.shape[:-1], -1, 3)


@dataclass(frozen=True)
class HeadModelTensors:
    """Torch copies of a HeadModel's deformation arrays (see ``HeadModel.torch_buffers``)."""

    vertices: Tensor  # [V, 3]
    faces: Tensor  # [F, 3] int64
    identity_basis: Tensor  # [I, V*3]
    expression_basis: Tensor  # [E, V*3]
    pivot: Tensor  # [3]
