"""Tests for sega.render: projection parity with gsplat's own torch reference, CPU tile
rasteriser vs the dense torch twin (images and gradients), finite differences, edge cases,
backend selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sega.render.reference
from sega.camera import orbit_camera
from sega.render import (
    ALPHA_THRESHOLD,
    CudaUnavailableError,
    RenderOutput,
    project_gaussians,
    rasterize_cpu,
    rasterize_reference,
    render,
    render_views,
    resolve_backend,
)
from sega.render.projection import quat_scale_to_covar

gsplat_torch = pytest.importorskip("gsplat.cuda._torch_impl")

DIST = 0.8  # camera distance (metres) used by the scenes below


def make_camera(width=64, height=48, yaw=20.0, pitch=10.0, dtype=torch.float64):
    cam = orbit_camera(yaw, pitch, DIST, fov_deg=20.0, width=width, height=height)
    K, viewmat = cam.torch(dtype)
    return cam, K, viewmat


def random_scene(seed: int, n: int, cam, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """A head-sized cluster in front of the camera plus some off-screen, partly off-screen and
    behind-camera Gaussians, a few fully opaque (exercises the 0.999 clamp and early termination)
    and a few below the alpha threshold (culled)."""
    g = torch.Generator().manual_seed(seed)
    n_main = n - n // 5
    means = [0.06 * torch.randn(n_main, 3, generator=g, dtype=dtype)]
    means[0][: n // 8] *= 0.15  # a dense core: many layers, so pixels reach T <= 1e-4 and terminate
    centre = torch.as_tensor(cam.position, dtype=dtype)
    k = n // 5
    side = torch.randn(k, 3, generator=g, dtype=dtype)
    side[: k // 2] *= 0.25  # mostly off-screen or crossing the border
    side[k // 2:] = centre + 0.2 * centre / centre.norm() + 0.05 * side[k // 2:]  # behind the camera
    means.append(side)
    means = torch.cat(means)
    scales = torch.exp(torch.empty(n, 3, dtype=dtype).uniform_(np.log(0.002), np.log(0.03), generator=g))
    opacities = torch.rand(n, generator=g, dtype=dtype)
    opacities[::7] = 1.0
    opacities[3::11] = 0.5 * ALPHA_THRESHOLD
    opacities[1: n // 8] = 1.0  # an opaque, overlapping core
    scales[1: n // 8] = scales[1: n // 8].clamp_min(0.01)
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "scales": scales,
        "opacities": opacities,
        "colors": torch.rand(n, 3, generator=g, dtype=dtype),
    }


def run(scene, K, viewmat, width, height, backend, background=None, requires_grad=False):
    params = {k: v.clone().requires_grad_(requires_grad) for k, v in scene.items()}
    bg = None if background is None else background.clone().requires_grad_(requires_grad)
    out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
                 K, viewmat, width, height, bg, backend=backend)
    return out, params, bg


# ----------------------------------------------------------------------------------------- projection


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_gsplat_torch_reference(seed):
    width, height = 64, 48
    cam, K, viewmat = make_camera(width, height, yaw=-30.0 + 25 * seed)
    s = random_scene(seed, 300, cam)
    proj = project_gaussians(s["means"], s["quats"], s["scales"], K, viewmat, width, height, near=0.01, far=100.0, eps2d=0.3)

    covars_ref, _ = gsplat_torch._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    covars = quat_scale_to_covar(s["quats"], s["scales"])
    torch.testing.assert_close(covars, covars_ref, rtol=1e-10, atol=1e-14)

    radii_ref, means2d_ref, depths_ref, conics_ref, _ = gsplat_torch._fully_fused_projection(
        s["means"], covars_ref, viewmat[None], K[None], width, height, eps2d=0.3, near_plane=0.01, far_plane=100.0)
    valid_ref = (radii_ref[0] > 0).all(-1)
    assert valid_ref.sum() > 100 and (~valid_ref).sum() > 20  # the scene exercises culling both ways
    assert torch.equal(proj.valid, valid_ref)
    assert torch.equal(proj.radii, radii_ref[0].to(torch.int32))
    v = proj.valid
    torch.testing.assert_close(proj.means2d[v], means2d_ref[0][v], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(proj.conics[v], conics_ref[0][v], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(proj.depths, depths_ref[0], rtol=1e-5, atol=1e-8)


def test_projection_matches_gsplat_float32_and_persp_proj_clamp():
    """float32 parity, and Gaussians far outside the frustum: their Jacobian uses gsplat's clamped x/z, y/z."""
    width, height = 64, 48
    cam, K, viewmat = make_camera(width, height, dtype=torch.float32)
    s = random_scene(5, 200, cam, dtype=torch.float32)
    s["means"][:40] += torch.tensor([0.12, -0.1, 0.0])  # beyond 1.3 tan(fov/2) off-axis: the clamp is active
    proj = project_gaussians(s["means"], s["quats"], s["scales"], K, viewmat, width, height)
    covars = gsplat_torch._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)[0]
    means_c, covars_c = gsplat_torch._world_to_cam(s["means"], covars, viewmat[None])
    means2d_ref, cov2d_ref = gsplat_torch._persp_proj(means_c, covars_c, K[None], width, height)
    cov2d = cov2d_ref[0] + 0.3 * torch.eye(2)
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    conics_ref = torch.stack([cov2d[:, 1, 1] / det, -cov2d[:, 0, 1] / det, cov2d[:, 0, 0] / det], -1)
    ahead = means_c[0, :, 2] > 0.01
    torch.testing.assert_close(proj.means2d[ahead], means2d_ref[0][ahead], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(proj.conics[ahead], conics_ref[ahead], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(proj.depths, means_c[0, :, 2], rtol=1e-5, atol=1e-6)


def test_opacity_aware_radius_is_conservative():
    """Outside the radii box every alpha is below the threshold, so the tile culling drops nothing."""
    width, height = 64, 48
    cam, K, viewmat = make_camera(width, height)
    s = random_scene(3, 150, cam)
    p = project_gaussians(s["means"], s["quats"], s["scales"], K, viewmat, width, height, opacities=s["opacities"])
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    v = p.valid
    dx = p.means2d[v, 0, None, None] - xs
    dy = p.means2d[v, 1, None, None] - ys
    c = p.conics[v]
    sigma = 0.5 * (c[:, 0, None, None] * dx**2 + c[:, 2, None, None] * dy**2) + c[:, 1, None, None] * dx * dy
    alpha = s["opacities"][v, None, None] * torch.exp(-sigma)
    r = p.radii[v].to(torch.float64)
    outside = (dx.abs() > r[:, 0, None, None]) | (dy.abs() > r[:, 1, None, None])
    assert outside.any() and (~outside).any()
    assert (alpha[outside] < ALPHA_THRESHOLD).all()
    assert (p.radii[~p.valid] == 0).all()
    assert not p.valid[s["opacities"] < ALPHA_THRESHOLD].any()


# ------------------------------------------------------------------------------- CPU vs dense reference


CASES = [(0, 50, 64, 48), (1, 120, 64, 48), (2, 200, 64, 48), (3, 160, 70, 45), (4, 200, 33, 61)]


@pytest.mark.parametrize("seed,n,width,height", CASES)
def test_cpu_matches_reference_images(seed, n, width, height, monkeypatch):
    cam, K, viewmat = make_camera(width, height, yaw=15.0 * seed - 30.0)
    s = random_scene(seed, n, cam)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64) if seed % 2 else None
    cpu, _, _ = run(s, K, viewmat, width, height, "cpu", bg)
    ref, _, _ = run(s, K, viewmat, width, height, "reference", bg)
    for name in ("rgb", "alpha", "depth"):
        a, b = getattr(cpu, name), getattr(ref, name)
        assert a.shape == b.shape == (height, width, 3 if name == "rgb" else 1)
        assert (a - b).abs().max().item() <= 1e-4, name
    # the scenes are not trivial: coverage, empty pixels, depth in range, and early termination all happen
    assert ref.alpha.max() > 0.999 and ref.alpha.min() < 0.5
    assert ((ref.depth > 0.5) & (ref.depth < 1.1)).sum() > 0.2 * width * height
    monkeypatch.setattr(sega.render.reference, "T_THRESHOLD", 0.0)
    no_stop, _, _ = run(s, K, viewmat, width, height, "reference", bg)
    assert (no_stop.rgb - ref.rgb).abs().max() > 1e-6  # the T <= 1e-4 rule changed some pixels


def _weighted_loss(out: RenderOutput, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w_rgb = torch.rand(out.rgb.shape, generator=g, dtype=out.rgb.dtype) - 0.3
    w_a = torch.rand(out.alpha.shape, generator=g, dtype=out.rgb.dtype) - 0.3
    w_d = torch.rand(out.depth.shape, generator=g, dtype=out.rgb.dtype) - 0.3
    return (out.rgb * w_rgb).sum() + (out.alpha * w_a).sum() + (out.depth * w_d).sum()


@pytest.mark.parametrize("seed,n,width,height", CASES[:4])
def test_cpu_matches_reference_gradients(seed, n, width, height):
    cam, K, viewmat = make_camera(width, height, yaw=10.0 * seed)
    s = random_scene(seed + 10, n, cam)
    bg = torch.tensor([0.3, 0.1, 0.7], dtype=torch.float64)
    grads = {}
    for backend in ("cpu", "reference"):
        out, params, bg_p = run(s, K, viewmat, width, height, backend, bg, requires_grad=True)
        _weighted_loss(out, seed).backward()
        grads[backend] = {**{k: p.grad for k, p in params.items()}, "background": bg_p.grad}
    for name, g_ref in grads["reference"].items():
        g_cpu = grads["cpu"][name]
        assert torch.isfinite(g_cpu).all(), name
        scale = max(1.0, g_ref.abs().max().item())
        assert (g_cpu - g_ref).abs().max().item() <= 1e-4 * scale, name
        assert g_ref.abs().max() > 0, name


def test_rasterisation_stage_directly_with_three_channels():
    """The rasterisation-stage functions agree on arbitrary 2D Gaussians (D=3, no depth channel)."""
    g = torch.Generator().manual_seed(7)
    m, width, height = 80, 40, 36
    means2d = torch.rand(m, 2, generator=g, dtype=torch.float64) * torch.tensor([width + 20.0, height + 20.0]) - 10.0
    a = torch.rand(m, generator=g, dtype=torch.float64) * 0.3 + 0.02
    c = torch.rand(m, generator=g, dtype=torch.float64) * 0.3 + 0.02
    b = (torch.rand(m, generator=g, dtype=torch.float64) - 0.5) * torch.sqrt(a * c)
    conics = torch.stack([a, b, c], -1)
    det = a * c - b * b
    radii = torch.stack([torch.ceil(3.33 * torch.sqrt(c / det)), torch.ceil(3.33 * torch.sqrt(a / det))], -1).to(torch.int32)
    colors = torch.rand(m, 3, generator=g, dtype=torch.float64)
    opac = torch.rand(m, generator=g, dtype=torch.float64)
    depths = torch.rand(m, generator=g, dtype=torch.float64)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    outs = []
    for fn in (rasterize_cpu, rasterize_reference):
        leaves = [t.clone().requires_grad_() for t in (means2d, conics, colors, opac, bg)]
        img, alpha = fn(leaves[0], leaves[1], leaves[2], leaves[3], depths, radii, width, height, leaves[4])
        ((img * torch.linspace(-1, 1, img.numel(), dtype=torch.float64).reshape(img.shape)).sum() + alpha.sum()).backward()
        outs.append((img, alpha, [t.grad for t in leaves]))
    (img_c, alpha_c, g_c), (img_r, alpha_r, g_r) = outs
    torch.testing.assert_close(img_c, img_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(alpha_c, alpha_r, rtol=0, atol=1e-10)
    for gc, gr in zip(g_c, g_r):
        torch.testing.assert_close(gc, gr, rtol=1e-8, atol=1e-8)


def test_cpu_gradcheck_tiny_scene():
    """Finite differences (float64) through projection + numba forward/backward."""
    width, height = 20, 14
    cam = orbit_camera(10.0, -5.0, 0.5, fov_deg=20.0, width=width, height=height)
    K, viewmat = cam.torch(torch.float64)
    g = torch.Generator().manual_seed(3)
    n = 6
    means = 0.01 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = 0.004 + 0.004 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    opac = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)

    def f(means, quats, scales, opac, colors, bg):
        out = render(means, quats, scales, opac, colors, K, viewmat, width, height, bg, backend="cpu")
        return out.rgb, out.alpha, out.depth

    inputs = tuple(t.clone().requires_grad_() for t in (means, quats, scales, opac, colors, bg))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-5, rtol=1e-4, fast_mode=True)


# --------------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_empty_and_all_culled_scenes_render_background(backend):
    width, height = 32, 24
    cam, K, viewmat = make_camera(width, height)
    bg = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    empty = {k: torch.zeros((0,) + shape, dtype=torch.float64) for k, shape in
             (("means", (3,)), ("quats", (4,)), ("scales", (3,)), ("opacities", ()), ("colors", (3,)))}
    behind = random_scene(0, 20, cam)
    behind["means"] = torch.as_tensor(cam.position) * 1.5 + 0.01 * behind["means"]  # all behind the camera
    for scene in (empty, behind):
        out, params, bg_p = run(scene, K, viewmat, width, height, backend, bg, requires_grad=True)
        assert torch.equal(out.rgb, bg.expand(height, width, 3))
        assert torch.equal(out.alpha, torch.zeros(height, width, 1, dtype=torch.float64))
        assert torch.equal(out.depth, torch.zeros(height, width, 1, dtype=torch.float64))
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
        for p in params.values():
            assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))
        torch.testing.assert_close(bg_p.grad, torch.full((3,), float(width * height), dtype=torch.float64))


def test_float32_inputs_keep_dtype_and_agree_with_float64():
    width, height = 64, 48
    cam, K, viewmat = make_camera(width, height)
    s = random_scene(8, 150, cam)
    out64, _, _ = run(s, K, viewmat, width, height, "cpu")
    s32 = {k: v.float() for k, v in s.items()}
    out32, params, _ = run(s32, K.float(), viewmat.float(), width, height, "cpu", requires_grad=True)
    assert out32.rgb.dtype == torch.float32 and out32.depth.dtype == torch.float32
    assert (out32.rgb.double() - out64.rgb).abs().mean() < 1e-5
    assert (out32.alpha.double() - out64.alpha).abs().mean() < 1e-5
    _weighted_loss(out32, 0).backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in params.values())


def test_unnormalised_quaternions_are_normalised():
    width, height = 32, 24
    cam, K, viewmat = make_camera(width, height)
    s = random_scene(4, 60, cam)
    a, _, _ = run(s, K, viewmat, width, height, "cpu")
    s2 = dict(s, quats=s["quats"] * 3.7)
    b, _, _ = run(s2, K, viewmat, width, height, "cpu")
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------- backend choice


def test_auto_backend_picks_cpu_for_cpu_tensors():
    means = torch.zeros(1, 3)
    assert resolve_backend("auto", means) == "cpu"
    assert resolve_backend("reference", means) == "reference"
    with pytest.raises(ValueError, match="unknown render backend"):
        resolve_backend("opengl", means)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_gsplat_backend_without_cuda_raises_clear_error():
    width, height = 16, 16
    cam, K, viewmat = make_camera(width, height, dtype=torch.float32)
    s = random_scene(0, 10, cam, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="CUDA") as info:
        render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], K, viewmat, width, height, backend="gsplat")
    assert isinstance(info.value, CudaUnavailableError)
    assert "torch.cuda.is_available() is False" in str(info.value)


def test_gsplat_backend_call_fits_installed_gsplat(monkeypatch):
    """Without a GPU: the arguments we pass bind to the installed gsplat.rasterization signature,
    and its RGB+ED output is unpacked into rgb / alpha / depth."""
    import inspect

    import gsplat

    import sega.render.gsplat_backend as gb

    seen = {}
    real_signature = inspect.signature(gsplat.rasterization)

    def fake_rasterization(*args, **kwargs):
        seen["bound"] = real_signature.bind(*args, **kwargs)
        h, w = kwargs["height"], kwargs["width"]
        colors = torch.arange(h * w * 4, dtype=torch.float32).reshape(1, h, w, 4)
        return colors, torch.full((1, h, w, 1), 0.5), {}

    monkeypatch.setattr(gb, "check_gsplat_usable", lambda means: None)
    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    width, height = 8, 6
    cam, K, viewmat = make_camera(width, height, dtype=torch.float32)
    s = random_scene(0, 10, cam, dtype=torch.float32)
    out = render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], K, viewmat, width, height,
                 torch.ones(3), backend="gsplat")
    args = seen["bound"].arguments
    assert args["render_mode"] == "RGB+ED" and args["rasterize_mode"] == "classic" and args["eps2d"] == 0.3
    assert args["viewmats"].shape == (1, 4, 4) and args["Ks"].shape == (1, 3, 3) and args["backgrounds"].shape == (1, 3)
    assert out.rgb.shape == (height, width, 3) and out.alpha.shape == (height, width, 1) and out.depth.shape == (height, width, 1)
    assert out.depth[0, 1, 0] == 7.0  # channel 3 of pixel (0, 1)


def _camera_batch(width, height, yaws=(-40.0, 0.0, 25.0), dtype=torch.float32):
    cams = [make_camera(width, height, yaw=y, dtype=dtype) for y in yaws]
    return cams[1][0], torch.stack([k for _, k, _ in cams]), torch.stack([v for _, _, v in cams])


def test_render_views_on_the_cpu_is_render_per_view():
    """The batched call's CPU twin: every view equals ``render`` at that camera, stacked in order."""
    width, height = 40, 32
    cam, Ks, viewmats = _camera_batch(width, height)
    s = random_scene(4, 150, cam, dtype=torch.float32)
    bg = torch.tensor([0.1, 0.5, 0.9])
    out = render_views(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], Ks, viewmats, width, height, bg)
    assert out.rgb.shape == (3, height, width, 3) and out.alpha.shape == (3, height, width, 1) and out.depth.shape == (3, height, width, 1)
    for c in range(3):
        one = render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], Ks[c], viewmats[c], width, height, bg)
        for name in ("rgb", "alpha", "depth"):
            assert torch.equal(getattr(out, name)[c], getattr(one, name)), (c, name)
    assert not torch.equal(out.rgb[0], out.rgb[2])  # the views differ
    with pytest.raises(ValueError, match="Ks"):
        render_views(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], Ks[0], viewmats, width, height)


def test_gsplat_batched_call_fits_installed_gsplat(monkeypatch):
    """Without a GPU: C cameras go to gsplat in one call (viewmats [C, 4, 4], Ks [C, 3, 3], a background
    per view), and its [C, H, W, 4] output is split into rgb / alpha / depth per view."""
    import inspect

    import gsplat

    import sega.render.gsplat_backend as gb

    calls = []
    real_signature = inspect.signature(gsplat.rasterization)

    def fake_rasterization(*args, **kwargs):
        calls.append(real_signature.bind(*args, **kwargs))
        c, h, w = kwargs["viewmats"].shape[0], kwargs["height"], kwargs["width"]
        colors = torch.arange(c * h * w * 4, dtype=torch.float32).reshape(c, h, w, 4)
        return colors, torch.full((c, h, w, 1), 0.5), {}

    monkeypatch.setattr(gb, "check_gsplat_usable", lambda means: None)
    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    monkeypatch.setattr(sega.render, "resolve_backend", lambda backend, means: "gsplat")
    width, height = 8, 6
    cam, Ks, viewmats = _camera_batch(width, height)
    s = random_scene(0, 10, cam, dtype=torch.float32)
    out = render_views(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], Ks, viewmats, width, height, torch.ones(3))
    assert len(calls) == 1
    args = calls[0].arguments
    assert args["viewmats"].shape == (3, 4, 4) and args["Ks"].shape == (3, 3, 3) and args["backgrounds"].shape == (3, 3)
    assert torch.equal(args["viewmats"][2], viewmats[2])
    assert out.rgb.shape == (3, height, width, 3) and out.depth.shape == (3, height, width, 1)
    assert out.depth[1, 0, 1, 0] == height * width * 4 + 7.0  # view 1, pixel (0, 1), channel 3


def test_gsplat_frame_batch_fits_installed_gsplat(monkeypatch):
    """Without a GPU: F frames' Gaussians [F, N, ...] go to gsplat in one call on its leading batch axis
    (one camera per frame), and come back as [F, H, W, ...]."""
    import inspect

    import gsplat

    import sega.render.gsplat_backend as gb
    from sega.render import render_frames

    calls = []
    real_signature = inspect.signature(gsplat.rasterization)

    def fake_rasterization(*args, **kwargs):
        calls.append(real_signature.bind(*args, **kwargs))
        f, c = kwargs["viewmats"].shape[:2]
        return torch.zeros(f, c, kwargs["height"], kwargs["width"], 4), torch.ones(f, c, kwargs["height"], kwargs["width"], 1), {}

    monkeypatch.setattr(gb, "check_gsplat_usable", lambda means: None)
    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    monkeypatch.setattr(sega.render, "resolve_backend", lambda backend, means: "gsplat")
    width, height = 8, 6
    cam, K, viewmat = make_camera(width, height, dtype=torch.float32)
    s = random_scene(0, 10, cam, dtype=torch.float32)
    fields = [s[k][None].expand(4, *s[k].shape) for k in ("means", "quats", "scales", "opacities", "colors")]
    out = render_frames(*fields, K, viewmat, width, height, torch.ones(3))
    args = calls[0].arguments
    assert len(calls) == 1 and args["means"].shape == (4, 10, 3) and args["opacities"].shape == (4, 10)
    assert args["viewmats"].shape == (4, 1, 4, 4) and args["Ks"].shape == (4, 1, 3, 3) and args["backgrounds"].shape == (4, 1, 3)
    assert out.rgb.shape == (4, height, width, 3) and out.alpha.shape == (4, height, width, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_frame_batch_matches_cpu_on_cuda():
    from sega.render import render_frames

    width, height = 64, 48
    cam, K, viewmat = make_camera(width, height, dtype=torch.float32)
    scenes = [random_scene(seed, 200, cam, dtype=torch.float32) for seed in (6, 7)]
    fields = [torch.stack([sc[k] for sc in scenes]) for k in ("means", "quats", "scales", "opacities", "colors")]
    bg = torch.tensor([0.2, 0.3, 0.4])
    cpu = render_frames(*fields, K, viewmat, width, height, bg, "cpu")
    gpu = render_frames(*(f.cuda() for f in fields), K.cuda(), viewmat.cuda(), width, height, bg.cuda(), "auto")
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(gpu, name).cpu() - getattr(cpu, name)).abs()
        assert diff.mean() < 1e-4 and diff.max() < 2e-2, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_batched_views_match_cpu_on_cuda():
    width, height = 64, 48
    cam, Ks, viewmats = _camera_batch(width, height)
    s = random_scene(5, 200, cam, dtype=torch.float32)
    bg = torch.tensor([0.2, 0.3, 0.4])
    cpu = render_views(*(s[k] for k in ("means", "quats", "scales", "opacities", "colors")), Ks, viewmats, width, height, bg, "cpu")
    gpu = render_views(*(s[k].cuda() for k in ("means", "quats", "scales", "opacities", "colors")), Ks.cuda(), viewmats.cuda(),
                       width, height, bg.cuda(), "auto")  # fmt: skip
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(gpu, name).cpu() - getattr(cpu, name)).abs()
        assert diff.mean() < 1e-4 and diff.max() < 2e-2, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_matches_cpu_on_cuda():
    width, height = 64, 48
    cam, K, viewmat = make_camera(width, height, dtype=torch.float32)
    s = random_scene(2, 200, cam, dtype=torch.float32)
    bg = torch.tensor([0.2, 0.3, 0.4])
    cpu, cpu_params, _ = run(s, K, viewmat, width, height, "cpu", bg, requires_grad=True)
    s_cuda = {k: v.cuda() for k, v in s.items()}
    gpu, gpu_params, _ = run(s_cuda, K.cuda(), viewmat.cuda(), width, height, "auto", bg.cuda(), requires_grad=True)
    for name in ("rgb", "alpha", "depth"):
        # float32 CUDA (fast exp) vs float64 CPU: allow for rare threshold flips via the mean.
        diff = (getattr(gpu, name).cpu() - getattr(cpu, name)).abs()
        assert diff.mean() < 1e-4 and diff.max() < 2e-2, name
    _weighted_loss(cpu, 1).backward()
    w = _weighted_loss(RenderOutput(gpu.rgb.cpu(), gpu.alpha.cpu(), gpu.depth.cpu()), 1)
    w.backward()
    for k in cpu_params:
        g_c, g_g = cpu_params[k].grad, gpu_params[k].grad.cpu()
        rel = (g_c - g_g).norm() / g_c.norm().clamp_min(1e-12)
        assert rel < 1e-2, k
