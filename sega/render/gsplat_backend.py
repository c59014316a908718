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
    check_gsplat_usable(means)
    import gsplat  # lazy: see module docstring

    dev = means.device
    render, alpha, _meta = gsplat.rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmat.to(dev, means.dtype)[None],
        Ks=K.to(dev, means.dtype)[None],
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        radius_clip=0.0,
        eps2d=eps2d,
        packed=False,
        tile_size=TILE_SIZE,
        backgrounds=None if background is None else background.to(dev, means.dtype)[None],
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    return render[0, ..., :3], alpha[0], render[0, ..., 3:4]
