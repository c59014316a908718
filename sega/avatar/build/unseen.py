"""Appearance where the photo did not really look: how much of a texel's photo colour to trust, and
what to paint where it is not trusted.

A photo sees the face squarely and the sides of the head at grazing angles, where one pixel smears over
many texels (and a slightly misfitted mesh takes the face's own features). So outside the photo's face
oval (ears, the sides and back of the head, the neck) a texel's photo colour is weighted by its facing
cosine and its distance from the mesh's silhouette edge in the photo (``photo_weight``); inside it every
seen colour is kept (the input view's face needs them: the grazing slivers there add up to ~2 dB). What
is left is painted from smooth fields grown from what the photo saw well:

* skin: a low-frequency skin-colour field (``smooth_field`` of squarely seen skin-coloured texels, a
  Gaussian of ``SKIN_FIELD_SIGMA_M`` in 3D: no features survive it), darkened in the folds of the
  ears and under the jaw (``cavity_shading``: the geometry's own shading, the photo's light being unknown);
* the scalp (``scalp_texels``): the photo's hair colour (``sega.avatar.build.hair.hair_colour``) where
  the photo shows hair, else skin.

Coordinates are the head model's template (metres, y up, +z out of the face).
"""

from __future__ import annotations

import numpy as np
import torch

from ...headmodel.base import HeadModel
from ...uv import Atlas
from ..texels import region_mask, smooth_field

PHOTO_WEIGHT_COS = (0.15, 0.35)  # the photo colour's weight ramps up (smoothstep) over this facing cosine (81 -> 70 degrees:
# a photo pixel stretched over 3-7 texel widths and more is a smear) ...
SILHOUETTE_EDGE_IOD = 0.25  # ... and over this distance (inter-ocular distances) inward from the mesh's silhouette edge
SKIN_SOURCE_WEIGHT = 0.8  # texels trusted at least this much are skin-field sources ...
SKIN_SOURCE_DISTANCE = 0.15  # ... when within this RGB distance of the photo's median skin colour (no brows, lips, hair)
SKIN_FIELD_SIGMA_M = 0.03  # the skin field's Gaussian (metres): wider than an eye, so no feature is copied
# The scalp on the template: the back and top of the head down to the ear lobes, and the face region's
# temples above and behind the ears (ICT's "face" region wraps past the ears).
SCALP_MIN_Y_M = -0.035  # head_neck texels above this height (the ear lobes; below is the neck)
TEMPLE_MIN_Y_M = 0.05  # face-region texels above this height ...
TEMPLE_MAX_Z_M = 0.0  # ... and behind this depth (behind the ears' front) are scalp too
CAVITY_DARKEN = 0.5  # a fold one texel spacing deep (mean-curvature proxy) darkens the skin field by this fraction ...
CAVITY_MIN_SHADE = 0.6  # ... and no fold darkens it below this factor


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def photo_weight(cos: np.ndarray, edge_iod: np.ndarray) -> np.ndarray:
    """[T] in [0, 1]: how much a seen texel's photo colour is trusted. cos: [T] facing cosine;
    edge_iod: [T] distance of the texel's pixel from the mesh silhouette's edge (inter-ocular distances)."""
    return smoothstep(cos, *PHOTO_WEIGHT_COS) * smoothstep(edge_iod, 0.0, SILHOUETTE_EDGE_IOD)


def scalp_texels(model: HeadModel, atlas: Atlas) -> np.ndarray:
    """[T] bool: texels where hair grows on most heads (``SCALP_MIN_Y_M``, ``TEMPLE_*``), on the template."""
    tpl = atlas.texel_points(torch.as_tensor(model.vertices, dtype=torch.float32)).numpy()
    head = region_mask(atlas, "head_neck") & (tpl[:, 1] > SCALP_MIN_Y_M)
    temple = region_mask(atlas, "face") & (tpl[:, 1] > TEMPLE_MIN_Y_M) & (tpl[:, 2] < TEMPLE_MAX_Z_M)
    return head | temple


def cavity_shading(points: np.ndarray, normals: np.ndarray, pairs: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """[T] factor in [``CAVITY_MIN_SHADE``, 1]: darker where the surface folds inwards (ear folds, under
    the jaw): the mean of the atlas neighbours lies outside the texel along its normal.
    points / normals: [T, 3]; pairs: [P, 2] atlas neighbours; spacing: [T] metres."""
    a, b = pairs[:, 0], pairs[:, 1]
    acc = np.zeros_like(points)
    np.add.at(acc, a, points[b])
    np.add.at(acc, b, points[a])
    deg = np.bincount(a, minlength=len(points)) + np.bincount(b, minlength=len(points))
    mean = np.where(deg[:, None] > 0, acc / np.maximum(deg, 1)[:, None], points)
    depth = ((mean - points) * normals).sum(1) / np.maximum(spacing, 1e-9)  # > 0: neighbours stand out: a fold
    return np.clip(1.0 - CAVITY_DARKEN * np.maximum(depth, 0.0), CAVITY_MIN_SHADE, 1.0)


def unseen_colours(colors: np.ndarray, weight: np.ndarray, points: np.ndarray, normals: np.ndarray, pairs: np.ndarray,
                   spacing: np.ndarray, skin_rgb: np.ndarray, scalp: np.ndarray, hair_rgb: np.ndarray | None,
                   excluded: np.ndarray) -> np.ndarray:  # fmt: skip
    """[T, 3] float32: what a texel shows where the photo's colour is not trusted: the skin field
    (shaded by ``cavity_shading``) or, on the scalp when the photo shows hair, the hair colour field.

    colors: [T, 3] photo colours; weight: [T] ``photo_weight`` (0 where unseen); skin_rgb / hair_rgb: [3]
    the photo's median skin / hair colour (hair None: no hair shown); scalp: [T] bool; excluded: [T]
    bool texels that are no sources (eyes, mouth, lids)."""
    trusted = (weight >= SKIN_SOURCE_WEIGHT) & ~excluded
    skin_like = np.linalg.norm(colors - skin_rgb[None], axis=1) <= SKIN_SOURCE_DISTANCE
    skin_sources = trusted & skin_like & ~scalp
    if not skin_sources.any():
        skin_sources = trusted
    fill = smooth_field(np.where(skin_sources[:, None], colors, 0.0), skin_sources, points, SKIN_FIELD_SIGMA_M)
    fill = fill * cavity_shading(points, normals, pairs, spacing)[:, None]
    if hair_rgb is not None:
        # The scalp's seen hair near the hairline, the photo's hair colour (not the seen scalp's, which
        # may be a headband or a forehead's edge) further back.
        hair_sources = trusted & scalp & ~skin_like
        hair = smooth_field(np.where(hair_sources[:, None], colors, 0.0), hair_sources, points, SKIN_FIELD_SIGMA_M,
                            prior=hair_rgb)
        fill = np.where(scalp[:, None], hair, fill)
    return fill.astype(np.float32)


def blend_unseen(colors: np.ndarray, weight: np.ndarray, mirror: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """[T, 3] float32: each texel's colour kept by ``weight`` [T], the rest its mirror texel's colour
    (kept by the mirror's weight), the rest ``fill`` [T, 3]. colors: [T, 3] the fitted colours; mirror: [T]."""
    w, wm = weight[:, None], weight[mirror][:, None]
    return (w * colors + (1.0 - w) * (wm * colors[mirror] + (1.0 - wm) * fill)).astype(np.float32)


__all__ = ["blend_unseen", "cavity_shading", "photo_weight", "scalp_texels", "smoothstep", "unseen_colours"]
