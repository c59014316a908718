"""The animation rig: what ``Avatar.animate`` needs per frame, precomputed once per avatar.

The static texels are bound once (canonical pose, fitted expression) and baked; the dynamic texels
keep what binding them to the deformed mesh needs each frame (their triangles' vertices, the
expression basis rows, neutral edges, UV frame coefficients) in the order the exported graph
relies on (``dynamic_texel_order``). Every Gaussian's scale is capped at ``scale_cap``.

Shapes: T texels, Ts static, Td dynamic, Vd dynamic vertices, U their triangles, E expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from ..gaussians import GaussianMaps, Gaussians, bind_frames, stretch_log_scale, triangle_area2
from ..headmodel.base import HeadModel
from ..nets.decoders import AvatarDecoders, residual_to_maps
from ..uv import Atlas, edges_with_motion, face_frames, uv_frame_coefficients
from .lids import LidClosing, lid_closing
from .options import AvatarOptions
from .texels import texel_spacing

ORBIT_REGIONS = ("face", "head_neck")  # regions whose vertices define the head's centre and size
STILL_BASIS_M = 1e-6  # expression displacements (metres at weight 1) below this are float16 round-off: the rig zeroes them
LINEARITY_TOLERANCE_M = 1e-5  # rig vertices vs HeadModel.deform (float32 rounding of the blendshape sums)


def still_basis(expression_basis: Tensor) -> Tensor:
    """expression_basis [E, V, 3] (metres per unit weight) with every displacement shorter than
    ``STILL_BASIS_M`` set to zero: the rig's basis (``AnimationRig.expression_basis``).

    Why: the head model's basis is stored as float16 (``sega.headmodel.cache``), and its rounding leaves
    sub-micrometre displacements on vertices an expression does not move (a jawOpen that moves the
    scalp by 0.1 um). Zeroing them changes no vertex by more than ``STILL_BASIS_M`` times the sum of
    the weights, and makes 7% fewer dynamic texels moving and the per-frame expression MatMul sparser.
    """
    still = expression_basis.norm(dim=-1, keepdim=True) < STILL_BASIS_M
    return torch.where(still, torch.zeros((), dtype=expression_basis.dtype, device=expression_basis.device), expression_basis)


def _vertex_moves(expression_basis: Tensor) -> np.ndarray:
    """expression_basis: [E, V, 3] -> [V] bool: some expression moves the vertex (a non-zero basis row)."""
    return (expression_basis != 0).any(-1).any(0).cpu().numpy()


def scale_cap(options: AvatarOptions, spacing: np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """Tensor  # [T, 1] the log-scale cap of each texel: log(max_scale_texels * spacing); spacing [T] metres;
    on ``device`` (None: torch's default)."""
    return torch.log(options.max_scale_texels * torch.as_tensor(np.asarray(spacing), dtype=torch.float32, device=device))[:, None]


def dynamic_texel_order(atlas: Atlas, dynamic: np.ndarray, expression_basis: Tensor) -> tuple[np.ndarray, int]:
    """The order of the dynamic texels in the rig (and in the exported per-frame graph's outputs).

    dynamic: [Td] texel ids; expression_basis: [E, V, 3]. Returns (the same ids reordered, the number
    of moving ones, which come first):
    1. *moving* texels (on a triangle with a vertex some expression moves), and among them first one
       texel per triangle, in increasing triangle id, then the other moving texels;
    2. the texels whose triangle never moves (only the dynamic branch's residuals change them).
    Why: the exported graph (``export.graphs.DynamicBranchGraph``) then reads per-triangle quantities
    of the first texels without a gather, and gives the never-moving ones constant frames; the order
    changes nothing else (every consumer goes through ``AnimationRig.dynamic_index``).
    """
    moves = _vertex_moves(expression_basis)[atlas.texel_triangles[dynamic]].any(1)
    moving, still = dynamic[moves], dynamic[~moves]
    _, first = np.unique(atlas.texel_face[moving], return_index=True)  # sorted by triangle id
    rest = np.setdiff1d(np.arange(moving.size), first, assume_unique=True)
    return np.concatenate([moving[first], moving[rest], still]), int(moving.size)


@dataclass(frozen=True, eq=False)
class AnimationRig:
    """Everything ``Avatar.animate`` needs, precomputed once per avatar (``Avatar.precompute``).

    Only the vertices of dynamic texels' triangles (Vd of them) are deformed per frame.
    """

    static: Gaussians  # Ts + H canonical (unposed) Gaussians: the static texels', then the H hair Gaussians
    static_index: Tensor  # [Ts] int64 texel ids of the first Ts static Gaussians (the hair ones follow, bound to no texel)
    dynamic_index: Tensor  # [Td] int64 texel ids of the dynamic Gaussians
    num_moving: int  # the first num_moving dynamic texels lie on triangles some expression moves, one per triangle first
    # (``dynamic_texel_order``); the rest never move
    dynamic_maps: GaussianMaps  # Td rows of the avatar's maps
    texel_scale_cap: Tensor  # [T, 1] log-scale cap of every texel (``scale_cap``; the static ones are baked capped)
    dynamic_scale_cap: Tensor  # [Td, 1] its rows of the dynamic texels, applied after the residuals each frame
    base_vertices: Tensor  # [Vd, 3] template + identity offsets of the dynamic vertices
    expression_basis: Tensor  # [E, Vd * 3] expression basis rows of the dynamic vertices (``still_basis``)
    faces: Tensor  # [U, 3] int64 used triangles of the dynamic texels, indices into the Vd vertices
    face_edges: Tensor  # [U, 2, 3] neutral edges p1 - p0, p2 - p0 (metres; float64 differences, rounded once)
    face_uv_coeffs: Tensor  # [U, 2] ``sega.uv.uv_frame_coefficients`` of their atlas UVs (frames follow the atlas
    # parameterisation; float64, rounded once)
    face_uv_ok: Tensor  # [U] bool: non-degenerate UVs
    face_rest_area2: Tensor  # [U] twice each triangle's area at the fitted expression (``sega.gaussians.stretch_log_scale``)
    texel_face: Tensor  # [Td] int64 index into ``faces``
    texel_tri: Tensor  # [Td, 3] int64 vertex ids (into Vd) of each dynamic texel's triangle
    texel_bary: Tensor  # [Td, 3] barycentrics
    pivot: Tensor  # [3] head-pose pivot
    head_centre: np.ndarray  # [3] centre of the head (fitted shape), for framing orbit cameras
    head_radius: float  # metres, radius of the head's bounding sphere around head_centre
    num_hair: int = 0  # H: hair Gaussians at the end of ``static`` (``sega.avatar.build.hair``)
    max_stretch: float = 1.0  # ``AvatarOptions.max_stretch``: the dynamic splats' growth with their triangles (1: none)
    lid_closing: LidClosing | None = None  # the lids' colour as the eyes close (``sega.avatar.lids``; None: unchanged)

    @property
    def num_gaussians(self) -> int:
        return len(self.static) + int(self.dynamic_index.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the rig's tensors live (``Avatar.animate`` computes there)."""
        return self.base_vertices.device

    def dynamic_maps_at(self, maps: GaussianMaps, e1: Tensor, e2: Tensor, expression: Tensor) -> GaussianMaps:
        """The dynamic texels' maps as bound for one frame (or [F] frames): scales capped (``dynamic_scale_cap``),
        then grown with their triangles' stretch (``stretch_log_scale``); the lids' colours moved towards their
        closed colours as the eyes close (``lid_closing``). maps: Td rows ([F, Td] with residuals per frame);
        e1, e2: Tensor  # [..., U, 3] the triangles' edges now; expression: Tensor  # [..., E] the weights now."""
        out = maps.with_scale_cap(self.dynamic_scale_cap)
        if self.max_stretch > 1.0:
            out = out.with_log_scale_added(stretch_log_scale(e1, e2, self.face_rest_area2, self.max_stretch)[..., self.texel_face, None])
        if self.lid_closing is not None:
            out = out.with_color_added(self.lid_closing.colour_change(expression))
        return out

    def to(self, device: torch.device | str) -> AnimationRig:
        """The same rig with every tensor on ``device`` (self when they are there already). Moving is exact:
        a rig precomputed on one device animates on another with the same numbers."""
        if torch.device(device) == self.device:
            return self
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        closing = None if self.lid_closing is None else self.lid_closing.to(device)
        return replace(self, static=Gaussians(**{k: v.to(device) for k, v in self.static.tensors().items()}),
                       dynamic_maps=self.dynamic_maps.map(lambda t: t.to(device)), lid_closing=closing, **moved)  # fmt: skip


def build_rig(
    head_model: HeadModel,
    atlas: Atlas,
    identity: np.ndarray,
    expression: np.ndarray,
    maps: GaussianMaps,
    static_mask: np.ndarray,
    options: AvatarOptions,
    decoders: AvatarDecoders | None,
    vertices: Tensor,
    hair: Gaussians | None = None,
) -> AnimationRig:
    """The ``AnimationRig`` of an avatar (``Avatar.precompute``): bind the static texels once (canonical
    pose, fitted expression; the static decoder's residuals baked in, scales capped) and gather what
    the dynamic texels need per frame.

    identity [I], expression [E] (the fitted rest face), maps (T rows), static_mask [T] bool;
    vertices: Tensor  # [V, 3] the mesh at ``expression`` (``HeadModel.deform``). The per-frame path
    deforms vertices linearly (template + identity + expression blendshapes), which is
    ``HeadModel.deform`` for ICT and for FLAME with zero joint rotations; this is checked here.
    ``decoders`` (if any) get their texel UVs set. The rig is made where ``maps`` live (with ``vertices``,
    ``hair`` and the decoders there too); the numpy bookkeeping (texel order, local vertex numbering) runs on the CPU.
    """
    dev = maps.offset.device  # the rig lives where the maps do (``Avatar.device``)

    def on(a, dtype: torch.dtype | None = None) -> Tensor:
        return torch.as_tensor(a, dtype=dtype, device=dev)

    buf = head_model.torch_buffers(dev)
    sta = np.flatnonzero(static_mask)
    raw_basis = buf.expression_basis.reshape(head_model.num_expressions, -1, 3)  # [E, V, 3]
    basis = still_basis(raw_basis)
    dyn, num_moving = dynamic_texel_order(atlas, np.flatnonzero(~static_mask), basis)
    verts = vertices  # [V, 3] fitted expression
    vnp = verts.detach().cpu().numpy()
    cap = scale_cap(options, texel_spacing(atlas, vnp), dev)  # [T, 1]
    static_maps = maps.subset(sta)
    fitted_colors = maps.color.detach().clone()  # [T, 3] as bound at the fitted expression (for the lids' closed colours)
    if decoders is not None:
        texel_uv = atlas.texel_uv
        decoders.dynamic.set_texel_uv(texel_uv[dyn])
        decoders.static.set_texel_uv(texel_uv[sta])
        with torch.no_grad():  # the static branch runs once per avatar: bake its residuals in
            static_maps = static_maps.add(residual_to_maps(decoders.static()))
            fitted_colors[on(sta)] = static_maps.color
            fitted = on(expression, torch.float32)[None]
            fitted_colors[on(dyn)] += residual_to_maps(decoders.dynamic(decoders.encoder(fitted))[0]).color
    closing = None
    if options.closing_lid_skin:
        points = atlas.texel_points(verts.detach().cpu()).numpy()  # [T, 3] fitted shape
        closing = lid_closing(head_model, atlas, expression, fitted_colors.cpu().numpy(), points, dyn, dev)
    static_maps = static_maps.with_scale_cap(cap[on(sta)])
    with torch.no_grad():
        tri = on(atlas.texel_triangles[sta])
        bary = on(atlas.texel_bary[sta])
        pts = (verts[tri] * bary[..., None]).sum(1)
        used, inv = np.unique(atlas.texel_face[sta], return_inverse=True)
        frames = face_frames(verts, atlas.faces[used], atlas.face_atlas_uvs[used])[on(inv.reshape(-1))]
        static = bind_frames(static_maps, pts, frames).detach()
    # Dynamic part: local vertex numbering over the vertices their triangles use.
    dyn_faces_global, face_inv = np.unique(atlas.texel_face[dyn], return_inverse=True)
    dyn_tris = atlas.faces[dyn_faces_global]  # [U, 3]
    vids, local = np.unique(dyn_tris.reshape(-1), return_inverse=True)
    local = local.reshape(-1, 3)
    base64 = (buf.vertices.double() + (on(identity, torch.float64) @ buf.identity_basis.double()).reshape(-1, 3))[on(vids)]
    base = base64.float()
    # Neutral edges and UV coefficients in float64, rounded once (see ``sega.uv.frames_from_edges``).
    corners = base64[on(local)]  # [U, 3, 3]
    face_edges = torch.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], 1).float()  # [U, 2, 3]
    uv_coeffs, uv_ok = uv_frame_coefficients(on(atlas.face_atlas_uvs[dyn_faces_global], torch.float64))
    ebasis = basis[:, on(vids)].reshape(head_model.num_expressions, -1)
    fitted_motion = (on(expression, torch.float32) @ ebasis).reshape(-1, 3)  # [Vd, 3], as ``Avatar.animate``
    rest_area2 = triangle_area2(*edges_with_motion(face_edges, fitted_motion[on(local)]))  # [U]
    face_inv = face_inv.reshape(-1)
    raw = raw_basis[:, on(vids)].reshape(head_model.num_expressions, -1)
    linear = base + (on(expression, torch.float32) @ raw).reshape(-1, 3)
    if not torch.allclose(linear, verts[on(vids)], atol=LINEARITY_TOLERANCE_M):
        raise NotImplementedError(f"head head_model {head_model.name!r} does not deform linearly; the animation rig needs blendshapes")
    regions = [r for r in ORBIT_REGIONS if r in head_model.region_names]
    head = vnp[head_model.region_vertex_mask(*regions)] if regions else vnp
    centre = (head.min(0) + head.max(0)) / 2
    if hair is not None:
        static = Gaussians.cat([static, hair.detach()])
    return AnimationRig(
        static=static,
        static_index=on(sta, torch.int64),
        dynamic_index=on(dyn, torch.int64),
        num_moving=num_moving,
        dynamic_maps=maps.subset(dyn).detach(),
        texel_scale_cap=cap,
        dynamic_scale_cap=cap[on(dyn)].contiguous(),
        base_vertices=base.contiguous(),
        expression_basis=ebasis.contiguous(),
        faces=on(local, torch.int64),
        face_edges=face_edges,
        face_uv_coeffs=uv_coeffs.float(),
        face_uv_ok=uv_ok,
        face_rest_area2=rest_area2.contiguous(),
        texel_face=on(face_inv, torch.int64),
        texel_tri=on(local[face_inv], torch.int64),
        texel_bary=on(atlas.texel_bary[dyn], torch.float32),
        pivot=on(head_model.pivot, torch.float32),
        head_centre=centre.astype(np.float64),
        head_radius=float(np.linalg.norm(head - centre, axis=1).max()),
        num_hair=0 if hair is None else len(hair),
        max_stretch=float(options.max_stretch),
        lid_closing=closing,
    )
