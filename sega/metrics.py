"""Measures of an avatar that tests, benches and the evaluation share.

``floater_report``: how far an avatar's splats reach beyond its head over many expressions. Floaters
(splats that grow or drift far off the head at expressions the photo did not show) are the failure
it catches: the largest splat standard deviation against the head's radius, and the rendered alpha
outside the head's mesh silhouette (grown by a margin for hair) at a frontal view.
"""

from __future__ import annotations

import numpy as np
import torch

FLOATER_MARGIN_HEAD_FRACTION = 0.15  # silhouette grown by this fraction of the head radius (hair, splat extent): ~3 cm
FLOATER_ALPHA = 0.1  # alpha above this outside the grown silhouette counts as a floating pixel


def grow_mask(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """[H, W] bool dilated by ``radius_px`` pixels (a square neighbourhood per step)."""
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=max(int(radius_px), 0)) if radius_px > 0 else mask.copy()


def floater_report(avatar, expressions: np.ndarray, size: int = 128, renders: int = 8,
                   margin_fraction: float = FLOATER_MARGIN_HEAD_FRACTION) -> dict:  # fmt: skip
    """Splat extent and off-head alpha of ``avatar`` (a ``sega.avatar.Avatar``) over ``expressions``: [N, E].

    Every expression is animated (scales); the first ``renders`` are also rendered frontally at
    ``size`` px and their alpha is compared with the mesh silhouette at that expression, grown by
    ``margin_fraction`` head radii. Returns max_scale_m, max_scale_head_fraction (over the head's
    bounding radius), and over the renders alpha_outside_mean / alpha_outside_max_mean (the worst
    render's mean) and floating_pixel_fraction (alpha > FLOATER_ALPHA outside, worst render)."""
    from .avatar import ORBIT_HEAD_FILL
    from .meshraster import render_mesh

    rig = avatar.rig
    max_scale = 0.0
    for e in expressions:
        max_scale = max(max_scale, float(avatar.animate(np.asarray(e, np.float32)).scales.max()))
    cam = avatar.orbit_camera(0.0, size=size)
    margin_px = int(round(margin_fraction * size * ORBIT_HEAD_FILL / 2))  # the head radius spans fill * size / 2 px
    means, worst_floating = [], 0.0
    for e in expressions[:renders]:
        verts = avatar.vertices(np.asarray(e, np.float32)).numpy()
        sil = grow_mask(render_mesh(verts, avatar.atlas.faces, cam).mask, margin_px)
        with torch.no_grad():
            alpha = avatar.render(np.asarray(e, np.float32), camera=cam).alpha.numpy()[..., 0]
        outside = alpha[~sil]
        means.append(float(outside.mean()) if outside.size else 0.0)
        worst_floating = max(worst_floating, float((outside > FLOATER_ALPHA).mean()) if outside.size else 0.0)
    return {
        "expressions": int(len(expressions)),
        "max_scale_m": max_scale,
        "max_scale_head_fraction": max_scale / rig.head_radius,
        "alpha_outside_mean": float(np.mean(means)) if means else 0.0,
        "alpha_outside_max_mean": float(np.max(means)) if means else 0.0,
        "floating_pixel_fraction": worst_floating,
        "margin_px": margin_px,
        "size": size,
    }
