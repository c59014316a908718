"""Measures that tests, benches and the evaluation share.

``ssim_map`` / ``psnr``: image fidelity (the optimisation's D-SSIM term uses ``ssim_map`` too;
``ssim_map_within`` is the same map over a region's box only, for the eval's per-frame scores).

``floater_report``: how far an avatar's splats reach beyond its head over many expressions. Floaters
(splats that grow or drift far off the head at expressions the photo did not show) are the failure
it catches: the largest splat standard deviation against the head's radius, and the rendered alpha
outside the head's mesh silhouette (grown by a margin for hair) at a frontal view.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .imaging import dilate, grown_span

SSIM_WINDOW = 11  # SSIM Gaussian window (pixels)
SSIM_SIGMA = 1.5  # SSIM window standard deviation (pixels)
SSIM_C1 = 0.01**2  # SSIM stabilisers for a data range of 1
SSIM_C2 = 0.03**2
FLOATER_MARGIN_HEAD_FRACTION = 0.15  # silhouette grown by this fraction of the head radius (hair, splat extent): ~3 cm
FLOATER_ALPHA = 0.1  # alpha above this outside the grown silhouette counts as a floating pixel


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM of two images a, b: [H, W, C] in [0, 1] -> [H, W] (mean over channels).

    Gaussian window ``SSIM_WINDOW`` / ``SSIM_SIGMA`` with zero padding (as 3DGS), constants for a
    data range of 1. The window is applied as two 1-D passes (it is separable). Differentiable.
    """
    c = a.shape[-1]
    k = _gaussian_kernel1d(SSIM_WINDOW, SSIM_SIGMA, a.dtype).to(a.device)
    kx = k.view(1, 1, 1, -1).expand(5 * c, 1, 1, SSIM_WINDOW)
    ky = k.view(1, 1, -1, 1).expand(5 * c, 1, SSIM_WINDOW, 1)
    x = a.permute(2, 0, 1)[None]
    y = b.permute(2, 0, 1)[None]
    pad = SSIM_WINDOW // 2
    stack = torch.cat([x, y, x * x, y * y, x * y], 1).contiguous()  # [1, 5C, H, W]: one blur call for all five maps
    blurred = F.conv2d(F.conv2d(stack, kx, padding=(0, pad), groups=5 * c), ky, padding=(pad, 0), groups=5 * c)
    mu_x, mu_y, exx, eyy, exy = blurred.split(c, 1)
    sxx = exx - mu_x * mu_x
    syy = eyy - mu_y * mu_y
    sxy = exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den)[0].mean(0)


def ssim_map_within(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``ssim_map`` of a, b [H, W, C] float in [0, 1] computed only over the bounding box of ``where`` [H, W]
    bool: [H, W] float32, NaN outside that box. Inside it the values are ``ssim_map``'s: the box is cut out
    with SSIM_WINDOW // 2 pixels of context on every side (fewer only at the image's own border, where both
    pad with the same zeros). Why: an eval frame's head covers a fraction of the frame, and the blur of the
    whole frame was a fifth of its scoring time."""
    h, w = where.shape
    out = np.full((h, w), np.nan, np.float32)
    rows, cols = np.flatnonzero(where.any(1)), np.flatnonzero(where.any(0))
    if not len(rows):
        return out
    pad = SSIM_WINDOW // 2
    (y0, y1), (x0, x1) = grown_span(where.any(1), pad, h), grown_span(where.any(0), pad, w)  # the box with its context ...
    crop = ssim_map(*(torch.from_numpy(np.ascontiguousarray(x[y0:y1, x0:x1], np.float32)) for x in (a, b))).numpy()
    iy0, ix0 = int(rows[0]) - y0, int(cols[0]) - x0  # ... of which the box itself is kept
    out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = crop[iy0 : iy0 + rows[-1] + 1 - rows[0], ix0 : ix0 + cols[-1] + 1 - cols[0]]
    return out


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) of float images a, b [H, W, 3] over pixels where mask [H, W] is True."""
    err = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)[mask]
    return float(10.0 * np.log10(1.0 / max(float(err.mean()), 1e-12)))


def hair_footprint(avatar, camera) -> np.ndarray:
    """[H, W] bool: where ``avatar``'s hair Gaussians (``Avatar.hair``, canonical pose) cover ``camera``'s
    view with alpha >= 0.5. Hair stands off the head mesh by design: floater checks count it as head."""
    from .render import render

    if avatar.hair is None:
        return np.zeros((camera.height, camera.width), dtype=bool)
    g = avatar.hair
    K, viewmat = camera.torch(device=g.means.device)
    with torch.no_grad():
        out = render(g.means, g.quats, g.scales, g.opacities, g.colors, K, viewmat, camera.width, camera.height)
    return out.alpha.cpu().numpy()[..., 0] >= 0.5


def floater_report(avatar, expressions: np.ndarray, size: int = 128, renders: int = 8,
                   margin_fraction: float = FLOATER_MARGIN_HEAD_FRACTION) -> dict:  # fmt: skip
    """Splat extent and off-head alpha of ``avatar`` (a ``sega.avatar.Avatar``) over ``expressions``: [N, E].

    Every expression is animated (scales); the first ``renders`` are also rendered frontally at
    ``size`` px and their alpha is compared with the mesh silhouette at that expression plus the hair's
    footprint (``hair_footprint``), grown by ``margin_fraction`` head radii. Returns max_scale_m, max_scale_head_fraction (over the head's
    bounding radius), and over the renders alpha_outside_mean / alpha_outside_max_mean (the worst
    render's mean) and floating_pixel_fraction (alpha > FLOATER_ALPHA outside, worst render)."""
    from .avatar.avatar import ORBIT_HEAD_FILL
    from .meshraster import render_mesh

    rig = avatar.rig
    max_scale = 0.0
    for e in expressions:
        max_scale = max(max_scale, float(avatar.animate(np.asarray(e, np.float32)).scales.max()))
    cam = avatar.orbit_camera(0.0, size=size)
    margin_px = int(round(margin_fraction * size * ORBIT_HEAD_FILL / 2))  # the head radius spans fill * size / 2 px
    means, worst_floating = [], 0.0
    hair = hair_footprint(avatar, cam)
    for e in expressions[:renders]:
        verts = avatar.vertices(np.asarray(e, np.float32)).cpu().numpy()
        sil = dilate(render_mesh(verts, avatar.atlas.faces, cam).mask | hair, margin_px)
        with torch.no_grad():
            alpha = avatar.render(np.asarray(e, np.float32), camera=cam).alpha.cpu().numpy()[..., 0]
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
