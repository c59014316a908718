"""Dense pure-torch twin of the rasterisation stage, for testing the CPU and CUDA kernels.

Why it exists: it states the compositing rule once, in a form short enough to check by
eye, and torch autograd provides its gradients. Every Gaussian is evaluated at every
pixel (memory and time O(M * H * W)), so it is only for small scenes (tests, debugging).

It applies exactly the kernels' rules: pixel centres at +0.5, ``alpha = min(MAX_ALPHA,
opacity * exp(-sigma))``, skip ``sigma < 0`` or ``alpha < ALPHA_THRESHOLD``, stable depth
order, and gsplat's termination (a Gaussian is composited only while the transmittance
*after* it stays above ``T_THRESHOLD``; since transmittance never rises, that is the
prefix where the inclusive cumulative product of ``1 - alpha`` is > ``T_THRESHOLD``).
It uses no tiles and ignores ``radii``: agreement with the tiled rasteriser therefore also
checks that the tile culling never drops a pixel the alpha rule would keep.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .projection import ALPHA_THRESHOLD, MAX_ALPHA, T_THRESHOLD


def rasterize_reference(
    means2d: Tensor,  # [M, 2] pixels
    conics: Tensor,  # [M, 3] inverse 2D covariance (a, b, c)
    colors: Tensor,  # [M, D]
    opacities: Tensor,  # [M] in [0, 1]
    depths: Tensor,  # [M] sort key (not differentiated)
    radii: Tensor | None,  # [M, 2]; rows with a 0 are dropped (culled), otherwise unused
    width: int,
    height: int,
    background: Tensor | None = None,  # [D]; None = zeros
) -> tuple[Tensor, Tensor]:
    """Dense compositing. Returns (render [H, W, D], alpha [H, W, 1]); fully autograd."""
    n_ch = colors.shape[1]
    if background is None:
        background = torch.zeros(n_ch, dtype=colors.dtype, device=colors.device)
    if radii is not None:
        keep = torch.nonzero((radii[:, 0] > 0) & (radii[:, 1] > 0)).squeeze(1)
        means2d, conics, colors, opacities, depths = (t[keep] for t in (means2d, conics, colors, opacities, depths))
    order = torch.sort(depths.detach(), stable=True).indices
    means2d, conics, colors, opacities = means2d[order], conics[order], colors[order], opacities[order]

    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means2d.dtype, device=means2d.device) + 0.5,
        torch.arange(width, dtype=means2d.dtype, device=means2d.device) + 0.5,
        indexing="ij",
    )
    dx = means2d[:, 0, None] - xs.reshape(1, -1)  # [M, P]
    dy = means2d[:, 1, None] - ys.reshape(1, -1)
    a, b, c = conics[:, 0, None], conics[:, 1, None], conics[:, 2, None]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp_max(opacities[:, None] * torch.exp(-sigma), MAX_ALPHA)
    used = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        inside = torch.cumprod(1.0 - alpha, dim=0) > T_THRESHOLD  # prefix before termination
    alpha = torch.where(inside, alpha, torch.zeros_like(alpha))

    trans = torch.cumprod(1.0 - alpha, dim=0)  # [M, P] transmittance after each Gaussian
    ones = torch.ones((1, height * width), dtype=trans.dtype, device=trans.device)
    t_before = torch.cat([ones, trans[:-1]], 0)
    weights = alpha * t_before  # [M, P]
    t_final = trans[-1] if trans.shape[0] > 0 else ones[0]  # [P]
    render = weights.T @ colors + t_final[:, None] * background  # [P, D]
    return render.reshape(height, width, n_ch), (1.0 - t_final).reshape(height, width, 1)
