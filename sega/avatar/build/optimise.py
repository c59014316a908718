"""Person-specific optimisation of the maps (and the decoders) on the photo's head crop."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ...camera import Camera
from ...gaussians import GaussianMaps, Gaussians, bind_frames
from ...geometry import matrix_to_quat
from ...imaging import dilate
from ...meshraster import project_vertices, render_mesh
from ...metrics import ssim_map
from ...nets.decoders import ATTRIBUTES, AvatarDecoders, raw_residual, residual_to_maps
from ...render import render as render_gaussians
from ...uv import Atlas
from ..options import AvatarOptions
from ..rig import scale_cap
from ..texels import region_mask
from .init import VISIBILITY_MIN_MASK, TexelInit
from .losses import COVERAGE_ALPHA_EPS, HAIR_REGIONS, RegulariserInputs, coverage_loss, regularisers

STEPPED_FIELDS = ("color", "opacity_logit")  # map fields whose step size follows the photo confidence
GEOMETRY_RESIDUALS = ("offset", "log_scale")  # decoder residual channels of geometry (the rest: appearance)
INPUT_VIEW_OCCLUSION_M = 0.02  # texels this far behind the input view's z-buffer are left out of its render
COVERAGE_REGIONS = ("face", "head_neck")  # the outer surface: what the novel-view coverage term renders


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

    Runs where ``init.maps`` live (``AvatarOptions.device``; the decoders must be there too): every tensor of
    the fit is made there, and ``render(backend="auto")`` picks gsplat on CUDA. The random draws (novel
    views, random expressions) come from CPU generators, so every device sees the same ones.

    decoders (optional, with static_mask [T] bool and the fitted expression [E]): their parameters
    (feature maps + conv weights; not the frozen expression encoder) are fitted jointly with the maps,
    in place. The rendered maps are then maps + static residuals (static texels) + the dynamic
    decoder's residuals at the fitted expression (dynamic texels): the photo shows that expression
    only. So the dynamic branch does not learn what the photo cannot tell, every ``residual_every``
    steps it is also evaluated at ``residual_expressions`` random expressions, and the mean square
    of both decoders' raw outputs is penalised (``w_residual``): residuals stay small everywhere.
    """
    maps, spacing, pairs = init.maps, init.spacing, init.pairs
    dev = maps.device

    def on(a, dtype: torch.dtype | None = None) -> Tensor:
        return torch.as_tensor(a, dtype=dtype, device=dev)

    gen = torch.Generator().manual_seed(options.seed)
    size = options.render_size
    verts_t = on(vertices, torch.float32)
    points = atlas.texel_points(verts_t).detach()
    frames = atlas.texel_frames(verts_t).detach()
    frame_quats = matrix_to_quat(frames)  # the mesh is fixed here: convert once
    K, viewmat = camera.torch(device=dev)
    bg = torch.tensor(options.background, dtype=torch.float32, device=dev)
    frags = render_mesh(vertices, atlas.faces, camera)
    silhouette = frags.mask

    # Loss region and targets (input view).
    margin_px = round(options.hair_margin * size)
    near_head = dilate(silhouette, margin_px)
    m = person_mask
    rgb_w = near_head & ~(silhouette & (m < VISIBILITY_MIN_MASK))  # mesh pixels the photo calls background: no colour target
    target_rgb = on(target * m[..., None] + np.asarray(options.background, np.float32) * (1 - m[..., None]))
    target_alpha = on(np.where(silhouette, 1.0, m).astype(np.float32))[..., None]
    w_rgb = on(rgb_w.astype(np.float32))[..., None]
    w_alpha = on(near_head.astype(np.float32))[..., None]
    n_rgb = max(float(w_rgb.sum()), 1.0)
    n_alpha = max(float(w_alpha.sum()), 1.0)

    # Regulariser constants.
    log_max_scale = scale_cap(options, spacing, dev)  # [T, 1]: the penalty's bound and the hard cap at binding
    unseen_np = np.flatnonzero(init.confidence < 1.0)
    priors = RegulariserInputs(
        options=options,
        spacing=on(spacing, torch.float32),
        log_max_scale=log_max_scale,
        log_min_scale=math.log(options.min_scale_m),
        hair=on(region_mask(atlas, *HAIR_REGIONS)),
        unseen=on(unseen_np),
        mirror=on(init.mirror[unseen_np]),
        no_evidence=on((1.0 - init.confidence)[unseen_np]),  # symmetry weight: 1 - photo confidence
        pair_a=on(pairs[:, 0]),
        pair_b=on(pairs[:, 1]),
    )
    # The coverage term renders the outer surface only: hidden parts (mouth, eyeballs) must not grow
    # through the skin to fill the silhouette.
    outer_mask = region_mask(atlas, *COVERAGE_REGIONS)
    if not outer_mask.any():
        outer_mask = np.ones_like(outer_mask)
    outer_index = on(np.flatnonzero(outer_mask))
    outer_faces = np.zeros(atlas.faces.shape[0], dtype=bool)
    outer_faces[atlas.texel_face[outer_mask]] = True

    # Texels far behind the visible surface, well inside the silhouette, cannot show in the input view:
    # leave them out of its render (they still get the coverage and prior terms); about halves the work
    # per step. Texels near the silhouette stay: with their offsets they form the hair outline.
    xy, z = project_vertices(points.cpu().numpy(), camera)
    col, row = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    interior = ~dilate(~silhouette, margin_px)  # silhouette eroded by the hair margin
    zbuf = np.full(z.shape, -np.inf)
    zbuf[inside] = np.where(interior[row[inside], col[inside]], frags.depth[row[inside], col[inside]], np.inf)
    front = on(np.flatnonzero(z <= zbuf + INPUT_VIEW_OCCLUSION_M))

    # Step size per texel: the photo's evidence for a texel seen at a grazing angle is a sliver of pixels.
    # Letting the photometric loss freely repaint such texels (or fade them to reveal what is behind)
    # smears the face's outline over the sides of the head and opens holes there, visible from novel
    # views. So colour and opacity are parameterised as initial + step * delta (Adam on delta): a texel's
    # appearance moves at most ``step`` times the learning rate per iteration, step = max(confidence,
    # photo_min_step). Geometry keeps the full rate (silhouette texels must grow out to form the hair).
    # Texels outside the input render (only priors act on them) keep the full step.
    confidence = on(init.confidence)
    in_front = torch.zeros(points.shape[0], dtype=torch.bool, device=dev)
    in_front[front] = True
    step = torch.where(in_front, confidence.clamp_min(options.photo_min_step), torch.ones_like(confidence))
    if init.locked is not None:
        step[on(init.locked)] = 0.0
    geometry_step = torch.ones_like(step)  # the geometry fields' step: 0 where the init fixed it
    if init.fixed_geometry is not None:
        geometry_step[on(init.fixed_geometry)] = 0.0
    # The photo loss must not reach what the init fixed through the decoders either (a squint's dark slit
    # painted back onto a locked eyeball by its colour residual): their residuals there are left out of the
    # render, and the residual regulariser keeps them near zero.
    residual_keep = _residual_keep(step == 0, geometry_step == 0) if bool((step == 0).any() or (geometry_step == 0).any()) else None
    start = {k: v.detach().clone() for k, v in maps.tensors().items()}
    params = {k: torch.zeros_like(v, requires_grad=True) for k, v in start.items()}  # deltas
    lrs = {"offset": options.lr_offset, "rotation": options.lr_rotation, "log_scale": options.lr_log_scale,
           "opacity_logit": options.lr_opacity, "color": options.lr_color}
    groups = [{"params": [params[k]], "lr": lrs[k], "name": k} for k in lrs]
    if decoders is not None:
        if static_mask is None or expression is None:
            raise ValueError("optimise_maps with decoders needs static_mask and expression")
        from ...nets.vae import sample_expressions

        sta, dyn = np.flatnonzero(static_mask), np.flatnonzero(~static_mask)
        texel_uv = atlas.texel_uv
        decoders.dynamic.set_texel_uv(texel_uv[dyn]).train()
        decoders.static.set_texel_uv(texel_uv[sta]).train()
        order = on(np.argsort(np.concatenate([sta, dyn])))  # rows of cat([static, dynamic]) -> texel order
        with torch.no_grad():
            z_fit = decoders.encoder(on(np.asarray(expression), torch.float32)[None])  # [1, Z]
        expr_gen = torch.Generator().manual_seed(options.seed + 1)
        groups.append({"params": decoders.trainable_parameters(), "lr": options.lr_decoder, "name": "decoders"})
    opt = torch.optim.Adam(groups, eps=1e-15)
    steps = max(options.iterations, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: options.lr_final_fraction + (1 - options.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))

    def cur() -> GaussianMaps:
        return GaussianMaps(**{k: start[k] + _expand(step if k in STEPPED_FIELDS else geometry_step, v) * v for k, v in params.items()})

    def residuals() -> tuple[GaussianMaps, Tensor]:
        """T rows of decoder residuals at the fitted expression, and their regulariser."""
        res_s = decoders.static()  # [Ts, A]
        res_d = decoders.dynamic(z_fit)[0]  # [Td, A]
        reg = raw_residual(decoders.static, res_s).pow(2).mean() + raw_residual(decoders.dynamic, res_d).pow(2).mean()
        if options.residual_expressions > 0 and options.residual_every > 0 and it % options.residual_every == 0:
            expr_r = sample_expressions(options.residual_expressions, decoders.encoder.config, expr_gen).to(dev)  # drawn on the CPU
            with torch.no_grad():
                z_r = decoders.encoder(expr_r)
            reg = reg + raw_residual(decoders.dynamic, decoders.dynamic(z_r)).pow(2).mean()
        both = torch.index_select(torch.cat([res_s, res_d], 0), 0, order)  # [T, A]
        return residual_to_maps(both if residual_keep is None else both * residual_keep), reg

    step_losses = []  # read back once at the end: a float() per step would wait for the GPU every step
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
        loss = loss + regularisers(maps_now.tensors(), priors)
        if reg_residual is not None:
            loss = loss + options.w_residual * reg_residual
        if options.w_coverage > 0 and options.coverage_every > 0 and it % options.coverage_every == 0:
            outer = Gaussians(**{k: torch.index_select(v, 0, outer_index) for k, v in g.tensors().items()})
            loss = loss + options.w_coverage * coverage_loss(outer, vertices, atlas.faces, outer_faces, gen, options)
        loss.backward()
        opt.step()
        sched.step()
        if losses is not None:
            step_losses.append(loss.detach())
        if progress is not None:
            progress((it + 1) / options.iterations)
    if losses is not None:
        losses.extend(float(v) for v in step_losses)
    if decoders is not None:
        decoders.dynamic.eval()
        decoders.static.eval()
        for p in decoders.trainable_parameters():
            p.grad = None
    with torch.no_grad():
        return cur().detach()


def _residual_keep(appearance_fixed: Tensor, geometry_fixed: Tensor) -> Tensor:
    """[T, A] 1 / 0 per texel and decoder residual channel (``ATTRIBUTES``): 0 on the geometry channels of
    ``geometry_fixed`` [T] bool texels and the appearance channels of ``appearance_fixed`` [T] bool ones."""
    cols = []
    for name, width in ATTRIBUTES:
        fixed = geometry_fixed if name in GEOMETRY_RESIDUALS else appearance_fixed
        cols.append((~fixed).float()[:, None].expand(-1, width))
    return torch.cat(cols, 1)


def _expand(step: Tensor, like: Tensor) -> Tensor:
    """[T] per-texel factor shaped to broadcast against a [T] or [T, C] map."""
    return step[:, None] if like.dim() == 2 else step
