"""Many frames at once: ``animate_frames`` gives F frames' Gaussians as [F, N, ...] tensors in one pass.

Why: the per-frame work of ``Avatar.animate`` is a few dozen small tensor ops (blendshapes, triangle
frames, the dynamic decoder, binding). On a GPU each is one tiny kernel launch, so one frame costs the
launches, not the arithmetic; a clip or a preview strip batched on a leading frame axis pays them once.
``Avatar.animate`` is the one-frame twin: frame f of the batch equals ``animate(expressions[f], pose f)``
(tests hold it). ``render_frames`` draws each frame from one camera (one gsplat call for the whole batch
on a GPU, frame by frame through ``sega.render.render`` on the CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera
from ..gaussians import GaussianMaps, Gaussians, bind_frames
from ..geometry import axis_angle_to_matrix, matrix_to_quat, quat_multiply
from ..nets.decoders import residual_to_maps
from ..render import RenderOutput
from ..render import render_frames as render_gaussian_frames
from ..uv import edges_with_motion, frames_from_edges

if TYPE_CHECKING:  # annotations only
    from .avatar import Avatar

FIELDS = ("means", "quats", "scales", "opacities", "colors")


def _frame_axis(g: Gaussians, frames: int) -> Gaussians:
    """Every field with the leading frame axis [F, N, ...] (expanded, not copied, where it has none)."""
    return Gaussians(**{k: v if v.ndim == (2 if k == "opacities" else 3) else v.expand(frames, *v.shape)
                        for k, v in g.tensors().items()})  # fmt: skip


def _as_batch(x, shape: tuple[int, ...], device: torch.device, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, Tensor) else x, dtype=torch.float32, device=device)
    if tuple(t.shape) != shape:
        raise ValueError(f"expected {what} of shape {shape}, got {tuple(t.shape)}")
    return t


def animate_frames(avatar: Avatar, expressions, rotations=None, translations=None) -> Gaussians:
    """World-space Gaussians for F frames: fields [F, N, ...] in ``Avatar.animate``'s order (static texels,
    hair, dynamic texels), without gradients.

    expressions: [F, E] absolute expression weights; rotations, translations: [F, 3] the head pose per
    frame (axis-angle radians about the head model's pivot, metres), or None (canonical pose)."""
    rig = avatar.rig
    dev = rig.device
    expr = torch.as_tensor(expressions, dtype=torch.float32, device=dev)
    if expr.ndim != 2 or expr.shape[1] != avatar.head_model.num_expressions:
        raise ValueError(f"expected expressions [F, {avatar.head_model.num_expressions}], got {tuple(expr.shape)}")
    n = expr.shape[0]
    with torch.no_grad():
        if avatar.dynamic_residual is not None:  # a per-frame hook (tests, tracking): frame by frame
            frames = [avatar.animate(e) for e in expr]
            out = Gaussians(**{k: torch.stack([getattr(g, k) for g in frames]) for k in FIELDS})
        else:
            motion = (expr @ rig.expression_basis).reshape(n, -1, 3)  # [F, Vd, 3]
            verts = rig.base_vertices + motion
            pts = (verts[:, rig.texel_tri] * rig.texel_bary[..., None]).sum(-2)  # [F, Td, 3]
            e1, e2 = edges_with_motion(rig.face_edges, motion[:, rig.faces])  # [F, U, 3] each
            tri_frames = frames_from_edges(e1, e2, rig.face_uv_coeffs, rig.face_uv_ok)[:, rig.texel_face]  # [F, Td, 3, 3]
            maps: GaussianMaps = rig.dynamic_maps
            if avatar.decoders is not None:
                maps = maps.add(residual_to_maps(avatar.decoders.dynamic(avatar.decoders.encoder(expr))))  # [F, Td, ...]
            dynamic = _frame_axis(bind_frames(rig.dynamic_maps_at(maps, e1, e2, expr), pts, tri_frames), n)
            static = _frame_axis(rig.static, n)
            out = Gaussians(**{k: torch.cat([getattr(static, k), getattr(dynamic, k)], 1) for k in FIELDS})
        if rotations is None and translations is None:
            return out
        rot = _as_batch(np.zeros((n, 3)) if rotations is None else rotations, (n, 3), dev, "rotations")
        trans = _as_batch(np.zeros((n, 3)) if translations is None else translations, (n, 3), dev, "translations")
        r = axis_angle_to_matrix(rot)  # [F, 3, 3]
        shift = rig.pivot - (r @ rig.pivot[:, None])[..., 0] + trans  # [F, 3]: x -> r (x - pivot) + pivot + t
        return Gaussians(
            means=out.means @ r.transpose(1, 2) + shift[:, None],
            quats=quat_multiply(matrix_to_quat(r)[:, None].expand_as(out.quats), out.quats),
            scales=out.scales, opacities=out.opacities, colors=out.colors,
        )  # fmt: skip


def render_frames(avatar: Avatar, gaussians: Gaussians, camera: Camera,
                  background: tuple[float, float, float] | None = None, backend: str = "auto") -> RenderOutput:  # fmt: skip
    """Each frame of ``animate_frames``' output [F, N, ...] from one camera: rgb [F, H, W, 3], alpha and
    depth [F, H, W, 1]. gsplat draws the whole batch in one call; the CPU draws frame by frame."""
    dev = gaussians.means.device
    bg = torch.tensor(avatar.options.background if background is None else background, dtype=torch.float32, device=dev)
    k, view = camera.torch(torch.float32, dev)
    with torch.no_grad():
        return render_gaussian_frames(*(getattr(gaussians, f) for f in FIELDS), k, view, camera.width, camera.height, bg, backend=backend)


__all__ = ["animate_frames", "render_frames"]
