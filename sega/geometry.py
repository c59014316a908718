"""Rotations and rigid transforms (torch, differentiable). Quaternions are unit wxyz."""

from __future__ import annotations

import torch
from torch import Tensor


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues. aa: [..., 3] radians -> [..., 3, 3]. Smooth at zero (Taylor terms)."""
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    theta = torch.sqrt(theta2.clamp_min(1e-12))
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(m: Tensor) -> Tensor:
    """[..., 3, 3] rotation -> [..., 3] axis-angle (radians); via quaternion for stability."""
    return quat_to_axis_angle(matrix_to_quat(m))


def quat_to_matrix(q: Tensor) -> Tensor:
    """q: [..., 4] wxyz (normalised here) -> [..., 3, 3]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(m: Tensor) -> Tensor:
    """[..., 3, 3] -> [..., 4] wxyz with w >= 0 (Shepperd's method, branch-free via argmax)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        -2,
    )  # [..., 4 candidates, 4]
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """[..., 4] wxyz -> [..., 3] radians."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., :1])
    scale = torch.where(s < 1e-8, 2.0 / q[..., :1].clamp_min(1e-12), angle / s.clamp_min(1e-12))
    return q[..., 1:] * scale


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of [..., 4] wxyz quaternions (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quat_left_matrix(q: Tensor) -> Tensor:
    """[..., 4] wxyz -> [..., 4, 4] L with ``L @ b == quat_multiply(q, b)`` for every [4] quaternion b.

    Why: one rotation applied to many quaternions (a head pose over every Gaussian) is then a single
    [N, 4] x [4, 4] product instead of 16 products and a stack over [N] (``quat_multiply`` is its twin)."""
    w, x, y, z = q.unbind(-1)
    rows = [
        torch.stack([w, -x, -y, -z], -1),
        torch.stack([x, w, -z, y], -1),
        torch.stack([y, z, w, -x], -1),
        torch.stack([z, -y, x, w], -1),
    ]
    return torch.stack(rows, -2)


def apply_head_pose(vertices: Tensor, rotation: Tensor, translation: Tensor, pivot: Tensor) -> Tensor:
    """Rigid head pose: rotate about ``pivot`` then translate.

    vertices: [..., V, 3]; rotation: [..., 3] axis-angle (radians); translation: [..., 3] metres; pivot: [3].
    """
    r = axis_angle_to_matrix(rotation)  # [..., 3, 3]
    return (vertices - pivot) @ r.transpose(-1, -2) + pivot + translation[..., None, :]
