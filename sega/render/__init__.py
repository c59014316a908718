"""Differentiable 3D Gaussian splatting: one ``render`` call, three interchangeable backends.

Why several backends: avatars are fitted on CPU-only machines (``"cpu"``: torch projection
+ numba tile rasteriser, ``sega.render.cpu``), on CUDA machines gsplat is much faster
(``"gsplat"``), and a dense pure-torch twin (``"reference"``) states the compositing rule
plainly for tests. All three follow gsplat 1.5.3's maths (classic mode, RGB+ED depth), so
an avatar fitted with one renders the same with another.

Conventions (``sega.conventions``): quaternions wxyz, ``viewmat`` world-to-camera, OpenCV
camera axes, pixel centres at +0.5, metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .cpu import rasterize_cpu
from .gsplat_backend import CudaUnavailableError, render_gsplat, render_gsplat_frames, render_gsplat_views
from .projection import ALPHA_THRESHOLD, MAX_ALPHA, T_THRESHOLD, TILE_SIZE, Projection, project_gaussians
from .reference import rasterize_reference

BACKENDS = ("auto", "cpu", "gsplat", "reference")

__all__ = [
    "ALPHA_THRESHOLD", "BACKENDS", "MAX_ALPHA", "T_THRESHOLD", "TILE_SIZE", "CudaUnavailableError", "Projection",
    "RenderOutput", "project_gaussians", "rasterize_cpu", "rasterize_reference", "render", "render_frames", "render_views", "resolve_backend",
]


@dataclass
class RenderOutput:
    """One rendered view (``render``), or several stacked on a leading axis ([C, H, W, ...] from ``render_views``,
    [F, H, W, ...] from ``render_frames``)."""

    rgb: Tensor  # [H, W, 3] composited over the background
    alpha: Tensor  # [H, W, 1] accumulated opacity (1 - final transmittance)
    depth: Tensor  # [H, W, 1] expected camera z in metres: sum(w_i z_i) / max(alpha, 1e-10); 0 where empty


def resolve_backend(backend: str, means: Tensor) -> str:
    """"auto" -> "gsplat" when CUDA is available and ``means`` is on it, else "cpu"; others pass through."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if (torch.cuda.is_available() and means.is_cuda) else "cpu"
    return backend


def render(
    means: Tensor,  # [N, 3] world, metres
    quats: Tensor,  # [N, 4] wxyz, need not be normalised
    scales: Tensor,  # [N, 3] linear standard deviations, metres
    opacities: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [N, 3] rgb
    K: Tensor,  # [3, 3] intrinsics, pixels
    viewmat: Tensor,  # [4, 4] world-to-camera
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]; None = black
    backend: str = "auto",
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> RenderOutput:
    """Render Gaussians to an image; differentiable w.r.t. means, quats, scales, opacities,
    colors and background. See the module docstring for the backends."""
    backend = resolve_backend(backend, means)
    if backend == "gsplat":
        rgb, alpha, depth = render_gsplat(means, quats, scales, opacities, colors, K, viewmat, width, height, background, near, far, eps2d)
        return RenderOutput(rgb, alpha, depth)

    proj = project_gaussians(means, quats, scales, K, viewmat, width, height, opacities=opacities, near=near, far=far, eps2d=eps2d)
    keep = torch.nonzero(proj.valid).squeeze(1)
    depths = proj.depths[keep]
    feats = torch.cat([colors[keep], depths[:, None]], 1)  # depth rides along as a 4th channel (gsplat's RGB+ED)
    bg = torch.zeros(3, dtype=colors.dtype, device=colors.device) if background is None else background.to(colors)
    bg4 = torch.cat([bg, torch.zeros_like(bg[:1])])
    args = (proj.means2d[keep], proj.conics[keep], feats, opacities[keep], depths, proj.radii[keep], width, height, bg4)
    out, alpha = rasterize_cpu(*args) if backend == "cpu" else rasterize_reference(*args)
    depth = out[..., 3:4] / alpha.clamp_min(1e-10)
    return RenderOutput(rgb=out[..., :3], alpha=alpha, depth=depth)


def render_views(
    means: Tensor,  # [N, 3] world, metres
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3] linear standard deviations, metres
    opacities: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [N, 3] rgb
    Ks: Tensor,  # [C, 3, 3] intrinsics, pixels
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    width: int,
    height: int,
    background: Tensor | None = None,  # [3], behind every view; None = black
    backend: str = "auto",
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> RenderOutput:
    """C views of the same Gaussians, all width x height: rgb [C, H, W, 3], alpha and depth [C, H, W, 1].

    gsplat renders the camera batch in one call (previews and turntables on a GPU). The CPU and reference
    backends render view by view through ``render``: the pure-torch twin the batched call is tested against.
    """
    if Ks.ndim != 3 or viewmats.ndim != 3 or Ks.shape[0] != viewmats.shape[0]:
        raise ValueError(f"expected Ks [C, 3, 3] and viewmats [C, 4, 4], got {tuple(Ks.shape)} and {tuple(viewmats.shape)}")
    if resolve_backend(backend, means) == "gsplat":
        return RenderOutput(*render_gsplat_views(means, quats, scales, opacities, colors, Ks, viewmats, width, height,
                                                 background, near, far, eps2d))  # fmt: skip
    views = [render(means, quats, scales, opacities, colors, k, v, width, height, background, backend, near, far, eps2d)
             for k, v in zip(Ks, viewmats)]  # fmt: skip
    return RenderOutput(*(torch.stack([getattr(o, f) for o in views]) for f in ("rgb", "alpha", "depth")))


def render_frames(
    means: Tensor,  # [F, N, 3] world, metres: F frames of the same N Gaussians
    quats: Tensor,  # [F, N, 4] wxyz
    scales: Tensor,  # [F, N, 3] linear standard deviations, metres
    opacities: Tensor,  # [F, N] in [0, 1]
    colors: Tensor,  # [F, N, 3] rgb
    K: Tensor,  # [3, 3] intrinsics, pixels
    viewmat: Tensor,  # [4, 4] world-to-camera
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]; None = black
    backend: str = "auto",
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> RenderOutput:
    """F frames (``sega.avatar.frames.animate_frames``) from one camera: rgb [F, H, W, 3], alpha and depth
    [F, H, W, 1]. gsplat draws the batch in one call; the CPU and reference backends draw frame by frame
    through ``render``, the twin the batched call is tested against."""
    if means.ndim != 3:
        raise ValueError(f"expected means [F, N, 3], got {tuple(means.shape)}")
    if resolve_backend(backend, means) == "gsplat":
        return RenderOutput(*render_gsplat_frames(means, quats, scales, opacities, colors, K, viewmat, width, height,
                                                  background, near, far, eps2d))  # fmt: skip
    frames = [render(*g, K, viewmat, width, height, background, backend, near, far, eps2d)
              for g in zip(means, quats, scales, opacities, colors)]  # fmt: skip
    return RenderOutput(*(torch.stack([getattr(o, f) for o in frames]) for f in ("rgb", "alpha", "depth")))
