"""EWA projection of 3D Gaussians to screen space, in plain torch (autograd does the backward).

Why torch and not numba: projection is O(N) dense tensor algebra that torch already
vectorises well, and keeping it in torch means gradients reach ``means``, ``quats`` and
``scales`` through autograd with no hand-written Jacobians. Only the rasterisation stage
(O(pixels x overlapping Gaussians), irregular) needs a custom kernel.

The maths follows gsplat 1.5.3 (``ProjectionEWA3DGSFused.cu`` and its pure-torch twin
``gsplat.cuda._torch_impl._fully_fused_projection``) step by step, so the CPU and CUDA
backends see the same 2D Gaussians:

* 3D covariance ``Sigma = (R S)(R S)^T`` from the wxyz quaternion (normalised here) and
  linear scales;
* world -> camera with the world-to-camera ``viewmat`` (OpenCV axes, see
  ``sega.conventions``);
* perspective Jacobian evaluated at ``(x, y)`` clamped so that ``x/z`` stays within
  ``[-(cx/fx + 0.3 tan_fovx), (W - cx)/fx + 0.3 tan_fovx]`` (= 1.3 tan(fov/2) for a centred
  principal point), likewise for y -- gsplat's ``persp_proj``;
* low-pass filter ``Sigma2d + eps2d * I`` (``rasterize_mode="classic"``: no opacity
  compensation);
* screen-space box radius (per axis, like gsplat >= 1.5): ``ceil(extend * sqrt(Sigma2d_ii))``
  with ``extend = 3.33`` or, when opacities are given, the opacity-aware
  ``min(3.33, sqrt(2 ln(opacity / ALPHA_THRESHOLD)))``. Outside that box
  ``opacity * exp(-d^T conic d / 2) < ALPHA_THRESHOLD`` always holds, so the tile culling
  is exact (it never drops a pixel the alpha rule would keep) and the dense reference
  rasteriser, which has no culling at all, agrees with the tiled one to rounding.
* culling: depth outside ``(near, far)``, singular 2D covariance, opacity below
  ``ALPHA_THRESHOLD``, or a box entirely off-screen -> radii 0, ``valid`` False.

Culled Gaussians get finite placeholder values (their z is replaced by 1 before any
division) so that masking them afterwards never turns ``0 * inf`` into NaN gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry import quat_to_matrix

TILE_SIZE = 16  # pixels per tile side (as gsplat)
ALPHA_THRESHOLD = 1.0 / 255.0  # alphas below this are skipped
T_THRESHOLD = 1e-4  # a pixel stops once its transmittance would drop to this or below
MAX_ALPHA = 0.999  # alpha is clamped to this (keeps 1 / (1 - alpha) finite in backward)
MAX_EXTEND = 3.33  # box half-size in standard deviations (gsplat's constant)


@dataclass
class Projection:
    """Screen-space Gaussians. Culled rows hold finite junk and have ``valid`` False."""

    means2d: Tensor  # [N, 2] pixels (x right, y down; pixel centres at +0.5)
    conics: Tensor  # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor  # [N] camera-space z, metres
    radii: Tensor  # [N, 2] int32 box half-sizes in pixels (x, y); 0 when culled
    valid: Tensor  # [N] bool


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariance ``(R S)(R S)^T``.

    quats: Tensor  # [N, 4] wxyz, any non-zero norm
    scales: Tensor  # [N, 3] linear standard deviations (metres)
    returns: Tensor  # [N, 3, 3]
    """
    r = quat_to_matrix(quats)  # normalises, as gsplat does
    m = r * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [N, 3] world, metres
    quats: Tensor,  # [N, 4] wxyz (normalised here)
    scales: Tensor,  # [N, 3] linear, metres
    K: Tensor,  # [3, 3] pixels
    viewmat: Tensor,  # [4, 4] world-to-camera
    width: int,
    height: int,
    opacities: Tensor | None = None,  # [N] in [0, 1]; enables gsplat's opacity-aware radius
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> Projection:
    """Project 3D Gaussians (EWA, pinhole). Differentiable in means2d, conics and depths."""
    n = means.shape[0]
    if means.shape != (n, 3) or quats.shape != (n, 4) or scales.shape != (n, 3):
        raise ValueError(f"expected means [N,3], quats [N,4], scales [N,3]; got {tuple(means.shape)}, {tuple(quats.shape)}, {tuple(scales.shape)}")
    if opacities is not None and opacities.shape != (n,):
        raise ValueError(f"expected opacities [N]; got {tuple(opacities.shape)}")
    K = K.to(means)
    viewmat = viewmat.to(means)

    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ rot.T + trans  # [N, 3]
    covars_c = rot @ quat_scale_to_covar(quats, scales) @ rot.T  # [N, 3, 3]

    x, y, z = means_c.unbind(-1)
    depth_ok = (z > near) & (z < far)
    z = torch.where(depth_ok, z, torch.ones_like(z))  # placeholder for culled rows (NaN-free grads)

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)

    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(n, 2, 3)
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)  # [N, 2, 2]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)  # [N, 2]

    c00 = cov2d[:, 0, 0] + eps2d
    c11 = cov2d[:, 1, 1] + eps2d
    c01 = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    det_raw = c00 * c11 - c01 * c01
    det = det_raw.clamp_min(1e-10)
    conics = torch.stack([c11 / det, -c01 / det, c00 / det], -1)  # [N, 3]

    with torch.no_grad():
        valid = depth_ok & (det_raw > 0)
        if opacities is None:
            extend = torch.full_like(z, MAX_EXTEND)
        else:
            op = opacities.detach().to(z)
            valid = valid & (op >= ALPHA_THRESHOLD)
            extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(MAX_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(c00.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c11.detach().clamp_min(0)))
        valid = valid & ((rx > 0) | (ry > 0))
        m2 = means2d.detach()
        inside = (m2[:, 0] + rx > 0) & (m2[:, 0] - rx < width) & (m2[:, 1] + ry > 0) & (m2[:, 1] - ry < height)
        valid = valid & inside & torch.isfinite(rx) & torch.isfinite(ry)
        radii = torch.stack([rx, ry], -1).nan_to_num(0.0).clamp(0, 2**30).to(torch.int32)
        radii = torch.where(valid[:, None], radii, torch.zeros_like(radii))

    return Projection(means2d=means2d, conics=conics, depths=means_c[:, 2], radii=radii, valid=valid)


def tile_grid(width: int, height: int) -> tuple[int, int]:
    """(tiles_x, tiles_y) covering a width x height image with TILE_SIZE tiles."""
    return math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
