"""The UV atlas that Gaussians are bound to: one Gaussian per covered texel of a square image.

Why an atlas: binding Gaussians to texels of the head mesh's UV space gives every Gaussian a
fixed home on the surface (a triangle and barycentrics), so the avatar is driven by simply
deforming the mesh, and per-Gaussian attributes become images that 2D networks and priors
(symmetry, smoothness) can work on.

Head models do not come with one clean [0, 1]^2 layout. ICT-FaceKit spreads its parts over
several UDIM tiles (u in [0, 7)) and stacks several parts in the *same* tile (the face, both
scleras and both irises all use tile 0, each with its own texture). ``Atlas.build`` therefore:

1. assigns each selected face to the integer UDIM tile of its UV centroid (corners are clamped
   into that tile);
2. splits the faces into UV islands (edge-connected with identical UVs across the edge) and, per
   tile, puts islands that would overlap an earlier island onto a new *layer*;
3. gives each (tile, layer) pair its own square *cell* in one ``resolution`` x ``resolution``
   atlas (tile [0, 1]^2 scaled into the cell inside a gutter of ``padding_texels``), either sized
   for a uniform number of texels per 3D area ("area", default) or all equal in a near-square
   grid ("grid");
4. rasterises the packed triangles in UV space; every texel whose centre is covered becomes one
   texel (triangle id + barycentrics). Uncovered texels near coverage are *not* added, so no
   surface point gets two Gaussians.

Texel centres follow ``sega.conventions``: texel (row r, col c) is at u = (c + 0.5) / R,
v = 1 - (r + 0.5) / R (origin bottom-left, row 0 at the top).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torch import Tensor

from .conventions import pixel_to_uv, uv_to_pixel
from .headmodel.base import HeadModel
from .meshraster import rasterize

ATLAS_FORMAT_VERSION = 1  # bump when the saved layout changes
PACKING_MODES = ("area", "grid")
OVERLAP_TEST_RESOLUTION = 128  # texels per UDIM tile side when testing UV islands for overlap
OVERLAP_TOLERANCE = 0.05  # an island may share this fraction of its test texels with a layer and still join it
MIN_CELL_INTERIOR = 4  # smallest tile interior (texels per side) a cell gets in "area" packing
PACKING_BISECTION_STEPS = 30  # bisection steps for the "area" packing scale
MIN_RESOLUTION = 8  # smallest atlas side accepted
DEGENERATE_UV_DET = 1e-14  # |UV Jacobian determinant| below which a triangle's UVs count as degenerate
FRAME_NORM_EPS = 1e-12  # clamp for vector norms in face_frames


@dataclass(frozen=True)
class AtlasOptions:
    """How an atlas was (or will be) built; stored inside the ``Atlas``."""

    resolution: int = 256  # texels per side of the square atlas
    regions: tuple[str, ...] | None = None  # HeadModel regions whose faces get texels; None = every face
    padding_texels: int = 2  # empty gutter (texels) on every side of each cell so neighbouring cells never touch
    packing: str = "area"  # "area": cell size for uniform texels per 3D area; "grid": equal cells, near-square grid


# ---------------------------------------------------------------------------------------------
# tangent frames (torch, differentiable)
# ---------------------------------------------------------------------------------------------


def face_frames(vertices: Tensor, faces, face_uvs) -> Tensor:
    """Orthonormal per-triangle frames aligned with the UV parameterisation.

    vertices: [..., V, 3] (metres, any float dtype; gradients flow through)
    faces: [F, 3] int (numpy or tensor), counter-clockwise seen from outside
    face_uvs: [F, 3, 2] per-corner UVs (numpy or tensor)
    returns: [..., F, 3, 3] rotation matrices whose *columns* are (tangent, bitangent, normal):
        normal    n = normalise((p1 - p0) x (p2 - p0)), outward for counter-clockwise faces;
        tangent   t = dP/du (the surface direction of increasing u) projected onto the plane
                  and normalised (Gram-Schmidt). Triangles with degenerate UVs use the
                  direction of edge p0 -> p1 instead;
        bitangent b = n x t. This is the direction of increasing v where the UV map keeps
                  orientation, and of decreasing v on mirrored UV islands.
    det = +1 always (t x b = n). A frame maps local Gaussian coordinates to world:
    x_world = frame @ x_local. (``frames_from_edges`` is the same from edges and UV coefficients.)
    """
    dev, dtype = vertices.device, vertices.dtype
    f = torch.as_tensor(faces, device=dev).long()
    p = vertices[..., f, :]  # [..., F, 3, 3]
    coeffs, ok = uv_frame_coefficients(torch.as_tensor(face_uvs, device=dev).to(dtype))
    return frames_from_edges(p[..., 1, :] - p[..., 0, :], p[..., 2, :] - p[..., 0, :], coeffs, ok)


def uv_frame_coefficients(face_uvs: Tensor) -> tuple[Tensor, Tensor]:
    """face_uvs: [F, 3, 2] -> (coeffs [F, 2], ok [F] bool) for ``frames_from_edges``.

    coeffs = (dv2, dv1) * sign(det) of the corners' UV differences: dP/du * |det| = e1 dv2 - e2 dv1,
    and the sign keeps the +u direction; ok is False where the UVs are degenerate. Compute it in
    float64 for sub-millimetre triangles (their UV differences are ~1e-3, and float32 UVs near 0.5
    leave them 1e-4 relative error)."""
    d1 = face_uvs[:, 1] - face_uvs[:, 0]  # [F, 2]
    d2 = face_uvs[:, 2] - face_uvs[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]  # [F]
    sign = torch.sign(det)
    return torch.stack([d2[:, 1] * sign, d1[:, 1] * sign], -1), det.abs() > DEGENERATE_UV_DET


def edges_with_motion(face_edges: Tensor, corner_motion: Tensor) -> tuple[Tensor, Tensor]:
    """The triangles' edges p1 - p0, p2 - p0 after a motion, as neutral edge + motion difference (see
    ``frames_from_edges``). face_edges: Tensor  # [U, 2, 3] neutral edges; corner_motion: Tensor  # [..., U, 3 corners, 3]
    -> e1, e2: Tensor  # [..., U, 3] each."""
    return (face_edges[:, 0] + (corner_motion[..., 1, :] - corner_motion[..., 0, :]),
            face_edges[:, 1] + (corner_motion[..., 2, :] - corner_motion[..., 0, :]))  # fmt: skip


def frames_from_edges(e1: Tensor, e2: Tensor, coeffs: Tensor, ok: Tensor) -> Tensor:
    """``face_frames`` from the triangles' edges. e1, e2: [..., F, 3] edges p1 - p0, p2 - p0 (metres);
    coeffs [F, 2], ok [F]: ``uv_frame_coefficients``. Returns [..., F, 3, 3] (columns t, b, n).

    Why a separate entry: the animation rig passes edges as neutral edge + motion difference, which
    float32 keeps accurate for sub-millimetre triangles where p1 - p0 of absolute positions does not."""
    coeffs = coeffs.to(e1.dtype)
    t = e1 * coeffs[:, 0:1] - e2 * coeffs[:, 1:2]
    n = torch.linalg.cross(e1, e2, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(FRAME_NORM_EPS)
    t = torch.where(ok[:, None], t, e1)
    t = t - (t * n).sum(-1, keepdim=True) * n
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(FRAME_NORM_EPS)
    b = torch.linalg.cross(n, t, dim=-1)
    return torch.stack([t, b, n], dim=-1)


# ---------------------------------------------------------------------------------------------
# building blocks of Atlas.build (numpy)
# ---------------------------------------------------------------------------------------------


def uv_islands(faces: np.ndarray, face_uvs: np.ndarray) -> np.ndarray:
    """Connected UV charts: faces joined across an edge whose two corners have identical UVs on both sides.

    faces: [F, 3] int; face_uvs: [F, 3, 2] -> [F] int64 island label (0 .. n-1)
    """
    f = np.asarray(faces, dtype=np.int64)
    bits = np.ascontiguousarray(face_uvs, dtype=np.float32).view(np.int32).astype(np.int64)  # exact equality
    rows = []
    for a in range(3):
        b = (a + 1) % 3
        swap = f[:, a] > f[:, b]
        lo_v, hi_v = np.where(swap, f[:, b], f[:, a]), np.where(swap, f[:, a], f[:, b])
        lo_uv = np.where(swap[:, None], bits[:, b], bits[:, a])
        hi_uv = np.where(swap[:, None], bits[:, a], bits[:, b])
        rows.append(np.column_stack([lo_v, hi_v, lo_uv, hi_uv]))
    rows = np.concatenate(rows)  # [3F, 6]
    owner = np.tile(np.arange(f.shape[0]), 3)
    _, inv = np.unique(rows, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    same = inv[order][1:] == inv[order][:-1]
    a_idx, b_idx = owner[order][:-1][same], owner[order][1:][same]
    graph = coo_matrix((np.ones(a_idx.shape[0]), (a_idx, b_idx)), shape=(f.shape[0], f.shape[0]))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _uv_area(uv: np.ndarray) -> np.ndarray:
    """Unsigned area of UV triangles. uv: [F, 3, 2] -> [F]."""
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1])


def _assign_layers(local_uvs: np.ndarray, tiles: np.ndarray, islands: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Per selected face, the layer of its tile so that islands on one layer do not overlap in UV.

    Islands are placed largest-first on the lowest layer where at most ``OVERLAP_TOLERANCE`` of their
    coverage (tested at ``OVERLAP_TEST_RESOLUTION`` per tile) is already taken.
    local_uvs: [F, 3, 2] UVs within the face's tile, in [0, 1]; tiles: [F, 2]; islands: [F];
    selected: [F] bool -> [F] int64 layer (-1 for unselected faces)
    """
    res = OVERLAP_TEST_RESOLUTION
    layer = np.full(selected.shape[0], -1, dtype=np.int64)
    sel = np.flatnonzero(selected)
    if sel.size == 0:
        return layer
    # Group = (tile, island); an island crossing a tile border is split there.
    keys = np.column_stack([tiles[sel], islands[sel]])
    uniq, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    area = np.bincount(group, weights=_uv_area(local_uvs[sel]), minlength=uniq.shape[0])
    members = np.split(sel[np.argsort(group, kind="stable")], np.cumsum(np.bincount(group, minlength=uniq.shape[0]))[:-1])
    occupancy: dict[tuple[int, int], list[np.ndarray]] = {}
    for g in sorted(range(uniq.shape[0]), key=lambda k: (-area[k], k)):
        idx = members[g]
        tile = (int(uniq[g, 0]), int(uniq[g, 1]))
        x, y = uv_to_pixel(local_uvs[idx, :, 0], local_uvs[idx, :, 1], res, res)
        i0, j0 = max(0, int(np.floor(y.min()))), max(0, int(np.floor(x.min())))
        i1, j1 = min(res, int(np.ceil(y.max())) + 1), min(res, int(np.ceil(x.max())) + 1)
        xy = np.stack([x.reshape(-1) - j0, y.reshape(-1) - i0], axis=1)
        cover = rasterize(xy, None, np.arange(3 * idx.size).reshape(-1, 3), i1 - i0, j1 - j0).mask
        count = int(cover.sum())
        layers = occupancy.setdefault(tile, [])
        for lid, occ in enumerate(layers):
            if int((occ[i0:i1, j0:j1] & cover).sum()) <= OVERLAP_TOLERANCE * count:
                break
        else:
            layers.append(np.zeros((res, res), dtype=bool))
            lid = len(layers) - 1
        layers[lid][i0:i1, j0:j1] |= cover
        layer[idx] = lid
    return layer


def _skyline_pack(sizes: np.ndarray, resolution: int) -> np.ndarray | None:
    """Place squares of the given sides (texels) in a resolution^2 square, largest first.

    Skyline packing: each square goes where the filled-up "skyline" under it is lowest (leftmost on
    ties), so small cells fill the gaps beside large ones.
    sizes: [C] int -> [C, 2] int64 (row0, col0) of each square, or None if they do not fit.
    """
    pos = np.zeros((sizes.shape[0], 2), dtype=np.int64)
    skyline = np.zeros(resolution, dtype=np.int64)  # first free row of every column
    for k in sorted(range(sizes.shape[0]), key=lambda k: (-sizes[k], k)):
        s = int(sizes[k])
        if s > resolution:
            return None
        tops = np.lib.stride_tricks.sliding_window_view(skyline, s).max(axis=1)  # [R - s + 1]
        col = int(np.argmin(tops))
        row = int(tops[col])
        if row + s > resolution:
            return None
        pos[k] = (row, col)
        skyline[col : col + s] = row + s
    return pos


def _pack_cells(weights: np.ndarray, options: AtlasOptions) -> np.ndarray:
    """Cell boxes [C, 3] int64 (row0, col0, side) in atlas texels; ``side`` includes the gutters.

    weights: [C] relative cell sides wanted ("area" packing), ignored for "grid".
    """
    res, pad, n = options.resolution, options.padding_texels, weights.shape[0]
    if options.packing == "grid":
        cols = math.ceil(math.sqrt(n))
        side = res // cols
        if side - 2 * pad < 1:
            raise ValueError(f"atlas resolution {res} is too small for {n} cells with padding {pad}")
        k = np.arange(n)
        return np.column_stack([(k // cols) * side, (k % cols) * side, np.full(n, side)]).astype(np.int64)

    def sides(alpha: float) -> np.ndarray:
        return np.maximum(MIN_CELL_INTERIOR, np.floor(alpha * weights)).astype(np.int64) + 2 * pad

    if _skyline_pack(sides(0.0), res) is None:
        raise ValueError(f"atlas resolution {res} is too small for {n} cells with padding {pad}")
    lo, hi = 0.0, 2.0 * res / max(float(weights.min()), 1e-12)
    for _ in range(PACKING_BISECTION_STEPS):  # bisection on the texel-density scale
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _skyline_pack(sides(mid), res) is not None else (lo, mid)
    s = sides(lo)
    return np.column_stack([_skyline_pack(s, res), s]).astype(np.int64)


def _mirror_faces(faces: np.ndarray, symmetry: np.ndarray) -> np.ndarray:
    """[F] int64: the face made of the mirrored vertices, else one sharing a mirrored edge, else -1."""
    by_tri = {tuple(sorted(t)): i for i, t in enumerate(faces.tolist())}
    by_edge: dict[tuple[int, int], int] = {}
    for i, (a, b, c) in enumerate(faces.tolist()):
        for e in ((a, b), (b, c), (c, a)):
            by_edge.setdefault((min(e), max(e)), i)
    out = np.full(faces.shape[0], -1, dtype=np.int64)
    for i, (a, b, c) in enumerate(symmetry[faces].tolist()):
        hit = by_tri.get(tuple(sorted((a, b, c))))
        if hit is None:
            for e in ((a, b), (b, c), (c, a)):
                hit = by_edge.get((min(e), max(e)))
                if hit is not None:
                    break
        out[i] = -1 if hit is None else hit
    return out


def _to_tensor_like(a: np.ndarray, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return torch.as_tensor(a, device=like.device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# the atlas
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Atlas:
    """A packed UV atlas of a ``HeadModel`` and its texels (T of them, row-major order).

    Build with ``Atlas.build(model, ...)``; every array is numpy, the texel methods take torch.
    """

    options: AtlasOptions
    faces: np.ndarray  # [F, 3] int64, the model's triangles (copied so texel methods need no model)
    face_atlas_uvs: np.ndarray  # [F, 3, 2] float32 per-corner UVs in the packed atlas (0 for unselected faces)
    face_cell: np.ndarray  # [F] int64 cell of each face, -1 if the face is not in the atlas
    cell_tile: np.ndarray  # [C, 2] int64 UDIM tile (floor u, floor v) of each cell in the model's UVs
    cell_layer: np.ndarray  # [C] int64 layer within the tile (> 0 where islands overlapped)
    cell_box: np.ndarray  # [C, 3] int64 (row0, col0, side) in texels, side including both gutters
    face_id_map: np.ndarray  # [R, R] int64 triangle of each texel, -1 where empty
    texel_face: np.ndarray  # [T] int64 triangle owning each texel
    texel_bary: np.ndarray  # [T, 3] float32 barycentrics of the texel centre in faces[texel_face]
    texel_rc: np.ndarray  # [T, 2] int64 (row, col) of each texel
    texel_region: np.ndarray  # [T] int16 index into region_names
    region_names: tuple[str, ...]  # the model's region names

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: HeadModel,
        resolution: int = 256,
        regions: tuple[str, ...] | None = None,
        padding_texels: int = 2,
        packing: str = "area",
    ) -> "Atlas":
        """Pack the model's UV tiles into one square atlas and find the triangle of every texel.

        model: the head model (its template ``vertices`` weigh "area" packing)
        resolution: texels per atlas side; regions: names from ``model.region_names`` (None = all)
        padding_texels: gutter around each cell; packing: "area" or "grid" (see module docstring)
        """
        opts = AtlasOptions(int(resolution), None if regions is None else tuple(regions), int(padding_texels), packing)
        if opts.resolution < MIN_RESOLUTION:
            raise ValueError(f"resolution must be >= {MIN_RESOLUTION}, got {opts.resolution}")
        if opts.padding_texels < 0:
            raise ValueError(f"padding_texels must be >= 0, got {opts.padding_texels}")
        if opts.packing not in PACKING_MODES:
            raise ValueError(f"packing must be one of {PACKING_MODES}, got {opts.packing!r}")
        faces = np.asarray(model.faces, dtype=np.int64)
        n_faces = faces.shape[0]
        selected = model.region_face_mask(*opts.regions) if opts.regions is not None else np.ones(n_faces, dtype=bool)
        if not selected.any():
            raise ValueError(f"no faces in regions {opts.regions}")
        uvs = np.asarray(model.face_uvs, dtype=np.float64)
        tiles = np.floor(uvs.mean(axis=1)).astype(np.int64)  # [F, 2]
        local = np.clip(uvs - tiles[:, None, :], 0.0, 1.0)
        layers = _assign_layers(local, tiles, uv_islands(faces, model.face_uvs), selected)

        # Cells: one per (tile, layer), ordered by tile v, tile u, layer.
        sel = np.flatnonzero(selected)
        keys = np.column_stack([tiles[sel, 1], tiles[sel, 0], layers[sel]])
        cell_keys, cell_of_sel = np.unique(keys, axis=0, return_inverse=True)
        cell_of_sel = cell_of_sel.reshape(-1)
        n_cells = cell_keys.shape[0]
        v = np.asarray(model.vertices, dtype=np.float64)
        area3d = 0.5 * np.linalg.norm(np.cross(v[faces[sel, 1]] - v[faces[sel, 0]], v[faces[sel, 2]] - v[faces[sel, 0]]), axis=1)
        cell_area3d = np.bincount(cell_of_sel, weights=area3d, minlength=n_cells)
        cell_area_uv = np.clip(np.bincount(cell_of_sel, weights=_uv_area(local[sel]), minlength=n_cells), 1e-9, 1.0)
        # Texels in a cell ~ side^2 * UV coverage; equal density per m^2 needs side ~ sqrt(area3d / coverage).
        boxes = _pack_cells(np.sqrt(np.maximum(cell_area3d, 1e-30) / cell_area_uv), opts)

        # Per-face atlas UVs: the tile's [0, 1]^2 maps onto the cell interior.
        res, pad = opts.resolution, opts.padding_texels
        box = boxes[cell_of_sel]  # [S, 3]
        inner = (box[:, 2] - 2 * pad).astype(np.float64)[:, None]
        x = box[:, 1:2] + pad + local[sel, :, 0] * inner
        y = box[:, 0:1] + pad + (1.0 - local[sel, :, 1]) * inner
        face_atlas_uvs = np.zeros((n_faces, 3, 2), dtype=np.float64)
        face_atlas_uvs[sel, :, 0] = x / res
        face_atlas_uvs[sel, :, 1] = 1.0 - y / res
        face_cell = np.full(n_faces, -1, dtype=np.int64)
        face_cell[sel] = cell_of_sel

        # Rasterise in atlas pixel space; corner k of face f is point 3 f + k.
        px, py = uv_to_pixel(face_atlas_uvs[..., 0], face_atlas_uvs[..., 1], res, res)
        xy = np.stack([px.reshape(-1), py.reshape(-1)], axis=1)
        frags = rasterize(xy, None, np.arange(3 * n_faces).reshape(n_faces, 3), res, res, face_mask=selected)
        rc = np.argwhere(frags.mask).astype(np.int64)
        texel_face = frags.face_id[rc[:, 0], rc[:, 1]]
        return cls(
            options=opts,
            faces=faces.copy(),
            face_atlas_uvs=face_atlas_uvs.astype(np.float32),
            face_cell=face_cell,
            cell_tile=cell_keys[:, [1, 0]].copy(),
            cell_layer=cell_keys[:, 2].copy(),
            cell_box=boxes,
            face_id_map=frags.face_id,
            texel_face=texel_face,
            texel_bary=frags.bary[rc[:, 0], rc[:, 1]],
            texel_rc=rc,
            texel_region=np.asarray(model.face_regions, dtype=np.int16)[texel_face],
            region_names=tuple(model.region_names),
        )

    # ---- sizes and lookups -------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.options.resolution

    @property
    def num_texels(self) -> int:
        return int(self.texel_face.shape[0])

    @property
    def num_tiles(self) -> int:
        """Distinct UDIM tiles of the model's UVs used by the atlas."""
        return int(np.unique(self.cell_tile, axis=0).shape[0])

    @property
    def num_cells(self) -> int:
        return int(self.cell_box.shape[0])

    @property
    def face_mask(self) -> np.ndarray:
        """[F] bool: faces that are part of the atlas (selected regions)."""
        return self.face_cell >= 0

    @property
    def texel_uv(self) -> np.ndarray:
        """[T, 2] float64 (u, v) of the texel centres in atlas UV space."""
        u, v = pixel_to_uv(self.texel_rc[:, 0], self.texel_rc[:, 1], self.resolution, self.resolution)
        return np.stack([u, v], axis=1)

    def region_mask(self, *names: str) -> np.ndarray:
        """[T] bool: texels whose triangle belongs to any of the named regions."""
        unknown = set(names) - set(self.region_names)
        if unknown:
            raise KeyError(f"unknown region(s) {sorted(unknown)}; have {self.region_names}")
        return np.isin(self.texel_region, [self.region_names.index(n) for n in names])

    # ---- texel <-> image -----------------------------------------------------------------------
    def to_image(self, values, fill: float = 0.0):
        """Scatter per-texel values into an atlas image (numpy or torch; torch stays differentiable).

        values: [T] or [T, C] -> [R, R] or [R, R, C]; texels not in the atlas hold ``fill``.
        """
        r, c = self.texel_rc[:, 0], self.texel_rc[:, 1]
        shape = (self.resolution, self.resolution) + tuple(values.shape[1:])
        if values.shape[0] != self.num_texels:
            raise ValueError(f"expected {self.num_texels} texel values, got {values.shape[0]}")
        if isinstance(values, Tensor):
            out = values.new_full(shape, fill)
            return out.index_put((_to_tensor_like(r, values), _to_tensor_like(c, values)), values)
        out = np.full(shape, fill, dtype=np.asarray(values).dtype)
        out[r, c] = values
        return out

    def from_image(self, img):
        """Gather per-texel values from an atlas image (numpy or torch). img: [R, R] or [R, R, C] -> [T] or [T, C]."""
        if tuple(img.shape[:2]) != (self.resolution, self.resolution):
            raise ValueError(f"expected a {self.resolution}x{self.resolution} image, got {tuple(img.shape)}")
        r, c = self.texel_rc[:, 0], self.texel_rc[:, 1]
        if isinstance(img, Tensor):
            return img[_to_tensor_like(r, img), _to_tensor_like(c, img)]
        return img[r, c]

    # ---- surface samples (torch, differentiable) -----------------------------------------------
    @cached_property
    def texel_triangles(self) -> np.ndarray:
        """[T, 3] int64 vertex ids of each texel's triangle."""
        return self.faces[self.texel_face]

    @cached_property
    def _used_faces(self) -> tuple[np.ndarray, np.ndarray]:
        used, inverse = np.unique(self.texel_face, return_inverse=True)
        return used, inverse.reshape(-1)

    def texel_points(self, vertices: Tensor) -> Tensor:
        """Surface point of every texel. vertices: [..., V, 3] (metres) -> [..., T, 3]."""
        vertices = torch.as_tensor(vertices)
        tri = _to_tensor_like(self.texel_triangles, vertices)
        bary = _to_tensor_like(self.texel_bary, vertices, vertices.dtype)
        return (vertices[..., tri, :] * bary[:, :, None]).sum(-2)

    def texel_frames(self, vertices: Tensor) -> Tensor:
        """Tangent frame of every texel's triangle (see ``face_frames``). vertices: [..., V, 3] -> [..., T, 3, 3]."""
        vertices = torch.as_tensor(vertices)
        used, inverse = self._used_faces
        frames = face_frames(vertices, self.faces[used], self.face_atlas_uvs[used])  # [..., U, 3, 3]
        return frames[..., _to_tensor_like(inverse, vertices), :, :]

    # ---- symmetry ----------------------------------------------------------------------------
    def mirror_texels(self, model: HeadModel) -> np.ndarray:
        """[T] int64: for each texel, the texel at its left<->right mirrored surface point.

        On the template mesh, the mirrored point is the texel's barycentrics applied to the
        mirror partners (``model.symmetry``) of its triangle's vertices, which lies on the mirrored
        surface even where the left/right UV layouts differ. The answer is the texel nearest to it
        in 3D (scipy cKDTree), searched among texels of the region the mirrored triangle belongs to
        (so e.g. a lip texel never maps to a nearby tooth), or among all texels when that triangle
        cannot be identified or has no texels. Not every texel is hit exactly once: where the two
        sides have different texel densities the map is many-to-one.
        """
        if model.faces.shape != self.faces.shape or not np.array_equal(model.faces, self.faces):
            raise ValueError("mirror_texels needs the model this atlas was built from")
        verts = np.asarray(model.vertices, dtype=np.float64)
        sym = np.asarray(model.symmetry, dtype=np.int64)
        bary = self.texel_bary.astype(np.float64)[:, :, None]
        points = (verts[self.texel_triangles] * bary).sum(1)
        mirrored = (verts[sym[self.texel_triangles]] * bary).sum(1)
        mface = _mirror_faces(self.faces, sym)[self.texel_face]
        ok = mface >= 0
        target = np.full(self.num_texels, -1, dtype=np.int64)
        target[ok] = np.asarray(model.face_regions, dtype=np.int64)[mface[ok]]
        out = np.empty(self.num_texels, dtype=np.int64)
        everything = cKDTree(points)
        for region in np.unique(target):
            query = np.flatnonzero(target == region)
            pool = np.flatnonzero(self.texel_region == region) if region >= 0 else np.empty(0, dtype=np.int64)
            if pool.size:
                out[query] = pool[cKDTree(points[pool]).query(mirrored[query])[1]]
            else:
                out[query] = everything.query(mirrored[query])[1]
        return out

    # ---- persistence -------------------------------------------------------------------------
    _ARRAYS = ("faces", "face_atlas_uvs", "face_cell", "cell_tile", "cell_layer", "cell_box", "face_id_map",
               "texel_face", "texel_bary", "texel_rc", "texel_region")

    def save(self, path: str | Path) -> Path:
        """Write the atlas to ``path`` (.npz, no pickles) atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": ATLAS_FORMAT_VERSION, "options": asdict(self.options), "region_names": list(self.region_names)}
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Atlas":
        """Read an atlas written by ``save``. Raises ValueError on a file of another format version."""
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays.pop("meta_json")).decode("utf-8"))
        if meta.get("format_version") != ATLAS_FORMAT_VERSION:
            raise ValueError(f"atlas file {path} has format {meta.get('format_version')}, expected {ATLAS_FORMAT_VERSION}")
        opts = dict(meta["options"])
        opts["regions"] = None if opts["regions"] is None else tuple(opts["regions"])
        return cls(options=AtlasOptions(**opts), region_names=tuple(meta["region_names"]), **{k: arrays[k] for k in cls._ARRAYS})
