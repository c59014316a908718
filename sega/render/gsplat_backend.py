"""CUDA backend: a thin call into ``gsplat.rasterization``.

Why a separate module: gsplat JIT-compiles its CUDA extension on first use and fails on
machines without CUDA, so it is imported lazily and only after checking that CUDA is
really there. The arguments are chosen so that gsplat computes what the CPU backend
computes: ``rasterize_mode="classic"`` (eps2d blur without opacity compensation),
``render_mode="RGB+ED"`` (depth appended as a colour channel with a zero background, then
divided by ``alpha.clamp(min=1e-10)``), the same near/far planes and eps2d, 16 px tiles,
``radius_clip=0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .projection import TILE_SIZE


class CudaUnavailableError(RuntimeError):
    """backend='gsplat' was asked for where it cannot run."""


def check_gsplat_usable(means: Tensor) -> None:
    """Raise CudaUnavailableError unless CUDA is available and ``means`` lives on it."""
    if not torch.cuda.is_available():
        raise CudaUnavailableError(
            "backend='gsplat' needs CUDA, but torch.cuda.is_available() is False on this machine "
            "(gsplat would try to JIT-compile its CUDA kernels and fail); use backend='cpu' or 'auto'"
        )
    if not means.is_cuda:
        raise CudaUnavailableError(
            f"backend='gsplat' needs the Gaussians on a CUDA device, got tensors on {means.device}; "
            "move them with .cuda() or use backend='cpu'"
        )


def render_gsplat(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3] linear
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, 3]
    K: Tensor,  # [3, 3]
    viewmat: Tensor,  # [4, 4] world-to-camera
    width: int,
    height: int,
    background: Tensor | None,  # [3]
    near: float,
    far: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (rgb [H, W, 3], alpha [H, W, 1], expected depth [H, W, 1])."""
    rgb, alpha, depth = _rasterize(means, quats, scales, opacities, colors, K[None], viewmat[None], width, height,
                                   background, near, far, eps2d)  # fmt: skip
    return rgb[0], alpha[0], depth[0]


def render_gsplat_views(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3] linear
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, 3]
    Ks: Tensor,  # [C, 3, 3]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    width: int,
    height: int,
    background: Tensor | None,  # [3], the same behind every view
    near: float,
    far: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """C views of the same Gaussians in one gsplat call (its camera batch: one projection and one tile
    sort for all of them). Returns (rgb [C, H, W, 3], alpha [C, H, W, 1], expected depth [C, H, W, 1])."""
    return _rasterize(means, quats, scales, opacities, colors, Ks, viewmats, width, height, background, near, far, eps2d)


def render_gsplat_frames(
    means: Tensor,  # [F, N, 3]
    quats: Tensor,  # [F, N, 4] wxyz
    scales: Tensor,  # [F, N, 3] linear
    opacities: Tensor,  # [F, N]
    colors: Tensor,  # [F, N, 3]
    K: Tensor,  # [3, 3]
    viewmat: Tensor,  # [4, 4] world-to-camera
    width: int,
    height: int,
    background: Tensor | None,  # [3]
    near: float,
    far: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """F sets of Gaussians (F frames of a clip) from one camera in one gsplat call (its leading batch axis).
    Returns (rgb [F, H, W, 3], alpha [F, H, W, 1], expected depth [F, H, W, 1])."""
    f = means.shape[0]
    rgb, alpha, depth = _rasterize(means, quats, scales, opacities, colors, K.expand(f, 1, 3, 3), viewmat.expand(f, 1, 4, 4),
                                   width, height, background, near, far, eps2d)  # fmt: skip
    return rgb[:, 0], alpha[:, 0], depth[:, 0]


def _rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, Ks: Tensor, viewmats: Tensor,
               width: int, height: int, background: Tensor | None, near: float, far: float, eps2d: float) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """gsplat.rasterization with batch axes: means [..., N, 3] (and the other Gaussian fields alike),
    Ks [..., C, 3, 3], viewmats [..., C, 4, 4]. -> (rgb, alpha, depth) [..., C, H, W, 3 / 1 / 1]."""
    check_gsplat_usable(means)
    import gsplat  # lazy: see module docstring

    dev = means.device
    render, alpha, _meta = gsplat.rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats.to(dev, means.dtype),
        Ks=Ks.to(dev, means.dtype),
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        radius_clip=0.0,
        eps2d=eps2d,
        packed=False,
        tile_size=TILE_SIZE,
        backgrounds=None if background is None else background.to(dev, means.dtype).expand(*Ks.shape[:-2], 3),
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    return render[..., :3], alpha, render[..., 3:4]
