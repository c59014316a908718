"""The avatar: Gaussians bound to a fitted head mesh, built from one photo, driven by expressions.

Why this shape (following SEGA):

* The head model, fitted to the photo (``sega.fit``), gives geometry, a camera and expressions;
  Gaussians live on its UV atlas (``sega.uv``), one per texel, as ``GaussianMaps`` in each texel's
  tangent frame (``sega.gaussians``). Deforming the mesh drives the Gaussians.
* **Static / dynamic split.** Most of the head (scalp, forehead, ears, neck, back) does not move
  with expressions; only the head pose moves it, rigidly. Those texels are bound once
  (``AnimationRig``, "precompute") and per frame only rotated and translated. The *dynamic* texels
  (those whose surface point moves more than ``AvatarOptions.dynamic_threshold_m`` under some
  expression at weight 1, plus teeth, mouth interior and eyeballs) are re-bound to the deformed
  mesh every frame; this is also where the learned dynamic decoder's per-frame residuals plug in
  (``Avatar.dynamic_residual_maps``), so the per-frame cost scales with the dynamic part only.
* **Learned branches** (``sega.model.decoders``, ``Avatar.decoders``): per frame, the expression goes
  through the displacement VAE's encoder (the *expression feature*) and a small UV-space CNN with a
  per-avatar identity feature map, whose residual attributes are added to the dynamic texels' maps;
  once per avatar, a static decoder's residuals are baked into the static Gaussians at
  ``precompute``. Both start at exactly zero (zero-initialised last conv) and are fitted with the
  maps in the person-specific optimisation.
* **Person-specific optimisation.** Colours are initialised by projecting texels into the photo
  (visible ones), mirroring (unseen ones whose mirror is seen) and inpainting (the rest); then all
  maps are optimised against the photo's head crop through the differentiable renderer with
  photometric (L1 + D-SSIM) and silhouette losses, plus priors that keep the unseen parts
  plausible: bounded offsets, scales and thickness, UV smoothness, left-right colour symmetry where
  the photo says nothing, and full alpha coverage of the mesh silhouette at random novel views.
  Texels the photo sees only at grazing angles change colour and opacity slowly (their evidence is a
  sliver of pixels; repainting them freely smears the face outline over the sides of the head).

Expressions passed to ``animate`` are absolute weights of the head model (``HeadModel``);
``Avatar.expression`` is the one fitted to the photo: the avatar's neutral (rest) face, used when
none is given; ``Avatar.expression_with(jawOpen=1.0)`` sets named weights on top of it. Head pose =
axis-angle rotation about ``HeadModel.pivot`` then translation (metres).

Shapes: T texels, Ts static, Td dynamic, V vertices, E expressions, I identity components.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import ConvexHull, cKDTree
from torch import Tensor

from . import __version__
from .camera import Camera, orbit_camera
from .gaussians import GaussianMaps, Gaussians, bind_frames
from .geometry import axis_angle_to_matrix, matrix_to_quat
from .headmodel.base import HeadModel
from .meshraster import project_vertices, render_mesh
from .model.decoders import AvatarDecoders, DynamicDecoderConfig, raw_residual, residual_to_maps
from .render import RenderOutput
from .render import render as render_gaussians
from .uv import Atlas, AtlasOptions, face_frames, frames_from_edges, uv_frame_coefficients

AVATAR_FORMAT_VERSION = 2  # bump when the .npz layout changes (2: learned decoders + expression encoder)
PRESETS = ("fast", "default", "high")
BUILD_STAGES = ("detect", "fit", "segment", "initialise", "optimise", "precompute")

# Regions that are always dynamic (they move with the jaw / eyes, or are only seen when they do).
ALWAYS_DYNAMIC_REGIONS = ("teeth", "mouth_interior", "eyeball_left", "eyeball_right")
MOUTH_REGIONS = ("teeth", "mouth_interior")
HAIR_REGIONS = ("head_neck",)  # regions whose Gaussians may move further out along the normal (hair volume)
COVERAGE_REGIONS = ("face", "head_neck")  # the outer surface: what the novel-view coverage term renders
STEPPED_FIELDS = ("color", "opacity_logit")  # map fields whose step size follows the photo confidence

# Colour defaults (sRGB in [0, 1]) for parts a photo rarely shows.
TEETH_COLOR = (0.90, 0.87, 0.80)  # off-white
MOUTH_INTERIOR_COLOR = (0.38, 0.10, 0.10)  # dark red
SCLERA_COLOR = (0.92, 0.90, 0.87)  # white of the eye, slightly warm

# Visibility test when projecting texels into the photo.
VISIBILITY_DEPTH_TOLERANCE_M = 0.002  # a texel is visible if within this of the z-buffer depth
VISIBILITY_MIN_COS = 0.25  # ... and its normal faces the camera at least this much (about 75 degrees)
VISIBILITY_MIN_MASK = 0.5  # ... and the person mask there is at least this
BLINK_EXPRESSIONS = ("eyeBlink_L", "eyeBlink_R")  # their moving texels are the eyelids
LID_MOVE_M = 0.002  # texels moving more than this under a blink are lid texels: strict visibility (project_texels)
INPAINT_NEIGHBOURS = 8  # seen texels averaged (inverse distance) for an unseen texel
INPAINT_SMOOTH_STEPS = 20  # neighbour-averaging passes over inpainted texels
SPACING_CLAMP = 1.5  # texel spacings are clamped to [median / this, median * this] per region
SMOOTH_PAIR_MAX_SPACING = 2.5  # atlas neighbours farther apart than this many texel spacings are not neighbours

# Framing of orbit / preview cameras.
ORBIT_FOV_DEG = 20.0  # field of view of orbit cameras
ORBIT_HEAD_FILL = 0.78  # fraction of the frame the head's bounding sphere diameter spans
ORBIT_REGIONS = ("face", "head_neck")  # regions whose vertices define the head's centre and size
STILL_BASIS_M = 1e-6  # expression displacements (metres at weight 1) below this are float16 round-off: the rig zeroes them
LINEARITY_TOLERANCE_M = 1e-5  # rig vertices vs HeadModel.deform (float32 rounding of the blendshape sums)
INPUT_VIEW_OCCLUSION_M = 0.02  # texels this far behind the input view's z-buffer are left out of its render
COVERAGE_PITCH_DEG = 20.0  # novel views for the coverage loss use pitch in +- this
COVERAGE_ALPHA_EPS = 1e-4  # clamp in the coverage / mask BCE terms
SSIM_WINDOW = 11  # SSIM Gaussian window (pixels)
SSIM_SIGMA = 1.5  # SSIM window standard deviation (pixels)
SSIM_C1 = 0.01**2  # SSIM stabilisers for a data range of 1
SSIM_C2 = 0.03**2


# ---------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AvatarOptions:
    """How an avatar is built. Saved (resolved) inside every avatar file."""

    # atlas / Gaussians
    atlas_resolution: int = 256  # texels per side of the UV atlas (one Gaussian per covered texel; 256 -> ~31k)
    init_scale_texels: float = 0.7  # initial in-plane std-dev, in texel spacings (neighbours overlap)
    init_normal_scale_ratio: float = 0.3  # initial std-dev along the normal / in-plane (flat splats)
    init_opacity: float = 0.95  # initial opacity of every Gaussian
    dynamic_threshold_m: float = 0.001  # texels moving more than this under one expression at weight 1 are dynamic
    # optimisation
    iterations: int = 200  # Adam steps of the person-specific optimisation on the photo
    render_size: int = 256  # side (px) of the head crop the optimisation renders and compares
    hair_margin: float = 0.08  # loss region = mesh silhouette dilated by this fraction of render_size
    lr_offset: float = 1e-4  # metres per step (Adam)
    lr_rotation: float = 2e-3  # quaternion units per step
    lr_log_scale: float = 1e-2  # log-metres per step
    lr_opacity: float = 5e-2  # logit units per step
    lr_color: float = 1e-2  # rgb units per step
    lr_final_fraction: float = 0.1  # learning rates decay (cosine) to this fraction of their start
    # loss weights
    w_l1: float = 0.8  # L1 photometric loss inside the loss region
    w_dssim: float = 0.2  # 1 - SSIM inside the loss region
    w_alpha: float = 0.1  # BCE of rendered alpha vs the person / silhouette mask (input view)
    w_symmetry: float = 1.0  # mean squared colour difference to the mirror texel, texels unseen in the photo
    w_offset: float = 1e6  # squared excess (metres) of offsets over their bounds (mean over texels: near-hard bound)
    w_scale: float = 1.0  # squared excess (log units) of scales outside their bounds
    w_thickness: float = 10.0  # squared excess (texel spacings) of the extent along the surface normal
    w_smooth_offset: float = 1.0  # squared differences of offsets (in texel spacings) between atlas neighbours
    w_smooth_scale: float = 0.1  # squared differences of log scales between atlas neighbours
    w_coverage: float = 0.2  # mean (1 - alpha) inside the mesh silhouette at a random novel view
    # regulariser settings
    offset_bound_m: float = 0.002  # free offset magnitude (metres) before the penalty starts
    hair_offset_bound_m: float = 0.015  # outward normal offset allowed on HAIR_REGIONS (hair volume)
    max_scale_texels: float = 3.0  # largest std-dev, in texel spacings: the penalty starts here, and bound Gaussians are
    # capped here (``scale_cap``; fitting, animate and the exported graph alike), so no splat outgrows its texel
    max_thickness_texels: float = 0.3  # largest std-dev along the surface normal (texel spacings): splats stay flat
    min_scale_m: float = 5e-5  # smallest std-dev before the penalty (metres)
    photo_cos_low: float = 0.3  # texels facing the input camera less than this (cosine) change at photo_min_step
    photo_cos_high: float = 0.7  # ... and from this cosine on, at the full learning rates
    photo_min_step: float = 0.15  # step (fraction of the learning rates) of texels the input view sees at grazing angles
    coverage_every: int = 3  # render one novel view for the coverage loss every this many steps
    coverage_size: int = 64  # side (px) of the novel-view coverage renders
    # learned branches (sega.model.decoders), fitted jointly with the maps
    decoders: bool = True  # give the avatar a dynamic (per-frame) and a static (baked) decoder
    dynamic_map_resolution: int = 32  # side of the dynamic decoder's residual map (its feature map is a quarter of it):
    # 32 keeps the exported per-frame graph within 2 ms native / 4 ms in onnxruntime-web at 18k dynamic texels;
    # 64 has twice the spatial detail for expression-dependent appearance at ~1.3x (native) / 1.45x (web) the time
    lr_decoder: float = 1e-3  # Adam learning rate of the decoders' parameters (feature maps and conv weights)
    w_residual: float = 1e-2  # mean squared raw decoder output (unit-scale channels), dynamic at the fitted + random expressions, static
    residual_expressions: int = 2  # random expressions (the VAE's training distribution) per residual-regulariser step
    residual_every: int = 4  # evaluate the dynamic decoder at random expressions every this many steps
    # misc
    preset_name: str = "default"  # the preset these options started from (informational; the fields are what count)
    seed: int = 0  # seeds torch and the novel-view sampler (CPU builds are deterministic)
    fit_preset: str = "default"  # sega.fit.FitOptions preset used for the head fit
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # rgb behind the avatar (optimisation and renders)

    @classmethod
    def preset(cls, name: str, **overrides) -> AvatarOptions:
        """Named presets: fast (tests, previews), default, high (slower, sharper)."""
        if name == "fast":
            base = cls(preset_name="fast", atlas_resolution=128, iterations=120, render_size=192, fit_preset="fast", coverage_size=48)
        elif name == "default":
            base = cls(preset_name="default")
        elif name == "high":
            base = cls(preset_name="high", atlas_resolution=320, iterations=600, render_size=320, fit_preset="high", coverage_size=96,
                       dynamic_map_resolution=64)  # fmt: skip
        else:
            raise ValueError(f"unknown preset {name!r} ({', '.join(PRESETS)})")
        return replace(base, **overrides)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["background"] = list(self.background)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AvatarOptions:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "background" in kw:
            kw["background"] = tuple(float(c) for c in kw["background"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# small image helpers (torch)
# ---------------------------------------------------------------------------------------------


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM of two images a, b: [H, W, C] in [0, 1] -> [H, W] (mean over channels).

    Gaussian window ``SSIM_WINDOW`` / ``SSIM_SIGMA`` with zero padding (as 3DGS), constants for a
    data range of 1. The window is applied as two 1-D passes (it is separable). Differentiable.
    """
    c = a.shape[-1]
    k = _gaussian_kernel1d(SSIM_WINDOW, SSIM_SIGMA, a.dtype).to(a.device)
    kx = k.view(1, 1, 1, -1).expand(5 * c, 1, 1, SSIM_WINDOW)
    ky = k.view(1, 1, -1, 1).expand(5 * c, 1, SSIM_WINDOW, 1)
    x = a.permute(2, 0, 1)[None]
    y = b.permute(2, 0, 1)[None]
    pad = SSIM_WINDOW // 2
    stack = torch.cat([x, y, x * x, y * y, x * y], 1).contiguous()  # [1, 5C, H, W]: one blur call for all five maps
    blurred = F.conv2d(F.conv2d(stack, kx, padding=(0, pad), groups=5 * c), ky, padding=(pad, 0), groups=5 * c)
    mu_x, mu_y, exx, eyy, exy = blurred.split(c, 1)
    sxx = exx - mu_x * mu_x
    syy = eyy - mu_y * mu_y
    sxy = exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den)[0].mean(0)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) of float images a, b [H, W, 3] over pixels where mask [H, W] is True."""
    err = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)[mask]
    return float(10.0 * np.log10(1.0 / max(float(err.mean()), 1e-12)))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of [H, W] bool by a disc of ``radius`` pixels."""
    if radius <= 0:
        return mask.copy()
    from scipy.ndimage import binary_dilation

    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return binary_dilation(mask, structure=(xx * xx + yy * yy) <= radius * radius)


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] bool: pixel centres inside the convex hull of ``points [P, 2]`` (pixels, centres at +0.5)."""
    hull = points[ConvexHull(points).vertices]
    yy, xx = np.mgrid[0:height, 0:width]
    px, py = xx + 0.5, yy + 0.5
    inside = np.ones((height, width), dtype=bool)
    n = hull.shape[0]
    # ConvexHull vertices are counter-clockwise in (x, y); with y down that is clockwise on screen.
    for k in range(n):
        (x0, y0), (x1, y1) = hull[k], hull[(k + 1) % n]
        inside &= (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0) >= 0
    return inside


# ---------------------------------------------------------------------------------------------
# texel geometry helpers
# ---------------------------------------------------------------------------------------------


def texel_spacing(atlas: Atlas, vertices: np.ndarray) -> np.ndarray:
    """[T] metres between neighbouring texel centres on the surface (sqrt of surface area per texel).

    Triangles whose UVs are squashed (e.g. ICT's eyeball poles) would give huge values, so each texel's
    spacing is clamped to within ``SPACING_CLAMP`` (a factor) of its region's median.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = atlas.faces
    area3d = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    uv = atlas.face_atlas_uvs.astype(np.float64) * atlas.resolution
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area_tex = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1])  # texels^2
    per_face = np.sqrt(area3d / np.maximum(area_tex, 1e-12))
    spacing = per_face[atlas.texel_face]
    for region in np.unique(atlas.texel_region):
        sel = atlas.texel_region == region
        med = float(np.median(spacing[sel]))
        spacing[sel] = np.clip(spacing[sel], med / SPACING_CLAMP, med * SPACING_CLAMP)
    return spacing.astype(np.float32)


def neighbour_pairs(atlas: Atlas, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """[P, 2] int64 texel index pairs adjacent in the atlas (right / down) that are also close on the surface."""
    idx = atlas.to_image(np.arange(atlas.num_texels), fill=-1)
    pairs = [np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1), np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1)]
    p = np.concatenate(pairs)
    p = p[(p[:, 0] >= 0) & (p[:, 1] >= 0)]
    dist = np.linalg.norm(points[p[:, 0]] - points[p[:, 1]], axis=1)
    limit = SMOOTH_PAIR_MAX_SPACING * np.maximum(spacing[p[:, 0]], spacing[p[:, 1]])
    return p[dist <= limit].astype(np.int64)


def dynamic_texels(model: HeadModel, atlas: Atlas, threshold_m: float) -> np.ndarray:
    """[T] bool: texels moving more than ``threshold_m`` under any single expression at weight 1,
    plus every texel of ``ALWAYS_DYNAMIC_REGIONS`` present in the model."""
    tri = atlas.texel_triangles  # [T, 3]
    bary = atlas.texel_bary.astype(np.float32)
    moving = np.zeros(atlas.num_texels, dtype=bool)
    for e in range(model.num_expressions):  # one at a time keeps memory at [T, 3]
        d = (np.asarray(model.expression_basis[e], dtype=np.float32)[tri] * bary[:, :, None]).sum(1)
        moving |= np.linalg.norm(d, axis=1) > threshold_m
    regions = [r for r in ALWAYS_DYNAMIC_REGIONS if r in atlas.region_names]
    if regions:
        moving |= atlas.region_mask(*regions)
    return moving


def blink_texels(model: HeadModel, atlas: Atlas, threshold_m: float) -> np.ndarray:
    """[T] bool: texels moving more than ``threshold_m`` under ``BLINK_EXPRESSIONS`` at weight 1 (the
    eyelids); none when the model has no such expressions."""
    names = [n for n in BLINK_EXPRESSIONS if n in model.expression_names]
    tri, bary = atlas.texel_triangles, atlas.texel_bary.astype(np.float32)
    out = np.zeros(atlas.num_texels, dtype=bool)
    for n in names:
        d = (np.asarray(model.expression_basis[model.expression_index(n)], dtype=np.float32)[tri] * bary[:, :, None]).sum(1)
        out |= np.linalg.norm(d, axis=1) > threshold_m
    return out


def _as_float_tensor(x) -> Tensor:
    """float32 tensor of x (tensors pass through, keeping their autograd graph)."""
    return x.float() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _region_or_none(atlas: Atlas, *names: str) -> np.ndarray:
    present = [n for n in names if n in atlas.region_names]
    return atlas.region_mask(*present) if present else np.zeros(atlas.num_texels, dtype=bool)


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample img [H, W, C] float at continuous pixel coordinates xy [N, 2] (centres at +0.5), edge-clamped."""
    h, w = img.shape[:2]
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def project_texels(
    photo: np.ndarray,
    person_mask: np.ndarray,
    camera: Camera,
    vertices: np.ndarray,
    faces: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    texel_faces: np.ndarray | None = None,
    strict: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photo colours of texels, whether the photo sees them, and how squarely.

    photo: [H, W, 3] float in [0, 1]; person_mask: [H, W] in [0, 1]; vertices [V, 3] / faces [F, 3]: the
    fitted mesh (occluder); points / normals: [T, 3] texel surface points and unit normals (world).
    texel_faces: [T] triangle of each texel, with strict: [T] bool texels that are only visible where the
    triangle drawn at their pixel shares a vertex with their own (for surfaces folded within the depth
    tolerance, e.g. an open eye's upper lid tucked under the skin above it).
    returns (colors [T, 3] float32, visible [T] bool, cos [T] float): visible = in the photo, not occluded
    (z-buffer), facing the camera, on the person; cos = cosine between the normal and the direction to the camera.
    """
    frags = render_mesh(vertices, faces, camera)
    xy, z = project_vertices(points, camera)
    h, w = photo.shape[:2]
    col = np.floor(xy[:, 0]).astype(np.int64)
    row = np.floor(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (z > 0)
    zbuf = np.full(points.shape[0], -np.inf)
    zbuf[inside] = frags.depth[row[inside], col[inside]]
    to_cam = camera.position[None, :] - points
    to_cam /= np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12)
    cos = (normals * to_cam).sum(1)
    facing = cos >= VISIBILITY_MIN_COS
    on_person = np.zeros(points.shape[0], dtype=bool)
    on_person[inside] = person_mask[row[inside], col[inside]] >= VISIBILITY_MIN_MASK
    visible = inside & (z <= zbuf + VISIBILITY_DEPTH_TOLERANCE_M) & facing & on_person
    if strict is not None and texel_faces is not None:
        check = np.flatnonzero(visible & strict)
        drawn = frags.face_id[row[check], col[check]]
        own = faces[texel_faces[check]]  # [K, 3]
        near = (drawn >= 0) & (faces[np.maximum(drawn, 0)][:, :, None] == own[:, None, :]).any((1, 2))
        visible[check[~near]] = False
    colors = _bilinear(photo, xy).astype(np.float32)
    return colors, visible, cos


def inpaint_colors(colors: np.ndarray, known: np.ndarray, points: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Fill unknown texel colours: inverse-distance average of the nearest known texels in 3D, then
    ``INPAINT_SMOOTH_STEPS`` passes of neighbour averaging (atlas ``pairs``) over the filled texels only.

    colors: [T, 3]; known: [T] bool; points: [T, 3]; pairs: [P, 2] -> [T, 3] float32
    """
    out = colors.astype(np.float64).copy()
    unknown = ~known
    if not unknown.any() or not known.any():
        return out.astype(np.float32)
    src = np.flatnonzero(known)
    k = min(INPAINT_NEIGHBOURS, src.size)
    dist, nn = cKDTree(points[src]).query(points[unknown], k=k)
    dist, nn = dist.reshape(-1, k), nn.reshape(-1, k)
    wts = 1.0 / np.maximum(dist, 1e-6)
    out[unknown] = (out[src][nn] * wts[..., None]).sum(1) / wts.sum(1, keepdims=True)
    a, b = pairs[:, 0], pairs[:, 1]
    deg = np.bincount(a, minlength=out.shape[0]) + np.bincount(b, minlength=out.shape[0])
    for _ in range(INPAINT_SMOOTH_STEPS):
        acc = np.zeros_like(out)
        np.add.at(acc, a, out[b])
        np.add.at(acc, b, out[a])
        avg = np.where(deg[:, None] > 0, acc / np.maximum(deg, 1)[:, None], out)
        out[unknown] = avg[unknown]
    return out.astype(np.float32)


def still_basis(expression_basis: Tensor) -> Tensor:
    """expression_basis [E, V, 3] (metres per unit weight) with every displacement shorter than
    ``STILL_BASIS_M`` set to zero: the rig's basis (``AnimationRig.expression_basis``).

    Why: the head model's basis is stored as float16 (``sega.headmodel.cache``), and its rounding leaves
    sub-micrometre displacements on vertices an expression does not move (a jawOpen that moves the
    scalp by 0.1 um). Zeroing them changes no vertex by more than ``STILL_BASIS_M`` times the sum of
    the weights, and makes 7% fewer dynamic texels moving and the per-frame expression MatMul sparser.
    """
    still = expression_basis.norm(dim=-1, keepdim=True) < STILL_BASIS_M
    return torch.where(still, torch.zeros((), dtype=expression_basis.dtype), expression_basis)


def _vertex_moves(expression_basis: Tensor) -> np.ndarray:
    """expression_basis: [E, V, 3] -> [V] bool: some expression moves the vertex (a non-zero basis row)."""
    return (expression_basis != 0).any(-1).any(0).numpy()


def scale_cap(options: AvatarOptions, spacing: np.ndarray) -> Tensor:
    """Tensor  # [T, 1] the log-scale cap of each texel: log(max_scale_texels * spacing); spacing [T] metres."""
    return torch.log(options.max_scale_texels * torch.as_tensor(np.asarray(spacing), dtype=torch.float32))[:, None]


def dynamic_decoder_config(options: AvatarOptions) -> DynamicDecoderConfig:
    """The dynamic decoder for ``options``: three conv levels (32, 16, 8 channels) from a feature map of
    side ``dynamic_map_resolution / 4`` up to the residual map."""
    levels = DynamicDecoderConfig().channels
    side = options.dynamic_map_resolution // 2 ** (len(levels) - 1)
    return DynamicDecoderConfig(feature_resolution=side, map_resolution=options.dynamic_map_resolution)


def dynamic_texel_order(atlas: Atlas, dynamic: np.ndarray, expression_basis: Tensor) -> tuple[np.ndarray, int]:
    """The order of the dynamic texels in the rig (and in the exported per-frame graph's outputs).

    dynamic: [Td] texel ids; expression_basis: [E, V, 3]. Returns (the same ids reordered, the number
    of moving ones, which come first):
    1. *moving* texels (on a triangle with a vertex some expression moves), and among them first one
       texel per triangle, in increasing triangle id, then the other moving texels;
    2. the texels whose triangle never moves (only the dynamic branch's residuals change them).
    Why: the exported graph (``export.graphs.DynamicBranchGraph``) then reads per-triangle quantities
    of the first texels without a gather, and gives the never-moving ones constant frames; the order
    changes nothing else (every consumer goes through ``AnimationRig.dynamic_index``).
    """
    moves = _vertex_moves(expression_basis)[atlas.texel_triangles[dynamic]].any(1)
    moving, still = dynamic[moves], dynamic[~moves]
    _, first = np.unique(atlas.texel_face[moving], return_index=True)  # sorted by triangle id
    rest = np.setdiff1d(np.arange(moving.size), first, assume_unique=True)
    return np.concatenate([moving[first], moving[rest], still]), int(moving.size)


# ---------------------------------------------------------------------------------------------
# animation rig (the precomputed static part + what the dynamic part needs per frame)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AnimationRig:
    """Everything ``Avatar.animate`` needs, precomputed once per avatar (``Avatar.precompute``).

    Only the vertices of dynamic texels' triangles (Vd of them) are deformed per frame.
    """

    static: Gaussians  # Ts canonical (unposed) Gaussians of the static texels
    static_index: Tensor  # [Ts] int64 texel ids of the static Gaussians
    dynamic_index: Tensor  # [Td] int64 texel ids of the dynamic Gaussians
    num_moving: int  # the first num_moving dynamic texels lie on triangles some expression moves, one per triangle first
    # (``dynamic_texel_order``); the rest never move
    dynamic_maps: GaussianMaps  # Td rows of the avatar's maps
    texel_scale_cap: Tensor  # [T, 1] log-scale cap of every texel (``scale_cap``; the static ones are baked capped)
    dynamic_scale_cap: Tensor  # [Td, 1] its rows of the dynamic texels, applied after the residuals each frame
    base_vertices: Tensor  # [Vd, 3] template + identity offsets of the dynamic vertices
    expression_basis: Tensor  # [E, Vd * 3] expression basis rows of the dynamic vertices (``still_basis``)
    faces: Tensor  # [U, 3] int64 used triangles of the dynamic texels, indices into the Vd vertices
    face_edges: Tensor  # [U, 2, 3] neutral edges p1 - p0, p2 - p0 (metres; float64 differences, rounded once)
    face_uv_coeffs: Tensor  # [U, 2] ``sega.uv.uv_frame_coefficients`` of their atlas UVs (frames follow the atlas
    # parameterisation; float64, rounded once)
    face_uv_ok: Tensor  # [U] bool: non-degenerate UVs
    texel_face: Tensor  # [Td] int64 index into ``faces``
    texel_tri: Tensor  # [Td, 3] int64 vertex ids (into Vd) of each dynamic texel's triangle
    texel_bary: Tensor  # [Td, 3] barycentrics
    pivot: Tensor  # [3] head-pose pivot
    head_centre: np.ndarray  # [3] centre of the head (fitted shape), for framing orbit cameras
    head_radius: float  # metres, radius of the head's bounding sphere around head_centre

    @property
    def num_gaussians(self) -> int:
        return len(self.static) + int(self.dynamic_index.shape[0])


# ---------------------------------------------------------------------------------------------
# the avatar
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Avatar:
    """A drivable Gaussian head avatar. Build with ``Avatar.build``, or ``Avatar.load`` a saved one."""

    model: HeadModel  # the head model it was built with (not saved; passed to ``load``)
    identity: np.ndarray  # [I] fitted identity coefficients
    expression: np.ndarray  # [E] fitted expression (the avatar's rest face)
    atlas: Atlas  # texel layout the maps are defined on
    static_mask: np.ndarray  # [T] bool: static texels (the rest are dynamic)
    maps: GaussianMaps  # T rows, the learned Gaussians
    camera: Camera  # the fitted photo camera
    crop_camera: Camera  # the head-crop camera the optimisation rendered at (render_size px)
    options: AvatarOptions
    provenance: dict = field(default_factory=dict)  # sega version, head model + licence, build stats
    # The learned branches (``sega.model.decoders``): the static decoder's residuals are baked into the
    # static Gaussians by ``precompute``; the dynamic decoder's are added per frame. None: maps only.
    decoders: AvatarDecoders | None = None
    # Hook for the dynamic branch: expression [E] -> residual GaussianMaps for the Td dynamic texels
    # (added to the maps before binding). None: ``decoders.dynamic`` when there are decoders, else no residual.
    dynamic_residual: Callable[[Tensor], GaussianMaps] | None = None
    rig: AnimationRig | None = field(default=None, repr=False)  # built by ``precompute`` on construction

    def __post_init__(self) -> None:
        if self.rig is None:
            self.precompute()

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return len(self.maps)

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def dynamic_mask(self) -> np.ndarray:
        return ~self.static_mask

    @property
    def head_model(self) -> str:
        return self.model.name

    # ---- geometry ------------------------------------------------------------------------------
    def vertices(self, expression: np.ndarray | Tensor | None = None) -> Tensor:
        """[V, 3] unposed mesh for ``expression`` (default: the fitted one)."""
        buf = self.model.torch_buffers()
        expr = self.expression if expression is None else expression
        return self.model.deform(buf, torch.as_tensor(self.identity, dtype=torch.float32), torch.as_tensor(np.asarray(expr), dtype=torch.float32))

    def orbit_camera(self, yaw_deg: float, pitch_deg: float = 0.0, size: int = 256) -> Camera:
        """A camera on a circle around the head (yaw 0 = frontal, see ``sega.camera.orbit_camera``)
        framing the whole head (canonical pose) at ``size`` px."""
        rig = self.rig
        distance = rig.head_radius / (ORBIT_HEAD_FILL * math.tan(math.radians(ORBIT_FOV_DEG) / 2))
        return orbit_camera(yaw_deg, pitch_deg, distance, rig.head_centre, ORBIT_FOV_DEG, size, size)

    # ---- precompute / animate ------------------------------------------------------------------
    def precompute(self) -> Avatar:
        """Build the ``AnimationRig``: bind the static texels once (canonical pose, fitted expression)
        and gather what the dynamic texels need per frame. Runs on construction; call it again after
        changing ``maps`` or ``static_mask``. Returns self.

        The per-frame path deforms vertices linearly (template + identity + expression blendshapes),
        which is ``HeadModel.deform`` for ICT and for FLAME with zero joint rotations; this is checked
        against ``model.deform`` at the fitted expression.
        """
        atlas, model = self.atlas, self.model
        buf = model.torch_buffers()
        sta = np.flatnonzero(self.static_mask)
        raw_basis = buf.expression_basis.reshape(model.num_expressions, -1, 3)  # [E, V, 3]
        basis = still_basis(raw_basis)
        dyn, num_moving = dynamic_texel_order(atlas, np.flatnonzero(~self.static_mask), basis)
        verts = self.vertices()  # [V, 3] fitted expression
        cap = scale_cap(self.options, texel_spacing(atlas, verts.numpy()))  # [T, 1]
        static_maps = self.maps.subset(sta)
        if self.decoders is not None:
            texel_uv = atlas.texel_uv
            self.decoders.dynamic.set_texel_uv(texel_uv[dyn])
            self.decoders.static.set_texel_uv(texel_uv[sta])
            with torch.no_grad():  # the static branch runs once per avatar: bake its residuals in
                static_maps = static_maps.add(residual_to_maps(self.decoders.static()))
        static_maps = static_maps.with_scale_cap(cap[torch.as_tensor(sta)])
        with torch.no_grad():
            tri = torch.as_tensor(atlas.texel_triangles[sta])
            bary = torch.as_tensor(atlas.texel_bary[sta])
            pts = (verts[tri] * bary[..., None]).sum(1)
            used, inv = np.unique(atlas.texel_face[sta], return_inverse=True)
            frames = face_frames(verts, atlas.faces[used], atlas.face_atlas_uvs[used])[torch.as_tensor(inv.reshape(-1))]
            static = bind_frames(static_maps, pts, frames).detach()
        # Dynamic part: local vertex numbering over the vertices their triangles use.
        dyn_faces_global, face_inv = np.unique(atlas.texel_face[dyn], return_inverse=True)
        dyn_tris = atlas.faces[dyn_faces_global]  # [U, 3]
        vids, local = np.unique(dyn_tris.reshape(-1), return_inverse=True)
        local = local.reshape(-1, 3)
        base64 = (buf.vertices.double() + (torch.as_tensor(self.identity, dtype=torch.float64) @ buf.identity_basis.double()).reshape(-1, 3))[torch.as_tensor(vids)]
        base = base64.float()
        # Neutral edges and UV coefficients in float64, rounded once (see ``sega.uv.frames_from_edges``).
        corners = base64[torch.as_tensor(local)]  # [U, 3, 3]
        face_edges = torch.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], 1).float()  # [U, 2, 3]
        uv_coeffs, uv_ok = uv_frame_coefficients(torch.as_tensor(atlas.face_atlas_uvs[dyn_faces_global], dtype=torch.float64))
        ebasis = basis[:, torch.as_tensor(vids)].reshape(model.num_expressions, -1)
        face_inv = face_inv.reshape(-1)
        raw = raw_basis[:, torch.as_tensor(vids)].reshape(model.num_expressions, -1)
        linear = base + (torch.as_tensor(self.expression, dtype=torch.float32) @ raw).reshape(-1, 3)
        if not torch.allclose(linear, verts[torch.as_tensor(vids)], atol=LINEARITY_TOLERANCE_M):
            raise NotImplementedError(f"head model {model.name!r} does not deform linearly; the animation rig needs blendshapes")
        vnp = verts.numpy()
        regions = [r for r in ORBIT_REGIONS if r in model.region_names]
        head = vnp[model.region_vertex_mask(*regions)] if regions else vnp
        centre = (head.min(0) + head.max(0)) / 2
        self.rig = AnimationRig(
            static=static,
            static_index=torch.as_tensor(sta, dtype=torch.int64),
            dynamic_index=torch.as_tensor(dyn, dtype=torch.int64),
            num_moving=num_moving,
            dynamic_maps=self.maps.subset(dyn).detach(),
            texel_scale_cap=cap,
            dynamic_scale_cap=cap[torch.as_tensor(dyn)].contiguous(),
            base_vertices=base.contiguous(),
            expression_basis=ebasis.contiguous(),
            faces=torch.as_tensor(local, dtype=torch.int64),
            face_edges=face_edges,
            face_uv_coeffs=uv_coeffs.float(),
            face_uv_ok=uv_ok,
            texel_face=torch.as_tensor(face_inv, dtype=torch.int64),
            texel_tri=torch.as_tensor(local[face_inv], dtype=torch.int64),
            texel_bary=torch.as_tensor(atlas.texel_bary[dyn], dtype=torch.float32),
            pivot=torch.as_tensor(model.pivot, dtype=torch.float32),
            head_centre=centre.astype(np.float64),
            head_radius=float(np.linalg.norm(head - centre, axis=1).max()),
        )
        return self

    def dynamic_residual_maps(self, expression, grad: bool = False) -> GaussianMaps | None:
        """Td rows: the dynamic branch's residuals at ``expression`` [E] (tensor), or None without one.

        expression -> ``decoders.encoder`` (the displacement VAE's encoder mean: the expression feature)
        -> ``decoders.dynamic`` sampled at the dynamic texels; or the ``dynamic_residual`` hook if set.
        grad: keep the autograd graph (w.r.t. ``expression``).
        """
        if self.dynamic_residual is not None:
            return self.dynamic_residual(expression)
        if self.decoders is None:
            return None
        with contextlib.nullcontext() if grad else torch.no_grad():
            z = self.decoders.encoder(expression[None])
            return residual_to_maps(self.decoders.dynamic(z)[0])

    def texel_maps(self, expression=None) -> GaussianMaps:
        """T rows: the maps as ``animate`` binds them at ``expression`` (default the fitted one): the
        stored maps plus the static decoder's residuals (static texels) and the dynamic branch's
        residuals at that expression (dynamic texels)."""
        expr = torch.as_tensor(np.asarray(self.expression if expression is None else expression), dtype=torch.float32)
        rig = self.rig
        out = self.maps.detach()
        with torch.no_grad():
            if self.decoders is not None:
                res = self.decoders.static()
                for k, v in residual_to_maps(res).tensors().items():
                    out.tensors()[k][rig.static_index] += v
            dyn = self.dynamic_residual_maps(expr)
            if dyn is not None:
                for k, v in dyn.tensors().items():
                    out.tensors()[k][rig.dynamic_index] += v
        return out.with_scale_cap(rig.texel_scale_cap)

    def animate(self, expression=None, head_pose: tuple | None = None, grad: bool = False) -> Gaussians:
        """World-space Gaussians for one frame.

        expression: [E] absolute expression weights (numpy or tensor); None = the fitted expression.
        head_pose: (rotation [3] axis-angle radians, translation [3] metres) or None (canonical pose).
        grad: differentiable w.r.t. tensor ``expression`` / ``head_pose`` (photometric tracking); the
            avatar's own parameters stay fixed either way.
        returns Gaussians with the static texels first, then the dynamic ones (``rig.static_index`` /
        ``rig.dynamic_index`` give their texel ids).

        Mesh deformation of the dynamic texels uses the head model's exact linear blendshapes, not the
        displacement VAE's decoded map: the blendshapes are exact (the VAE is within ~1 mm of them),
        and cheaper on the CPU (a [E] x [E, Vd*3] product against decoding a full UV map and sampling
        it); the VAE's encoder only supplies the expression feature of the dynamic decoder.
        """
        rig = self.rig
        expr = _as_float_tensor(self.expression if expression is None else expression)
        if expr.shape != (self.model.num_expressions,):
            raise ValueError(f"expected {self.model.num_expressions} expression weights, got {tuple(expr.shape)}")
        with contextlib.nullcontext() if grad else torch.no_grad():
            motion = (expr @ rig.expression_basis).reshape(-1, 3)  # [Vd, 3]
            verts = rig.base_vertices + motion
            pts = (verts[rig.texel_tri] * rig.texel_bary[..., None]).sum(1)
            # Edges as neutral edge + motion difference: float32 p1 - p0 of positions ~0.1 m from the
            # origin would leave 1e-4 relative error in the frames of sub-millimetre triangles (teeth, lids).
            m = motion[rig.faces]  # [U, 3 corners, 3]
            e1 = rig.face_edges[:, 0] + (m[:, 1] - m[:, 0])
            e2 = rig.face_edges[:, 1] + (m[:, 2] - m[:, 0])
            frames = frames_from_edges(e1, e2, rig.face_uv_coeffs, rig.face_uv_ok)[rig.texel_face]
            maps = rig.dynamic_maps
            residual = self.dynamic_residual_maps(expr, grad)  # <- the dynamic decoder's residuals
            if residual is not None:
                maps = maps.add(residual)
            dynamic = bind_frames(maps.with_scale_cap(rig.dynamic_scale_cap), pts, frames)
            out = Gaussians.cat([rig.static, dynamic])
            if head_pose is not None:
                rot, trans = _as_float_tensor(head_pose[0]), _as_float_tensor(head_pose[1])
                r = axis_angle_to_matrix(rot)
                out = out.transformed(r, rig.pivot - r @ rig.pivot + trans)
        return out

    def render(
        self,
        expression=None,
        head_pose: tuple | None = None,
        camera: Camera | None = None,
        width: int | None = None,
        height: int | None = None,
        background: tuple[float, float, float] | None = None,
        backend: str = "auto",
    ) -> RenderOutput:
        """Render one frame. camera: default the input-view head-crop camera; width/height (px) resize
        the camera's image (K scaled); background: rgb, default ``options.background``."""
        cam = self.crop_camera if camera is None else camera
        w = cam.width if width is None else int(width)
        h = cam.height if height is None else int(height)
        k = cam.K.copy()
        k[0] *= w / cam.width
        k[1] *= h / cam.height
        g = self.animate(expression, head_pose)
        bg = torch.tensor(self.options.background if background is None else background, dtype=torch.float32)
        with torch.no_grad():
            return render_gaussians(
                g.means, g.quats, g.scales, g.opacities, g.colors,
                torch.as_tensor(k, dtype=torch.float32), torch.as_tensor(cam.viewmat, dtype=torch.float32),
                w, h, bg, backend=backend,
            )

    def orbit_views(self, yaws_deg, size: int = 256, pitch_deg: float = 0.0, expression=None) -> list[np.ndarray]:
        """Renders [size, size, 3] float32 around the head, one per yaw (degrees)."""
        return [self.render(expression, camera=self.orbit_camera(y, pitch_deg, size)).rgb.numpy() for y in yaws_deg]

    def expression_with(self, **weights: float) -> np.ndarray:
        """[E] the fitted (neutral) expression with the named weights set, e.g. ``expression_with(jawOpen=1.0)``."""
        out = np.asarray(self.expression, dtype=np.float32).copy()
        for name, value in weights.items():
            out[self.model.expression_index(name)] = value
        return out

    # ---- persistence ---------------------------------------------------------------------------
    def header(self) -> dict:
        return {
            "format_version": AVATAR_FORMAT_VERSION,
            "sega_version": __version__,
            "options": self.options.to_dict(),
            "seed": self.options.seed,
            "head_model": {
                "name": self.model.name,
                "licence": self.model.licence,
                "num_vertices": self.model.num_vertices,
                "num_faces": self.model.num_faces,
                "num_identity": int(self.identity.shape[0]),
                "expression_names": list(self.model.expression_names),
            },
            "atlas": {"options": asdict(self.atlas.options), "region_names": list(self.atlas.region_names)},
            "camera": self.camera.to_dict(),
            "crop_camera": self.crop_camera.to_dict(),
            "provenance": self.provenance,
            "decoders": None if self.decoders is None else self.decoders.header(),
        }

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (no pickles): a JSON header, the maps, the masks, the fit, the atlas."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"maps_{k}": v for k, v in self.maps.to_numpy().items()}
        arrays.update({f"atlas_{k}": getattr(self.atlas, k) for k in Atlas._ARRAYS})
        arrays["identity"] = np.asarray(self.identity, dtype=np.float32)
        arrays["expression"] = np.asarray(self.expression, dtype=np.float32)
        arrays["static_mask"] = np.asarray(self.static_mask, dtype=bool)
        if self.decoders is not None:
            arrays.update({f"decoder_{k}": v for k, v in self.decoders.arrays().items()})
        arrays["header_json"] = np.frombuffer(json.dumps(self.header()).encode("utf-8"), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @staticmethod
    def read_header(path: str | Path) -> dict:
        """The avatar file's JSON header, checked (``sega.avatar_file``; ``AvatarFileError`` if unusable)."""
        from .avatar_file import read_avatar_header

        return read_avatar_header(path)

    @classmethod
    def load(cls, path: str | Path, model: HeadModel) -> Avatar:
        """Read an avatar written by ``save``; ``model`` must be the head model it was built with.

        Every size, dtype, shape, value range and header field is checked first (``sega.avatar_file``):
        a damaged or hostile file raises ``AvatarFileError`` (a ``SegaError``) naming the file."""
        from .avatar_file import read_avatar_file

        header, arrays = read_avatar_file(path, model)
        ao = dict(header["atlas"]["options"])
        ao["regions"] = None if ao["regions"] is None else tuple(ao["regions"])
        atlas = Atlas(options=AtlasOptions(**ao), region_names=tuple(header["atlas"]["region_names"]),
                      **{k: arrays[f"atlas_{k}"] for k in Atlas._ARRAYS})
        maps = GaussianMaps.from_numpy({k[5:]: v for k, v in arrays.items() if k.startswith("maps_")})
        decoders = None
        if header.get("decoders") is not None:
            decoders = AvatarDecoders.from_saved(header["decoders"], {k[8:]: v for k, v in arrays.items() if k.startswith("decoder_")})
        return cls(
            model=model,
            identity=arrays["identity"],
            expression=arrays["expression"],
            atlas=atlas,
            static_mask=arrays["static_mask"].astype(bool),
            maps=maps,
            camera=Camera.from_dict(header["camera"]),
            crop_camera=Camera.from_dict(header["crop_camera"]),
            options=AvatarOptions.from_dict(header["options"]),
            provenance=header.get("provenance", {}),
            decoders=decoders,
        )

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        photo: np.ndarray,
        model: HeadModel,
        options: AvatarOptions = AvatarOptions(),
        progress: Callable[[str, float], None] | None = None,
        detector=None,
    ) -> Avatar:
        """One photo -> avatar. photo: [H, W, 3] uint8 RGB; model: with a "mediapipe478" landmark embedding.

        progress(stage, fraction) is called with the stages of ``BUILD_STAGES`` (fraction in [0, 1]
        within the stage). detector: a ``sega.face.FaceDetector`` to reuse (else one is made and closed).
        """
        return build_avatar(photo, model, options, progress, detector)[0]


# ---------------------------------------------------------------------------------------------
# previews
# ---------------------------------------------------------------------------------------------

PREVIEW_YAWS = (0, 30, -30, 90, -90, 180)  # degrees, neutral expression
PREVIEW_EXPRESSIONS = {  # name -> weights set on top of the fitted expression, frontal view
    "jawopen": {"jawOpen": 1.0},
    "smile": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
    "blink": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
}
TURNTABLE_FRAMES = 36  # frames of one turn
TURNTABLE_FPS = 12


def preview_images(avatar: Avatar, size: int = 256) -> dict[str, np.ndarray]:
    """Named [size, size, 3] float32 renders: ``yaw{+-d}`` at the neutral expression, then each of
    ``PREVIEW_EXPRESSIONS`` frontally (expressions whose names the head model lacks are skipped)."""
    out = {}
    for yaw in PREVIEW_YAWS:
        out[f"yaw{yaw:+d}"] = avatar.render(camera=avatar.orbit_camera(yaw, size=size)).rgb.numpy()
    known = set(avatar.model.expression_names)
    for name, weights in PREVIEW_EXPRESSIONS.items():
        if set(weights) <= known:
            expr = avatar.expression_with(**weights)
            out[name] = avatar.render(expr, camera=avatar.orbit_camera(0, size=size)).rgb.numpy()
    return out


def contact_sheet(images: list[np.ndarray], columns: int = 3) -> np.ndarray:
    """Tile equally sized [H, W, 3] images row-major into one image (blank cells are white)."""
    h, w = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    sheet = np.ones((rows * h, columns * w, 3), dtype=np.float32)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return sheet


def turntable_frames(avatar: Avatar, frames: int = TURNTABLE_FRAMES, size: int = 256) -> list[np.ndarray]:
    """One full turn around the head at the neutral expression: ``frames`` [size, size, 3] uint8 images."""
    out = []
    for k in range(frames):
        rgb = avatar.render(camera=avatar.orbit_camera(360.0 * k / frames, size=size)).rgb.numpy()
        out.append(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))
    return out


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------


@dataclass
class BuildData:
    """Intermediate results of a build (returned by ``build_avatar`` for reports and tests)."""

    fit: object  # sega.fit.FitResult
    detection: object  # sega.face.Detection
    crop: object  # sega.face.HeadCrop at render_size
    target: np.ndarray  # [S, S, 3] float32 photo crop
    person_mask: np.ndarray  # [S, S] float32 person probability in the crop
    silhouette: np.ndarray  # [S, S] bool mesh silhouette at the crop camera
    face_mask: np.ndarray  # [S, S] bool face-oval polygon of the detected landmarks, on the person
    confidence: np.ndarray  # [T] float in [0, 1]: how squarely the photo sees each texel (0 = unseen)
    seconds: dict = field(default_factory=dict)  # wall time per stage
    losses: list = field(default_factory=list)  # total loss per optimisation step


def _report(progress, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, float(fraction))


@dataclass
class TexelInit:
    """What ``initial_maps`` works out per texel (the optimisation reuses it)."""

    maps: GaussianMaps  # T rows: zero offsets, flat overlapping splats, colours from the photo
    confidence: np.ndarray  # [T] float in [0, 1]: how squarely the photo sees the texel (0 = unseen)
    spacing: np.ndarray  # [T] metres between neighbouring texels on the surface
    pairs: np.ndarray  # [P, 2] atlas neighbours (see ``neighbour_pairs``)
    mirror: np.ndarray  # [T] mirror texel of each texel (``Atlas.mirror_texels``)
    # [T] bool: texels whose colour and opacity the photo loss must not change (lid skin the photo does not
    # see: at the input view it is a sliver at the lash line, and fitting it there paints a closed eye dark)
    locked: np.ndarray | None = None


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def initial_maps(
    model: HeadModel,
    atlas: Atlas,
    vertices: np.ndarray,
    photo: np.ndarray,
    person_mask: np.ndarray,
    camera: Camera,
    options: AvatarOptions,
) -> TexelInit:
    """Initial maps on the fitted mesh.

    photo: [H, W, 3] uint8; person_mask: [H, W] float; vertices: [V, 3] fitted (unposed) mesh;
    camera: the fitted photo camera.
    Colours: the photo's colour where the photo sees the texel (``project_texels``), else the mirror
    texel's photo colour where that one is seen (symmetric fill), else an inpainted colour (nearest
    skin / hair texels in 3D seen at ``photo_cos_low`` or better). Teeth and mouth interior get fixed defaults; unseen
    eyeball parts get the sclera colour. ``confidence`` = smoothstep of the facing cosine between
    ``photo_cos_low`` and ``photo_cos_high`` where seen, else 0.
    """
    verts_t = torch.as_tensor(vertices, dtype=torch.float32)
    points = atlas.texel_points(verts_t).numpy().astype(np.float64)
    normals = atlas.texel_frames(verts_t)[..., 2].numpy().astype(np.float64)
    spacing = texel_spacing(atlas, vertices)
    pairs = neighbour_pairs(atlas, points, spacing)

    img = photo.astype(np.float32) / 255.0
    lids = blink_texels(model, atlas, LID_MOVE_M)
    colors, visible, cos = project_texels(img, person_mask, camera, vertices, atlas.faces, points, normals, atlas.texel_face, lids)
    mouth = _region_or_none(atlas, *MOUTH_REGIONS)
    eyes = _region_or_none(atlas, "eyeball_left", "eyeball_right")
    seen = np.where(visible, _smoothstep(cos, options.photo_cos_low, options.photo_cos_high), 0.0)
    visible &= ~mouth  # teeth / mouth colours start from defaults (may still be optimised where seen)
    # Symmetric fill: unseen texels take their mirror texel's colour when the photo sees that one.
    mirror = atlas.mirror_texels(model)
    from_mirror = ~visible & visible[mirror] & ~mouth
    colors[from_mirror] = colors[mirror[from_mirror]]
    known = visible | from_mirror
    # Inpaint the rest from the nearest skin / hair texels seen at photo_cos_low or better (grazing texels carry smeared
    # silhouette colours; eyes and mouth are no sources).
    # Lids are no sources either: their seen part is the dark lash line, which would paint the lid skin
    # that only shows when the eye closes.
    sources = visible & (cos >= options.photo_cos_low) & ~eyes & ~mouth & ~lids
    fill = inpaint_colors(np.where(sources[:, None], colors, 0.0), sources, points, pairs)
    colors = np.where(known[:, None], colors, fill)
    colors[eyes & ~known] = SCLERA_COLOR
    colors[_region_or_none(atlas, "teeth")] = TEETH_COLOR
    colors[_region_or_none(atlas, "mouth_interior")] = MOUTH_INTERIOR_COLOR

    in_plane = np.log(options.init_scale_texels * spacing)
    log_scale = np.stack([in_plane, in_plane, in_plane + math.log(options.init_normal_scale_ratio)], 1)
    logit = math.log(options.init_opacity / (1.0 - options.init_opacity))
    maps = GaussianMaps.initial(atlas.num_texels, torch.as_tensor(log_scale), torch.as_tensor(colors.astype(np.float32)), logit)
    return TexelInit(maps, seen.astype(np.float32), spacing, pairs, mirror, locked=lids & ~visible)


def crop_camera(camera: Camera, crop) -> Camera:
    """The fitted camera seen through a head crop: K' = A K with A the photo -> crop affine."""
    return Camera(crop.photo_to_crop @ camera.K, camera.viewmat.copy(), crop.size, crop.size)


def build_avatar(
    photo: np.ndarray,
    model: HeadModel,
    options: AvatarOptions = AvatarOptions(),
    progress: Callable[[str, float], None] | None = None,
    detector=None,
) -> tuple[Avatar, BuildData]:
    """``Avatar.build`` plus its intermediate data (``BuildData``)."""
    from .face import FaceDetector, head_crop
    from .fit import FitOptions, fit_landmarks
    from .landmarks import mediapipe_groups

    secs: dict[str, float] = {}
    own = detector is None
    det = FaceDetector() if own else detector
    try:
        t0 = time.perf_counter()
        _report(progress, "detect", 0.0)
        detection = det.detect(photo)
        secs["detect"] = time.perf_counter() - t0
        _report(progress, "detect", 1.0)

        t0 = time.perf_counter()
        _report(progress, "fit", 0.0)
        fit = fit_landmarks(model, detection.landmarks, photo.shape[:2], FitOptions.preset(options.fit_preset))
        secs["fit"] = time.perf_counter() - t0
        _report(progress, "fit", 1.0)

        t0 = time.perf_counter()
        _report(progress, "segment", 0.0)
        person = det.segment_person(photo)
        secs["segment"] = time.perf_counter() - t0
        _report(progress, "segment", 1.0)
    finally:
        if own:
            det.close()

    t0 = time.perf_counter()
    _report(progress, "initialise", 0.0)
    buf = model.torch_buffers()
    with torch.no_grad():
        verts_t = model.deform(buf, torch.as_tensor(fit.identity), torch.as_tensor(fit.expression))
    vertices = verts_t.numpy()
    atlas = Atlas.build(model, options.atlas_resolution)
    static_mask = ~dynamic_texels(model, atlas, options.dynamic_threshold_m)
    _report(progress, "initialise", 0.3)
    init = initial_maps(model, atlas, vertices, photo, person, fit.camera, options)
    crop = head_crop(detection, photo.shape, size=options.render_size)
    cam = crop_camera(fit.camera, crop)
    target = crop.apply(photo).astype(np.float32) / 255.0
    pmask = np.clip(crop.apply(person, pad="constant", fill=0.0), 0.0, 1.0).astype(np.float32)
    sil = render_mesh(vertices, atlas.faces, cam).mask
    lms = crop.landmarks_to_crop(detection.landmarks[:, :2])
    face_mask = polygon_mask(lms[list(mediapipe_groups()["face_oval"])], options.render_size, options.render_size) & (pmask >= 0.5)

    decoders = AvatarDecoders.create(model, dynamic=dynamic_decoder_config(options)) if options.decoders else None
    secs["initialise"] = time.perf_counter() - t0
    _report(progress, "initialise", 1.0)

    t0 = time.perf_counter()
    data = BuildData(fit, detection, crop, target, pmask, sil, face_mask, init.confidence, secs)
    maps = optimise_maps(init, atlas, vertices, cam, target, pmask, options, lambda f: _report(progress, "optimise", f), data.losses,
                         decoders=decoders, static_mask=static_mask, expression=fit.expression)
    secs["optimise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _report(progress, "precompute", 0.0)
    provenance = {
        "sega_version": __version__,
        "head_model": model.name,
        "head_model_licence": model.licence,
        "photo_size": list(photo.shape[:2]),
        "fit_nme": fit.nme,
        "build_seconds": {k: round(v, 3) for k, v in secs.items()},
        "torch_threads": torch.get_num_threads(),
        "displacement_vae": None if decoders is None else decoders.vae_provenance,
    }
    avatar = Avatar(
        model=model,
        identity=fit.identity.astype(np.float32),
        expression=fit.expression.astype(np.float32),
        atlas=atlas,
        static_mask=static_mask,
        maps=maps,
        camera=fit.camera,
        crop_camera=cam,
        options=options,
        provenance=provenance,
        decoders=decoders,
    )
    secs["precompute"] = time.perf_counter() - t0
    avatar.provenance["build_seconds"] = {k: round(v, 3) for k, v in secs.items()}
    _report(progress, "precompute", 1.0)
    return avatar, data


def optimise_maps(
    init: TexelInit,
    atlas: Atlas,
    vertices: np.ndarray,
    camera: Camera,
    target: np.ndarray,
    person_mask: np.ndarray,
    options: AvatarOptions,
    progress: Callable[[float], None] | None = None,
    losses: list | None = None,
    decoders: AvatarDecoders | None = None,
    static_mask: np.ndarray | None = None,
    expression: np.ndarray | None = None,
) -> GaussianMaps:
    """Person-specific optimisation of the maps on the photo's head crop (see the module docstring).

    init: from ``initial_maps``; vertices: [V, 3] fitted mesh (fixed); camera: the crop camera (S x S);
    target: [S, S, 3] photo crop; person_mask: [S, S] in [0, 1]. Returns detached optimised maps.

    decoders (optional, with static_mask [T] bool and the fitted expression [E]): their parameters
    (feature maps + conv weights; not the frozen expression encoder) are fitted jointly with the maps,
    in place. The rendered maps are then maps + static residuals (static texels) + the dynamic
    decoder's residuals at the fitted expression (dynamic texels): the photo shows that expression
    only. So the dynamic branch does not learn what the photo cannot tell, every ``residual_every``
    steps it is also evaluated at ``residual_expressions`` random expressions, and the mean square
    of both decoders' raw outputs is penalised (``w_residual``): residuals stay small everywhere.
    """
    maps, spacing, pairs = init.maps, init.spacing, init.pairs
    gen = torch.Generator().manual_seed(options.seed)
    size = options.render_size
    verts_t = torch.as_tensor(vertices, dtype=torch.float32)
    points = atlas.texel_points(verts_t).detach()
    frames = atlas.texel_frames(verts_t).detach()
    frame_quats = matrix_to_quat(frames)  # the mesh is fixed here: convert once
    K, viewmat = camera.torch()
    bg = torch.tensor(options.background, dtype=torch.float32)
    frags = render_mesh(vertices, atlas.faces, camera)
    silhouette = frags.mask

    # Loss region and targets (input view).
    margin_px = round(options.hair_margin * size)
    near_head = _dilate(silhouette, margin_px)
    m = person_mask
    rgb_w = near_head & ~(silhouette & (m < VISIBILITY_MIN_MASK))  # mesh pixels the photo calls background: no colour target
    target_rgb = torch.as_tensor(target * m[..., None] + np.asarray(options.background, np.float32) * (1 - m[..., None]))
    target_alpha = torch.as_tensor(np.where(silhouette, 1.0, m).astype(np.float32))[..., None]
    w_rgb = torch.as_tensor(rgb_w.astype(np.float32))[..., None]
    w_alpha = torch.as_tensor(near_head.astype(np.float32))[..., None]
    n_rgb = max(float(w_rgb.sum()), 1.0)
    n_alpha = max(float(w_alpha.sum()), 1.0)

    # Regulariser constants.
    spacing_t = torch.as_tensor(spacing, dtype=torch.float32)
    log_max_scale = scale_cap(options, spacing)  # [T, 1]: the penalty's bound and the hard cap at binding
    log_min_scale = math.log(options.min_scale_m)
    hair = torch.as_tensor(_region_or_none(atlas, *HAIR_REGIONS))
    unseen = torch.as_tensor(np.flatnonzero(init.confidence < 1.0))
    mirror = torch.as_tensor(init.mirror[unseen.numpy()])
    no_evidence = torch.as_tensor(1.0 - init.confidence)[unseen]  # symmetry weight: 1 - photo confidence
    pa, pb = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
    # The coverage term renders the outer surface only: hidden parts (mouth, eyeballs) must not grow
    # through the skin to fill the silhouette.
    outer_mask = _region_or_none(atlas, *COVERAGE_REGIONS)
    if not outer_mask.any():
        outer_mask = np.ones_like(outer_mask)
    outer_index = torch.as_tensor(np.flatnonzero(outer_mask))
    outer_faces = np.zeros(atlas.faces.shape[0], dtype=bool)
    outer_faces[atlas.texel_face[outer_mask]] = True

    # Texels far behind the visible surface, well inside the silhouette, cannot show in the input view:
    # leave them out of its render (they still get the coverage and prior terms); about halves the work
    # per step. Texels near the silhouette stay: with their offsets they form the hair outline.
    xy, z = project_vertices(points.numpy(), camera)
    col, row = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    interior = ~_dilate(~silhouette, margin_px)  # silhouette eroded by the hair margin
    zbuf = np.full(z.shape, -np.inf)
    zbuf[inside] = np.where(interior[row[inside], col[inside]], frags.depth[row[inside], col[inside]], np.inf)
    front = torch.as_tensor(np.flatnonzero(z <= zbuf + INPUT_VIEW_OCCLUSION_M))

    # Step size per texel: the photo's evidence for a texel seen at a grazing angle is a sliver of pixels.
    # Letting the photometric loss freely repaint such texels (or fade them to reveal what is behind)
    # smears the face's outline over the sides of the head and opens holes there, visible from novel
    # views. So colour and opacity are parameterised as initial + step * delta (Adam on delta): a texel's
    # appearance moves at most ``step`` times the learning rate per iteration, step = max(confidence,
    # photo_min_step). Geometry keeps the full rate (silhouette texels must grow out to form the hair).
    # Texels outside the input render (only priors act on them) keep the full step.
    confidence = torch.as_tensor(init.confidence)
    in_front = torch.zeros(points.shape[0], dtype=torch.bool)
    in_front[front] = True
    step = torch.where(in_front, confidence.clamp_min(options.photo_min_step), torch.ones_like(confidence))
    if init.locked is not None:
        step[torch.as_tensor(init.locked)] = 0.0
    start = {k: v.detach().clone() for k, v in maps.tensors().items()}
    params = {k: torch.zeros_like(v, requires_grad=True) for k, v in start.items()}  # deltas
    lrs = {"offset": options.lr_offset, "rotation": options.lr_rotation, "log_scale": options.lr_log_scale,
           "opacity_logit": options.lr_opacity, "color": options.lr_color}
    groups = [{"params": [params[k]], "lr": lrs[k], "name": k} for k in lrs]
    if decoders is not None:
        if static_mask is None or expression is None:
            raise ValueError("optimise_maps with decoders needs static_mask and expression")
        from .model.vae import sample_expressions

        sta, dyn = np.flatnonzero(static_mask), np.flatnonzero(~static_mask)
        texel_uv = atlas.texel_uv
        decoders.dynamic.set_texel_uv(texel_uv[dyn]).train()
        decoders.static.set_texel_uv(texel_uv[sta]).train()
        order = torch.as_tensor(np.argsort(np.concatenate([sta, dyn])))  # rows of cat([static, dynamic]) -> texel order
        with torch.no_grad():
            z_fit = decoders.encoder(torch.as_tensor(np.asarray(expression), dtype=torch.float32)[None])  # [1, Z]
        expr_gen = torch.Generator().manual_seed(options.seed + 1)
        groups.append({"params": decoders.trainable_parameters(), "lr": options.lr_decoder, "name": "decoders"})
    opt = torch.optim.Adam(groups, eps=1e-15)
    steps = max(options.iterations, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: options.lr_final_fraction + (1 - options.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))

    def cur() -> GaussianMaps:
        return GaussianMaps(**{k: start[k] + (_expand(step, v) if k in STEPPED_FIELDS else 1.0) * v for k, v in params.items()})

    def residuals() -> tuple[GaussianMaps, Tensor]:
        """T rows of decoder residuals at the fitted expression, and their regulariser."""
        res_s = decoders.static()  # [Ts, A]
        res_d = decoders.dynamic(z_fit)[0]  # [Td, A]
        reg = raw_residual(decoders.static, res_s).pow(2).mean() + raw_residual(decoders.dynamic, res_d).pow(2).mean()
        if options.residual_expressions > 0 and options.residual_every > 0 and it % options.residual_every == 0:
            expr_r = sample_expressions(options.residual_expressions, decoders.encoder.config, expr_gen)
            with torch.no_grad():
                z_r = decoders.encoder(expr_r)
            reg = reg + raw_residual(decoders.dynamic, decoders.dynamic(z_r)).pow(2).mean()
        both = torch.index_select(torch.cat([res_s, res_d], 0), 0, order)  # [T, A]
        return residual_to_maps(both), reg

    for it in range(options.iterations):
        opt.zero_grad(set_to_none=True)
        maps_now = cur()
        reg_residual = None
        if decoders is not None:
            res, reg_residual = residuals()
            maps_now = maps_now.add(res)
        g = bind_frames(maps_now.with_scale_cap(log_max_scale), points, frames, frame_quats)
        gi = Gaussians(**{k: torch.index_select(v, 0, front) for k, v in g.tensors().items()})
        out = render_gaussians(gi.means, gi.quats, gi.scales, gi.opacities, gi.colors, K, viewmat, size, size, bg, backend="auto")
        pred = out.rgb * w_rgb + target_rgb * (1 - w_rgb)
        loss = options.w_l1 * (pred - target_rgb).abs().sum() / (3 * n_rgb)
        if options.w_dssim > 0:
            ssim = ssim_map(pred, target_rgb)
            loss = loss + options.w_dssim * (1 - (ssim[..., None] * w_rgb).sum() / n_rgb)
        a = out.alpha.clamp(COVERAGE_ALPHA_EPS, 1 - COVERAGE_ALPHA_EPS)
        bce = -(target_alpha * torch.log(a) + (1 - target_alpha) * torch.log(1 - a))
        loss = loss + options.w_alpha * (bce * w_alpha).sum() / n_alpha
        loss = loss + _regularisers(maps_now.tensors(), options, spacing_t, log_max_scale, log_min_scale, hair, unseen, mirror, no_evidence, pa, pb)
        if reg_residual is not None:
            loss = loss + options.w_residual * reg_residual
        if options.w_coverage > 0 and options.coverage_every > 0 and it % options.coverage_every == 0:
            outer = Gaussians(**{k: torch.index_select(v, 0, outer_index) for k, v in g.tensors().items()})
            loss = loss + options.w_coverage * _coverage_loss(outer, vertices, atlas.faces, outer_faces, gen, options)
        loss.backward()
        opt.step()
        sched.step()
        if losses is not None:
            losses.append(float(loss.detach()))
        if progress is not None:
            progress((it + 1) / options.iterations)
    if decoders is not None:
        decoders.dynamic.eval()
        decoders.static.eval()
        for p in decoders.trainable_parameters():
            p.grad = None
    with torch.no_grad():
        return cur().detach()


def _expand(step: Tensor, like: Tensor) -> Tensor:
    """[T] per-texel factor shaped to broadcast against a [T] or [T, C] map."""
    return step[:, None] if like.dim() == 2 else step


def _regularisers(params, options, spacing, log_max_scale, log_min_scale, hair, unseen, mirror, no_evidence, pa, pb) -> Tensor:
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


def _coverage_loss(
    g: Gaussians, vertices: np.ndarray, faces: np.ndarray, face_mask: np.ndarray, gen: torch.Generator, options: AvatarOptions
) -> Tensor:
    """mean(1 - alpha) over the silhouette of the ``face_mask`` triangles at a random orbit view
    (yaw in +-180 degrees, pitch in +-COVERAGE_PITCH_DEG)."""
    r = torch.rand(2, generator=gen)
    yaw = float(360.0 * r[0] - 180.0)
    pitch = float((2 * r[1] - 1) * COVERAGE_PITCH_DEG)
    centre = vertices.mean(0)
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    dist = radius / (ORBIT_HEAD_FILL * math.tan(math.radians(ORBIT_FOV_DEG) / 2))
    cam = orbit_camera(yaw, pitch, dist, centre, ORBIT_FOV_DEG, options.coverage_size, options.coverage_size)
    sil = torch.as_tensor(render_mesh(vertices, faces, cam, face_mask=face_mask).mask)
    if not bool(sil.any()):
        return torch.zeros(())
    K, viewmat = cam.torch()
    out = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, K, viewmat, cam.width, cam.height, None, backend="auto")
    return (1.0 - out.alpha[..., 0][sil]).mean()


__all__ = [
    "AVATAR_FORMAT_VERSION",
    "BUILD_STAGES",
    "PREVIEW_EXPRESSIONS",
    "PREVIEW_YAWS",
    "TURNTABLE_FPS",
    "AnimationRig",
    "Avatar",
    "AvatarOptions",
    "BuildData",
    "TexelInit",
    "build_avatar",
    "contact_sheet",
    "crop_camera",
    "dynamic_texels",
    "initial_maps",
    "optimise_maps",
    "polygon_mask",
    "preview_images",
    "psnr",
    "ssim_map",
    "turntable_frames",
]
