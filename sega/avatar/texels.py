"""Texel geometry on the fitted mesh: spacing, atlas neighbours, which texels move, smooth colour fields over
them (shared by the rig and the build).

Shapes: T texels, V vertices, E expressions.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..headmodel.base import HeadModel
from ..uv import Atlas

# Regions that are always dynamic (they move with the jaw / eyes, or are only seen when they do).
ALWAYS_DYNAMIC_REGIONS = ("teeth", "mouth_interior", "eyeball_left", "eyeball_right")
BLINK_EXPRESSIONS = ("eyeBlink_L", "eyeBlink_R")  # their moving texels are the eyelids
SPACING_CLAMP = 1.5  # texel spacings are clamped to [median / this, median * this] per region
SMOOTH_PAIR_MAX_SPACING = 2.5  # atlas neighbours farther apart than this many texel spacings are not neighbours
FIELD_NEIGHBOURS = 64  # sources averaged per texel for a ``smooth_field``
FIELD_PRIOR_SIGMAS = 2.0  # a ``smooth_field``'s prior counts as one source this many sigmas away: far texels get it


def texel_spacing(atlas: Atlas, vertices: np.ndarray) -> np.ndarray:
    """[T] metres between neighbouring texel centres on the surface (sqrt of surface area per texel).

    Triangles whose UVs are squashed (e.g. ICT's eyeball poles) would give huge values, so each texel's
    spacing is clamped to within ``SPACING_CLAMP`` (a factor) of its region's median.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = atlas.faces
    area3d = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    uv = atlas.face_atlas_uvs.astype(np.float64) * atlas.resolution
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area_tex = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1])  # texels^2
    per_face = np.sqrt(area3d / np.maximum(area_tex, 1e-12))
    spacing = per_face[atlas.texel_face]
    for region in np.unique(atlas.texel_region):
        sel = atlas.texel_region == region
        med = float(np.median(spacing[sel]))
        spacing[sel] = np.clip(spacing[sel], med / SPACING_CLAMP, med * SPACING_CLAMP)
    return spacing.astype(np.float32)


def neighbour_pairs(atlas: Atlas, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """[P, 2] int64 texel index pairs adjacent in the atlas (right / down) that are also close on the surface."""
    idx = atlas.to_image(np.arange(atlas.num_texels), fill=-1)
    pairs = [np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1), np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1)]
    p = np.concatenate(pairs)
    p = p[(p[:, 0] >= 0) & (p[:, 1] >= 0)]
    dist = np.linalg.norm(points[p[:, 0]] - points[p[:, 1]], axis=1)
    limit = SMOOTH_PAIR_MAX_SPACING * np.maximum(spacing[p[:, 0]], spacing[p[:, 1]])
    return p[dist <= limit].astype(np.int64)


def dynamic_texels(model: HeadModel, atlas: Atlas, threshold_m: float) -> np.ndarray:
    """[T] bool: texels moving more than ``threshold_m`` under any single expression at weight 1,
    plus every texel of ``ALWAYS_DYNAMIC_REGIONS`` present in the model."""
    tri = atlas.texel_triangles  # [T, 3]
    bary = atlas.texel_bary.astype(np.float32)
    moving = np.zeros(atlas.num_texels, dtype=bool)
    for e in range(model.num_expressions):  # one at a time keeps memory at [T, 3]
        d = (np.asarray(model.expression_basis[e], dtype=np.float32)[tri] * bary[:, :, None]).sum(1)
        moving |= np.linalg.norm(d, axis=1) > threshold_m
    regions = [r for r in ALWAYS_DYNAMIC_REGIONS if r in atlas.region_names]
    if regions:
        moving |= atlas.region_mask(*regions)
    return moving


def blink_travel(model: HeadModel, atlas: Atlas) -> np.ndarray:
    """[B, T] metres each texel moves under each of ``BLINK_EXPRESSIONS`` the model has (B of them) at weight 1."""
    names = [n for n in BLINK_EXPRESSIONS if n in model.expression_names]
    tri, bary = atlas.texel_triangles, atlas.texel_bary.astype(np.float32)
    out = np.zeros((len(names), atlas.num_texels), dtype=np.float32)
    for k, n in enumerate(names):
        d = np.asarray(model.expression_basis[model.expression_index(n)], dtype=np.float32)
        out[k] = np.linalg.norm((d[tri] * bary[:, :, None]).sum(1), axis=1)
    return out


def blink_texels(model: HeadModel, atlas: Atlas, threshold_m: float) -> np.ndarray:
    """[T] bool: texels moving more than ``threshold_m`` under ``BLINK_EXPRESSIONS`` at weight 1 (the
    eyelids); none when the model has no such expressions."""
    return (blink_travel(model, atlas) > threshold_m).any(0)


def smooth_field(colors: np.ndarray, sources: np.ndarray, points: np.ndarray, sigma_m: float,
                 prior: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """[T, 3] float32: at every texel, the Gaussian-weighted (``sigma_m``) mean colour of the nearest
    ``FIELD_NEIGHBOURS`` source texels, tending to ``prior`` [3] (default the sources' median) where none is near.
    colors: [T, 3]; sources: [T] bool; points: [T, 3] metres."""
    src = np.flatnonzero(sources)
    if src.size == 0:
        return np.broadcast_to(np.asarray(prior if prior is not None else 0.0, np.float32), colors.shape).copy()
    median = np.median(colors[src], 0) if prior is None else np.asarray(prior, np.float64)
    k = min(FIELD_NEIGHBOURS, src.size)
    dist, nn = cKDTree(points[src]).query(points, k=k)
    dist, nn = dist.reshape(len(points), k), nn.reshape(len(points), k)
    w = np.exp(-0.5 * (dist / sigma_m) ** 2)
    prior_w = np.exp(-0.5 * FIELD_PRIOR_SIGMAS**2)
    out = ((colors[src][nn] * w[..., None]).sum(1) + prior_w * median) / (w.sum(1, keepdims=True) + prior_w)
    return out.astype(np.float32)


def region_mask(atlas: Atlas, *names: str) -> np.ndarray:
    """[T] bool: texels of the named regions the atlas has (all False when it has none of them)."""
    present = [n for n in names if n in atlas.region_names]
    return atlas.region_mask(*present) if present else np.zeros(atlas.num_texels, dtype=bool)
