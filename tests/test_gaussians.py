"""Gaussian conventions (sega.gaussians): binding texel maps to a mesh, rigid motion, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sega.gaussians import (
    GaussianMaps,
    Gaussians,
    bind,
    bind_frames,
    rgb_to_sh_dc,
    sh_dc_to_rgb,
)
from sega.geometry import axis_angle_to_matrix, matrix_to_quat, quat_left_matrix, quat_multiply, quat_to_matrix
from sega.uv import Atlas

ATLAS_RESOLUTION = 64  # small atlas: a few thousand texels are plenty for convention tests
SKULL_MIN_Y_M = 0.05  # scalp texels above this height (metres, template) form a convex cap


@pytest.fixture(scope="module")
def atlas(ict_model) -> Atlas:
    return Atlas.build(ict_model, ATLAS_RESOLUTION)


@pytest.fixture(scope="module")
def vertices(ict_model) -> torch.Tensor:
    return torch.as_tensor(ict_model.vertices, dtype=torch.float64)


def random_maps(n: int, seed: int = 0, dtype=torch.float64) -> GaussianMaps:
    g = torch.Generator().manual_seed(seed)
    return GaussianMaps(
        offset=0.002 * torch.randn(n, 3, generator=g, dtype=dtype),
        rotation=torch.randn(n, 4, generator=g, dtype=dtype),
        log_scale=math.log(1e-3) + 0.3 * torch.randn(n, 3, generator=g, dtype=dtype),
        opacity_logit=torch.randn(n, generator=g, dtype=dtype),
        color=torch.rand(n, 3, generator=g, dtype=dtype),
    )


def same_rotation(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """|<qa, qb>| for unit quaternions: 1 when they are the same rotation (q and -q are)."""
    return (qa * qb).sum(-1).abs()


def test_zero_offset_identity_rotation_sits_on_the_surface(atlas, vertices):
    n = atlas.num_texels
    log_scale = torch.full((n, 3), math.log(2e-3), dtype=torch.float64)
    maps = GaussianMaps.initial(n, log_scale, torch.full((n, 3), 0.5), opacity_logit=0.0, dtype=torch.float64)
    g = bind(maps, atlas, vertices)
    points = atlas.texel_points(vertices)
    frames = atlas.texel_frames(vertices)
    assert torch.allclose(g.means, points, atol=1e-12)
    # Identity local rotation: the Gaussian's axes are the texel frame (tangent, bitangent, normal).
    assert torch.allclose(quat_to_matrix(g.quats), frames, atol=1e-9)
    assert torch.allclose(g.scales, torch.full_like(g.scales, 2e-3))
    assert torch.allclose(g.opacities, torch.full_like(g.opacities, 0.5))
    assert torch.equal(g.colors, maps.color)
    # Every Gaussian lies on its own triangle's plane: (mean - corner0) . normal == 0.
    corner0 = vertices[torch.as_tensor(atlas.texel_triangles[:, 0])]
    assert ((g.means - corner0) * frames[..., 2]).sum(-1).abs().max() < 1e-7  # float32 barycentrics


def test_offset_is_in_the_local_tangent_frame(atlas, vertices):
    n = atlas.num_texels
    frames = atlas.texel_frames(vertices)
    points = atlas.texel_points(vertices)
    for axis in range(3):
        maps = random_maps(n)
        maps.offset = torch.zeros(n, 3, dtype=torch.float64)
        maps.offset[:, axis] = 0.003
        g = bind(maps, atlas, vertices)
        assert torch.allclose(g.means, points + 0.003 * frames[..., axis], atol=1e-12)
    # Positive normal offsets move outwards: away from the skull's centre on the top of the head.
    skull = torch.as_tensor(atlas.region_mask("head_neck")) & (points[:, 1] > SKULL_MIN_Y_M)
    maps = random_maps(n)
    maps.offset = torch.tensor([0.0, 0.0, 0.01], dtype=torch.float64).repeat(n, 1)
    g = bind(maps, atlas, vertices)
    centre = points[skull].mean(0)
    outward = (g.means - centre).norm(dim=1) > (points - centre).norm(dim=1)
    assert skull.sum() > 50 and outward[skull].all()


def test_quat_left_matrix_matches_quat_multiply():
    """The fast twin (one quaternion's left-multiplication matrix) equals the Hamilton product, gradients too."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1000, 4, generator=gen, dtype=torch.float64)
    fast, slow = b @ quat_left_matrix(q).T, quat_multiply(q.expand_as(b), b)
    assert torch.allclose(fast, slow, atol=1e-12)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), q)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), q)
    assert torch.allclose(g_fast, g_slow, atol=1e-9)
    assert torch.allclose(quat_left_matrix(torch.stack([q.detach(), -q.detach()])) @ b[:2, :, None],
                          quat_multiply(torch.stack([q.detach(), -q.detach()]), b[:2])[..., None], atol=1e-12)  # batched


def test_rotating_the_mesh_rotates_means_and_quats(atlas, vertices):
    maps = random_maps(atlas.num_texels, seed=1)
    r = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64))
    t = torch.tensor([0.05, -0.02, 0.3], dtype=torch.float64)
    g0 = bind(maps, atlas, vertices)
    g1 = bind(maps, atlas, vertices @ r.T + t)
    assert torch.allclose(g1.means, g0.means @ r.T + t, atol=1e-10)
    assert torch.allclose(quat_to_matrix(g1.quats), r @ quat_to_matrix(g0.quats), atol=1e-9)
    assert torch.equal(g1.scales, g0.scales) and torch.equal(g1.opacities, g0.opacities)
    # The rigid shortcut used for static texels gives the same Gaussians.
    g2 = g0.transformed(r, t)
    assert torch.allclose(g2.means, g1.means, atol=1e-10)
    assert same_rotation(g2.quats, g1.quats).min() > 1 - 1e-9


def test_local_rotation_composes_after_the_frame(atlas, vertices):
    """world rotation = frame @ local rotation: a local 90-degree turn about the normal swaps tangent axes."""
    n = atlas.num_texels
    maps = random_maps(n, seed=2)
    half = math.sqrt(0.5)
    maps.rotation = torch.tensor([half, 0.0, 0.0, half], dtype=torch.float64).repeat(n, 1)  # +90 deg about local z
    g = bind(maps, atlas, vertices)
    frames = atlas.texel_frames(vertices)
    axes = quat_to_matrix(g.quats)
    assert torch.allclose(axes[..., 0], frames[..., 1], atol=1e-9)  # local x -> bitangent
    assert torch.allclose(axes[..., 1], -frames[..., 0], atol=1e-9)  # local y -> -tangent
    assert torch.allclose(axes[..., 2], frames[..., 2], atol=1e-9)  # normal unchanged


def test_gradients_reach_maps_and_vertices(atlas, vertices):
    maps = random_maps(atlas.num_texels, seed=3).map(lambda t: t.clone().requires_grad_(True))
    verts = vertices.clone().requires_grad_(True)
    g = bind(maps, atlas, verts)
    w = torch.linspace(-1, 1, g.means.numel(), dtype=torch.float64).reshape(g.means.shape)
    loss = (g.means * w).sum() + g.quats[:, 1].sum() + g.scales.sum() + g.opacities.sum() + g.colors.sum()
    loss.backward()
    for name, t in maps.tensors().items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name
    used = torch.as_tensor(np.unique(atlas.texel_triangles))
    assert torch.isfinite(verts.grad).all() and (verts.grad[used].abs().sum(1) > 0).float().mean() > 0.9


def test_bind_checks_sizes_and_precomputed_frame_quats_match(atlas, vertices):
    with pytest.raises(ValueError):
        bind(random_maps(atlas.num_texels + 1), atlas, vertices)
    maps = random_maps(atlas.num_texels, seed=4)
    points, frames = atlas.texel_points(vertices), atlas.texel_frames(vertices)
    a = bind_frames(maps, points, frames)
    b = bind_frames(maps, points, frames, matrix_to_quat(frames))
    for k, v in a.tensors().items():
        assert torch.equal(v, b.tensors()[k]), k


def test_containers_round_trip():
    maps = random_maps(10, dtype=torch.float32)
    back = GaussianMaps.from_numpy(maps.to_numpy())
    for k, v in maps.tensors().items():
        assert torch.equal(v, back.tensors()[k]), k
    sub = maps.subset(np.array([1, 3]))
    assert len(sub) == 2 and torch.equal(sub.color, maps.color[[1, 3]])
    total = maps.add(maps)
    assert torch.allclose(total.offset, 2 * maps.offset)
    g = Gaussians(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.ones(2, 3), torch.ones(2), torch.zeros(2, 3))
    assert len(Gaussians.cat([g, g])) == 4
    rgb = torch.rand(5, 3)
    assert torch.allclose(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb, atol=1e-6)
    assert torch.allclose(rgb_to_sh_dc(torch.full((1, 3), 0.5)), torch.zeros(1, 3))
