"""The priors of the person-specific optimisation, and the novel-view coverage term.

``regularisers(maps, RegulariserInputs)``: bounded offsets (hair may grow out along the normal),
bounded scales and thickness, UV smoothness, left-right colour symmetry where the photo says nothing.
``coverage_loss``: full alpha inside the mesh silhouette at a random orbit view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...camera import orbit_camera
from ...gaussians import Gaussians
from ...meshraster import render_mesh
from ...render import render as render_gaussians
from ..avatar import ORBIT_FOV_DEG, ORBIT_HEAD_FILL
from ..options import AvatarOptions

HAIR_REGIONS = ("head_neck",)  # regions whose Gaussians may move further out along the normal (hair volume)
COVERAGE_PITCH_DEG = 20.0  # novel views for the coverage loss use pitch in +- this
COVERAGE_ALPHA_EPS = 1e-4  # clamp in the coverage / mask BCE terms


@dataclass(frozen=True)
class RegulariserInputs:
    """What the priors of ``regularisers`` need besides the maps: constants of one optimisation run."""

    options: AvatarOptions  # weights and bounds (w_offset, offset_bound_m, w_scale, max_thickness_texels, ...)
    spacing: Tensor  # [T] metres between neighbouring texels on the surface
    log_max_scale: Tensor  # [T, 1] log-scale bound (``sega.avatar.rig.scale_cap``)
    log_min_scale: float  # log of ``options.min_scale_m``
    hair: Tensor  # [T] bool: texels that may also move out along the normal (``HAIR_REGIONS``)
    unseen: Tensor  # [U] int64: texels the photo does not see squarely (confidence < 1)
    mirror: Tensor  # [U] int64: their mirror texels
    no_evidence: Tensor  # [U] symmetry weight of each: 1 - photo confidence
    pair_a: Tensor  # [P] int64: first texel of each atlas-neighbour pair (``neighbour_pairs``)
    pair_b: Tensor  # [P] int64: second texel


def regularisers(params: dict[str, Tensor], inputs: RegulariserInputs) -> Tensor:
    """The priors' loss: scalar Tensor. params: the map fields ({"offset": [T, 3], "log_scale": [T, 3],
    "rotation": [T, 4], "color": [T, 3], ...}) as bound this step (maps + decoder residuals)."""
    r = inputs
    options, spacing, log_max_scale, log_min_scale = r.options, r.spacing, r.log_max_scale, r.log_min_scale
    hair, unseen, mirror, no_evidence, pa, pb = r.hair, r.unseen, r.mirror, r.no_evidence, r.pair_a, r.pair_b
    off = params["offset"]
    # Offsets: free within offset_bound_m; hair texels may also move out along the normal.
    normal = off[:, 2]
    outward = torch.where(hair, normal.clamp(0.0, options.hair_offset_bound_m), torch.zeros_like(normal))
    rest = torch.cat([off[:, :2], (normal - outward)[:, None]], 1)
    loss = options.w_offset * (rest.norm(dim=1) - options.offset_bound_m).clamp_min(0.0).pow(2).mean()
    ls = params["log_scale"]
    if options.w_thickness > 0:
        # Extent along the surface normal (local z): sigma_n^2 = sum_i s_i^2 R[2, i]^2 with R the local rotation.
        q = params["rotation"]
        w, x, y, z = (q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)).unbind(1)
        row = torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1)
        sigma_n = ((torch.exp(2 * ls) * row * row).sum(1) + 1e-20).sqrt() / spacing
        loss = loss + options.w_thickness * (sigma_n - options.max_thickness_texels).clamp_min(0).pow(2).mean()
    loss = loss + options.w_scale * ((ls - log_max_scale).clamp_min(0).pow(2).mean() + (log_min_scale - ls).clamp_min(0).pow(2).mean())
    # index_select (backward: index_add) is much cheaper on CPU than advanced indexing (index_put).
    sel = torch.index_select
    if pa.numel() and (options.w_smooth_offset > 0 or options.w_smooth_scale > 0):
        both = torch.cat([off / spacing[:, None], ls], 1)  # [T, 6]: offsets in texel spacings, log scales
        d2 = (sel(both, 0, pa) - sel(both, 0, pb)).pow(2).mean(0)  # [6]
        loss = loss + options.w_smooth_offset * d2[:3].sum() + options.w_smooth_scale * d2[3:].sum()
    if options.w_symmetry > 0 and unseen.numel():
        col = params["color"]
        d2 = (sel(col, 0, unseen) - sel(col, 0, mirror)).pow(2).sum(1)
        loss = loss + options.w_symmetry * (no_evidence * d2).mean()
    return loss


def coverage_loss(
    g: Gaussians, vertices: np.ndarray, faces: np.ndarray, face_mask: np.ndarray, gen: torch.Generator, options: AvatarOptions
) -> Tensor:
    """mean(1 - alpha) over the silhouette of the ``face_mask`` triangles at a random orbit view
    (yaw in +-180 degrees, pitch in +-COVERAGE_PITCH_DEG), rendered where ``g`` lives; ``gen`` a CPU generator."""
    dev = g.means.device
    r = torch.rand(2, generator=gen)  # on the CPU: the same views on every device
    yaw = float(360.0 * r[0] - 180.0)
    pitch = float((2 * r[1] - 1) * COVERAGE_PITCH_DEG)
    centre = vertices.mean(0)
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    dist = radius / (ORBIT_HEAD_FILL * math.tan(math.radians(ORBIT_FOV_DEG) / 2))
    cam = orbit_camera(yaw, pitch, dist, centre, ORBIT_FOV_DEG, options.coverage_size, options.coverage_size)
    sil = torch.as_tensor(render_mesh(vertices, faces, cam, face_mask=face_mask).mask, device=dev)
    if not bool(sil.any()):
        return torch.zeros((), device=dev)
    K, viewmat = cam.torch(device=dev)
    out = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, K, viewmat, cam.width, cam.height, None, backend="auto")
    return (1.0 - out.alpha[..., 0][sil]).mean()
