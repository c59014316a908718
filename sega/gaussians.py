"""Gaussian conventions: per-texel parameter maps, world-space Gaussians, and binding between them.

Why one module: the avatar stores Gaussians as *maps* over UV-atlas texels (one Gaussian per texel,
parameters in the texel's local tangent frame), while the renderer and the exporters want plain
world-space Gaussians. Keeping both containers and the single function that maps one to the other
(``bind``) here means every later piece (optimisation, the dynamic decoder, export, the viewer)
agrees on units, frames and activations.

Shapes use gsplat-style comments: T texels (rows of a ``GaussianMaps``), N Gaussians, V vertices.

Conventions (see ``sega.conventions``):

* ``offset`` is in metres in the texel's local frame, whose columns are (tangent, bitangent,
  normal) from ``Atlas.texel_frames`` (``x_world = frame @ x_local``, det +1).
* ``rotation`` is a wxyz quaternion in the same local frame (need not be normalised; the world
  quaternion is ``quat(frame) * rotation``, i.e. local rotation first, then the frame).
* ``log_scale`` is the natural log of the three standard deviations (metres) along the rotated
  local axes; ``scales = exp(log_scale)``.
* ``opacity_logit``: ``opacities = sigmoid(opacity_logit)``.
* ``color`` is spherical-harmonics degree 0 stored directly as rgb ("[0, 1]-ish": optimisation may
  push it slightly outside; renderers use it as is, viewers clamp). Export converts it to the
  3DGS ``f_dc`` coefficient with ``f_dc = (rgb - 0.5) / SH_C0`` (``rgb_to_sh_dc``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from .conventions import SH_C0
from .geometry import matrix_to_quat, quat_left_matrix, quat_multiply

GAUSSIAN_MAP_FIELDS = ("offset", "rotation", "log_scale", "opacity_logit", "color")
IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)  # wxyz
QUAT_NORM_EPS = 1e-12  # clamp of quaternion norms before normalising
AREA_EPS = 1e-14  # m^2: clamp of a rest triangle's (doubled) area, so degenerate ones do not divide by zero


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """[..., 3] rgb -> [..., 3] SH degree-0 coefficient ``f_dc`` (3DGS PLY convention)."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(f_dc: Tensor) -> Tensor:
    """Inverse of ``rgb_to_sh_dc``."""
    return f_dc * SH_C0 + 0.5


@dataclass
class GaussianMaps:
    """Per-texel Gaussian parameters (the avatar's learnable state), one row per atlas texel."""

    offset: Tensor  # [T, 3] metres, local (tangent, bitangent, normal) frame, from the texel's surface point
    rotation: Tensor  # [T, 4] wxyz quaternion in the local frame (normalised when used)
    log_scale: Tensor  # [T, 3] log standard deviations (metres) along the rotated local axes
    opacity_logit: Tensor  # [T] logit of the opacity
    color: Tensor  # [T, 3] rgb (SH degree 0 as rgb), about [0, 1]

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    @classmethod
    def initial(
        cls,
        num_texels: int,
        log_scale: Tensor,
        color: Tensor,
        opacity_logit: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> GaussianMaps:
        """Zero offsets, identity rotations, the given per-texel log scales [T, 3] and colours [T, 3], on
        ``device`` (None: torch's default)."""
        return cls(
            offset=torch.zeros(num_texels, 3, dtype=dtype, device=device),
            rotation=torch.tensor(IDENTITY_QUAT, dtype=dtype, device=device).repeat(num_texels, 1),
            log_scale=torch.as_tensor(log_scale, dtype=dtype, device=device).clone(),
            opacity_logit=torch.full((num_texels,), float(opacity_logit), dtype=dtype, device=device),
            color=torch.as_tensor(color, dtype=dtype, device=device).clone(),
        )

    def tensors(self) -> dict[str, Tensor]:
        """The fields by name (for optimisers and saving)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def map(self, fn) -> GaussianMaps:
        """A new ``GaussianMaps`` with ``fn`` applied to every field."""
        return GaussianMaps(**{k: fn(v) for k, v in self.tensors().items()})

    def detach(self) -> GaussianMaps:
        return self.map(lambda t: t.detach().clone())

    @property
    def device(self) -> torch.device:
        return self.offset.device

    def to(self, device: torch.device | str) -> GaussianMaps:
        """Every field on ``device`` (the same tensors where they are there already)."""
        return self.map(lambda t: t.to(device))

    def subset(self, index) -> GaussianMaps:
        """Rows ``index`` (bool mask or integer indices, numpy or torch; numpy ones go to the maps' device)."""
        idx = torch.as_tensor(np.asarray(index), device=self.device) if isinstance(index, np.ndarray) else index
        return self.map(lambda t: t[idx])

    def add(self, residual: GaussianMaps) -> GaussianMaps:
        """Field-wise sum (e.g. static maps + a dynamic decoder's residuals)."""
        other = residual.tensors()
        return GaussianMaps(**{k: v + other[k] for k, v in self.tensors().items()})

    def with_scale_cap(self, log_max: Tensor) -> GaussianMaps:
        """The same maps with ``log_scale`` capped at ``log_max``: Tensor  # [T, 1] or [T, 3] (log metres).
        Why: binding is where every consumer (fitting, animate, the exported graph) meets, so a cap here
        keeps any splat from growing past what its texel may cover, at every expression."""
        return GaussianMaps(self.offset, self.rotation, torch.minimum(self.log_scale, log_max), self.opacity_logit, self.color)

    def with_log_scale_added(self, log_factor: Tensor) -> GaussianMaps:
        """The same maps with every scale multiplied by exp(log_factor): Tensor  # [..., T, 1] (``stretch_log_scale``)."""
        return GaussianMaps(self.offset, self.rotation, self.log_scale + log_factor, self.opacity_logit, self.color)

    def with_color_added(self, change: Tensor) -> GaussianMaps:
        """The same maps with ``change``: Tensor  # [..., T, 3] added to the colours (``sega.avatar.lids``)."""
        return GaussianMaps(self.offset, self.rotation, self.log_scale, self.opacity_logit, self.color + change)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """float32 arrays keyed by field name (for ``.npz`` files)."""
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.tensors().items()}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray], dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> GaussianMaps:
        """Inverse of ``to_numpy``, on ``device`` (None: torch's default)."""
        return cls(**{k: torch.as_tensor(np.asarray(arrays[k]), dtype=dtype, device=device) for k in GAUSSIAN_MAP_FIELDS})


@dataclass
class Gaussians:
    """World-space Gaussians, the renderer's input (``sega.render.render``)."""

    means: Tensor  # [N, 3] metres, world
    quats: Tensor  # [N, 4] wxyz, world (unit)
    scales: Tensor  # [N, 3] linear standard deviations, metres
    opacities: Tensor  # [N] in [0, 1]
    colors: Tensor  # [N, 3] rgb

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def cat(cls, parts: list[Gaussians]) -> Gaussians:
        """Concatenate along N."""
        return cls(**{k: torch.cat([getattr(p, k) for p in parts], 0) for k in (f.name for f in fields(cls))})

    def detach(self) -> Gaussians:
        return Gaussians(**{k: v.detach() for k, v in self.tensors().items()})

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str) -> Gaussians:
        """Every field on ``device`` (the same tensors where they are there already)."""
        return Gaussians(**{k: v.to(device) for k, v in self.tensors().items()})

    def subset(self, index: Tensor) -> Gaussians:
        """Rows ``index`` [K] (integer indices or a bool mask; differentiable)."""
        return Gaussians(**{k: v[index] for k, v in self.tensors().items()})

    def transformed(self, rotation: Tensor, translation: Tensor) -> Gaussians:
        """Rigidly moved copy: ``x -> rotation @ x + translation``.

        rotation: [3, 3] rotation matrix; translation: [3] metres.
        """
        q = matrix_to_quat(rotation).to(self.quats)
        return Gaussians(
            means=self.means @ rotation.T.to(self.means) + translation.to(self.means),
            quats=self.quats @ quat_left_matrix(q).T,  # q * each quat (``quat_multiply``'s fast twin for one q)
            scales=self.scales,
            opacities=self.opacities,
            colors=self.colors,
        )


def triangle_area2(e1: Tensor, e2: Tensor) -> Tensor:
    """Twice the triangles' areas: e1, e2: Tensor  # [..., U, 3] edges p1 - p0, p2 - p0 -> [..., U]."""
    return torch.linalg.cross(e1, e2, dim=-1).norm(dim=-1)


def stretch_log_scale(e1: Tensor, e2: Tensor, rest_area2: Tensor, max_stretch: float) -> Tensor:
    """log of how much each triangle's splats grow with it: sqrt(area / rest area), clamped to [1, max_stretch].

    e1, e2: Tensor  # [..., U, 3] the triangles' edges now; rest_area2: Tensor  # [U] ``triangle_area2`` where
    the splats were fitted. Returns Tensor  # [..., U]. Why: splats keep their fitted size while their triangle
    stretches, and a closing lid (its triangles up to 4.6x their open area) left gaps that showed the eyeball
    through a blink (the lid's alpha under 0.9 on 32% of the open eye's pixels; 7% grown). Never below 1: a
    compressed triangle's splats only overlap more, and a squinting photo's lids are sized for the open eye
    (``sega.avatar.build.init.LID_SPLAT_GROWTH``)."""
    ratio = triangle_area2(e1, e2) / rest_area2.clamp_min(AREA_EPS)
    return 0.5 * torch.log(ratio.clamp(1.0, max_stretch * max_stretch))


def bind_frames(maps: GaussianMaps, points: Tensor, frames: Tensor, frame_quats: Tensor | None = None) -> Gaussians:
    """World-space Gaussians from maps and explicit surface samples (the core of ``bind``).

    maps: T rows; points: [T, 3] surface points (metres); frames: [T, 3, 3] rotations whose columns
    are (tangent, bitangent, normal); frame_quats: [T, 4] ``matrix_to_quat(frames)`` when the caller
    already has it (e.g. a fixed mesh during optimisation). Differentiable w.r.t. every input.
    """
    # frames @ offset as a broadcast sum: faster than a batched 3x3 matmul on CPU.
    means = points + (frames * maps.offset[..., None, :]).sum(-1)
    local = maps.rotation / maps.rotation.norm(dim=-1, keepdim=True).clamp_min(QUAT_NORM_EPS)
    fq = matrix_to_quat(frames) if frame_quats is None else frame_quats
    quats = quat_multiply(fq, local)
    return Gaussians(
        means=means,
        quats=quats,
        scales=torch.exp(maps.log_scale),
        opacities=torch.sigmoid(maps.opacity_logit),
        colors=maps.color,
    )


def bind(maps: GaussianMaps, atlas, vertices: Tensor) -> Gaussians:
    """Place texel Gaussians on a mesh.

    maps: one row per texel of ``atlas`` (a ``sega.uv.Atlas``); vertices: [V, 3] the posed mesh (metres).
    position = barycentric surface point + frame @ offset; rotation = quat(frame) * local rotation;
    scale = exp(log_scale); opacity = sigmoid(opacity_logit); colour as stored.
    Differentiable w.r.t. the maps and the vertices.
    """
    if len(maps) != atlas.num_texels:
        raise ValueError(f"maps have {len(maps)} rows, the atlas has {atlas.num_texels} texels")
    vertices = torch.as_tensor(vertices)
    return bind_frames(maps, atlas.texel_points(vertices), atlas.texel_frames(vertices))
