"""Hair as geometry: static Gaussians that fill the photo's hair outside the head mesh's silhouette.

The head model is a bald head; a photo's hair reaches beyond it (volume on top, curls at the sides,
long hair hanging below the ears). One photo shows that hair's outline and colour from the front
only, so the volume behind it is a plausible guess: the points that project into the input view's
hair region (``sega.person_regions.hair_mask``) outside the mesh's silhouette and lie, behind the ears'
plane, within as far of the head mesh as the hair stands out from the head's outline at their pixel: a
shell around the head, as thick there as in the photo. Below the ears it hangs from the head's outline
at ear height (and behind the neck where the photo shows hair on both sides of it); over the back and
top of the head, which the photo cannot show, a layer as thick as the photo's hair above the ears
covers the scalp. Every voxel on the volume's surface becomes one round Gaussian: the front layer with
the colour of the pixel it covers, deeper and hidden ones with the local colour of the nearest hair.
From the front the hair is the photo's; from the sides and back it continues around and behind the head.

The Gaussians are canonical (unposed head space) and static: they move rigidly with the head pose,
not with expressions, and go into the bundle's static splats like any other.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_erosion, gaussian_filter

from ...camera import Camera
from ...gaussians import Gaussians
from ...headmodel.base import HeadModel
from ...imaging import bilinear_sample, dilate
from ...meshraster import project_vertices, render_mesh
from ...person_regions import MASK_THRESHOLD, hair_mask

HAIR_VOXEL_M = 0.004  # voxel side of the hair volume (metres): a Gaussian per surface voxel
HAIR_SCALE_VOXELS = 0.6  # each Gaussian's standard deviation, in voxel sides (neighbours overlap)
HAIR_OPACITY = 0.9
HAIR_REACH_M = 0.12  # the volume's box reaches this far beyond the head mesh's sides and top (voluminous hair) ...
HAIR_DROP_M = 0.25  # ... and this far below the head model's lowest point (long hair over the shoulders)
HAIR_FRONT_FRACTION = 0.4  # hair outside the silhouette starts this far back through the head's depth (the ears' plane) ...
HAIR_CROWN_FRACTION = 0.75  # ... rising to this at the top of the head (hair on top reaches the hairline: a round front, not a wall)
HAIR_BASE_M = 0.01  # hair lies within the distance it stands out from the head in the photo (per pixel) plus this ...
HAIR_SHELL_BASE_M = HAIR_VOXEL_M  # ... above the ears plus this: more flattens the shell's top where the photo's outline
# clips it (a plateau 2 sqrt((r + t + base)^2 - (r + t)^2) long over a skull of radius r under hair t thick)
HAIR_COVER_MIN_M = 0.005  # the hair over the back of the head is at least this thick (short hair) ...
HAIR_COVER_MAX_M = 0.03  # ... and at most this (the photo's volume above the ears, median, lies between)
# A splat reaches past its centre: where the volume's outline grazes the view, a stack of ~10 splats at
# HAIR_OPACITY still sums to alpha 0.5 this many standard deviations out. Voxels are kept only if their centre
# lies this far (less half a voxel) inside the person, so the hair's outline lands on the photo's, not 1-4 px out.
HAIR_OUTLINE_REACH_SIGMAS = 2.3
SILHOUETTE_MARGIN_PX = 2  # hair pixels within this of the mesh's silhouette belong to the mesh's own (hair) texels
COLOUR_BLUR_PX = 1.0  # the photo is blurred by this (Gaussian sigma, px) before hair colours are taken (no aliasing)
DEEP_BLUR_PX = 6.0  # voxels behind the front layer take the hair's colour blurred this much (px) ...
DEEP_BLEND_M = 0.015  # ... fully at this depth behind the front voxel of their pixel
HAIR_EDGE_PX = 2  # hair colours come from the hair mask eroded by this (px) ...
MIN_INNER_FRACTION = 0.25  # ... unless that leaves less than this fraction of it
FAR_BLUR_PX = 12.0  # far from the hair, its nearest colours are blurred this much (px): gradients, not radial streaks
MIN_LOCAL_HAIR = 0.05  # where the blurred hair mask is below this, the local mean is the nearest hair's
HEAD_REGIONS = ("face", "head_neck")
SLICE_M = 0.01  # horizontal cross-sections of the mesh: the vertices within this height of a level
# Above the ears, the hair's thickness is taken per direction from the head's centre in the photo (the hair's
# outline beyond the head's, along that direction), not per pixel: per pixel, the rays through the top of a tall
# hairdo kept everything within its height of the skull along them, a flat-topped slab 10+ cm long that showed
# from the side as a fin above the head. Per direction, the hair over the head is a shell as thick as the
# photo's outline says: round from every side.
DIRECTION_BINS = 180  # directions (2 degrees apart) ...
DIRECTION_BLUR_BINS = 3.0  # ... whose thicknesses are smoothed over this many (Gaussian sigma, circular)


def hang_height(vertices: np.ndarray, model: HeadModel) -> float:
    """The height (metres, canonical y) from which hair hangs: the head's widest point (the ears)."""
    face = vertices[model.region_vertex_mask("face")] if "face" in model.region_names else vertices
    return float(face[np.argmax(np.abs(face[:, 0] - face[:, 0].mean())), 1])


def _inside_cross_sections(points: np.ndarray, body: np.ndarray) -> np.ndarray:
    """[N] bool: the point lies inside the convex hull of the body's horizontal cross-section at its height
    (the body vertices within ``SLICE_M`` of it, in the x-z plane). points [N, 3], body [V, 3]."""
    from scipy.spatial import Delaunay, QhullError

    out = np.zeros(len(points), dtype=bool)
    layers = np.round(points[:, 1] / HAIR_VOXEL_M).astype(np.int64)
    for layer in np.unique(layers):
        sel = np.flatnonzero(layers == layer)
        ring = body[np.abs(body[:, 1] - layer * HAIR_VOXEL_M) < SLICE_M][:, [0, 2]]
        if len(ring) < 4:
            continue
        try:
            out[sel] = Delaunay(ring).find_simplex(points[sel][:, [0, 2]]) >= 0
        except QhullError:  # a degenerate slice (collinear points)
            continue
    return out


def hair_volume_points(vertices: np.ndarray, model: HeadModel, camera: Camera, hair: np.ndarray, reach_m: np.ndarray,
                       behind: np.ndarray | None = None, mesh_depth: np.ndarray | None = None,
                       cover_m: float = 0.0) -> np.ndarray:  # fmt: skip
    """[N, 3] canonical centres of the hair volume's surface voxels, behind the ears' plane
    (``HAIR_FRONT_FRACTION``, sloping forward above the ears to ``HAIR_CROWN_FRACTION`` at the top), that project into the hair mask [S, S] bool and lie

    * above the ears (``hang_height``): within ``reach_m`` at their pixel (+ ``HAIR_SHELL_BASE_M``) of the
      head mesh (a shell as thick as the hair stands out from the head in the photo);
    * below them: within that reach of the head's outline at ear height, in the horizontal plane (hair
      hangs from it, so from the side long hair is a sheet from the ears back), outside the neck.

    behind: [S, S] bool pixels inside the mesh's silhouette where the hair continues behind the neck (it
    hangs on both sides of it), with mesh_depth [S, S] (camera depth of the mesh): there only voxels the
    mesh hides in the input view are kept; there too, above the ears, the voxels outside the head within
    cover_m of it (the hair over the back and top of the head, which the photo cannot show). camera: the
    view the masks and the per-pixel reach (metres) are in."""
    from scipy.spatial import Delaunay, cKDTree

    head = vertices[model.region_vertex_mask(*[r for r in HEAD_REGIONS if r in model.region_names])]
    lo, hi = head.min(0), head.max(0)
    y_hang = hang_height(vertices, model)
    axes = [np.arange(lo[0] - HAIR_REACH_M, hi[0] + HAIR_REACH_M, HAIR_VOXEL_M),
            np.arange(lo[1] - HAIR_DROP_M, hi[1] + HAIR_REACH_M, HAIR_VOXEL_M),
            np.arange(lo[2] - HAIR_REACH_M, lo[2] + HAIR_CROWN_FRACTION * (hi[2] - lo[2]), HAIR_VOXEL_M)]  # fmt: skip
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)  # [X, Y, Z, 3]
    pts = grid.reshape(-1, 3)
    # The front limit: the ears' plane up to ear height, then forward along a straight line to the hairline at the top.
    rise = np.clip((pts[:, 1] - y_hang) / max(hi[1] - y_hang, 1e-6), 0.0, 1.0)
    z_front = lo[2] + (HAIR_FRONT_FRACTION + (HAIR_CROWN_FRACTION - HAIR_FRONT_FRACTION) * rise) * (hi[2] - lo[2])
    xy, z = project_vertices(pts, camera)
    s_h, s_w = hair.shape
    col, row = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    cand = np.flatnonzero((col >= 0) & (col < s_w) & (row >= 0) & (row < s_h) & (z > 0) & (pts[:, 2] <= z_front))
    in_hair = hair[row[cand], col[cand]]
    in_behind = np.zeros_like(in_hair) if behind is None else behind[row[cand], col[cand]] & ~in_hair
    in_cover = np.zeros_like(in_hair)
    if mesh_depth is not None:  # behind the neck and over the back of the head: only what the mesh hides in the input view
        hidden = z[cand] > mesh_depth[row[cand], col[cand]] + HAIR_VOXEL_M
        in_behind &= hidden
        in_cover = hidden & ~in_hair & (pts[cand, 1] >= y_hang)
    take = in_hair | in_behind | in_cover
    cand, in_behind, in_cover, in_hair = cand[take], in_behind[take], in_cover[take], in_hair[take]
    p = pts[cand]
    up = p[:, 1] >= y_hang
    dist = np.zeros(len(cand))
    if up.any():
        dist[up] = cKDTree(head).query(p[up])[0]
    down = np.flatnonzero(~up)
    if down.size:
        ring = head[np.abs(head[:, 1] - y_hang) < SLICE_M][:, [0, 2]]
        d_ring = cKDTree(ring).query(p[down][:, [0, 2]])[0]
        dist[down] = np.where(Delaunay(ring).find_simplex(p[down][:, [0, 2]]) >= 0, 0.0, d_ring)
        dist[down[_inside_cross_sections(p[down], vertices)]] = np.inf  # never inside the neck or shoulders
    keep = in_hair & (dist <= reach_m[row[cand], col[cand]] + np.where(up, HAIR_SHELL_BASE_M, HAIR_BASE_M))
    keep |= in_behind & (dist <= HAIR_BASE_M)  # hanging straight down from the back of the head
    if in_cover.any():  # a layer as thick as the hair on top of the head in the photo, outside the head
        cover = in_cover & (dist <= cover_m)
        cover[cover] = ~_inside_cross_sections(p[cover], vertices)
        keep |= cover
    occupied = np.zeros(len(pts), dtype=bool)
    occupied[cand[keep]] = True
    occupied = occupied.reshape(grid.shape[:3])
    surface = occupied & ~binary_erosion(occupied, border_value=0)  # voxels with an empty neighbour
    return grid[surface].astype(np.float32)


def thickness_by_direction(hair: np.ndarray, silhouette: np.ndarray, centre: np.ndarray, m_per_px: float) -> np.ndarray:
    """[S, S] metres: for each pixel, how far the photo's hair stands out beyond the head's silhouette in the
    pixel's direction from ``centre`` [2] (x, y px): the hair's outer radius there minus the silhouette's,
    over ``DIRECTION_BINS`` directions smoothed circularly; 0 where no hair lies beyond the head.
    hair, silhouette: [S, S] bool."""
    from scipy.ndimage import gaussian_filter1d

    rows, cols = np.indices(hair.shape)
    dx, dy = cols + 0.5 - centre[0], rows + 0.5 - centre[1]
    radius = np.hypot(dx, dy)
    bins = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * DIRECTION_BINS).astype(np.int64) % DIRECTION_BINS
    outer, head = np.zeros(DIRECTION_BINS), np.zeros(DIRECTION_BINS)
    np.maximum.at(outer, bins[hair], radius[hair])
    np.maximum.at(head, bins[silhouette], radius[silhouette])
    thick = np.where(outer > head, outer - head, 0.0)
    thick = gaussian_filter1d(thick, DIRECTION_BLUR_BINS, mode="wrap")
    return thick[bins] * m_per_px


def behind_neck(hair: np.ndarray, silhouette: np.ndarray, hang_row: int) -> np.ndarray:
    """[S, S] bool: silhouette pixels below ``hang_row`` between hair on both sides of them in their row
    (hair hanging on both sides of the neck goes on behind it)."""
    out = np.zeros_like(hair)
    cols = np.arange(hair.shape[1])
    for r in range(max(hang_row, 0), hair.shape[0]):
        sil = np.flatnonzero(silhouette[r])
        if sil.size == 0:
            continue
        left, right = hair[r, : sil[0]].any(), hair[r, sil[-1] + 1:].any()
        if left and right:
            out[r] = silhouette[r] & (cols >= sil[0]) & (cols <= sil[-1])
    return out


def hair_gaussians(vertices: np.ndarray, model: HeadModel, camera: Camera, target: np.ndarray, person: np.ndarray,
                   landmarks: np.ndarray, silhouette: np.ndarray, device: torch.device | str | None = None) -> Gaussians | None:  # fmt: skip
    """The hair volume's Gaussians (canonical, on ``device``; None: torch's default), or None when the photo
    shows no hair beyond the head. The work is numpy on the CPU; only the result moves.

    vertices: [V, 3] the fitted mesh; camera: the head-crop camera; target: [S, S, 3] float the photo
    crop; person: [S, S] its person mask; landmarks: [478, 2+] in crop px; silhouette: [S, S] bool the
    mesh's silhouette at that camera."""
    from scipy.ndimage import distance_transform_edt

    hair = hair_mask(target, person, landmarks) & ~dilate(silhouette, SILHOUETTE_MARGIN_PX)
    if not hair.any():
        return None
    # Metres per pixel at the head: the face's width in the photo against the fitted mesh's.
    head = vertices[model.region_vertex_mask(*[r for r in HEAD_REGIONS if r in model.region_names])]
    xy_head, _ = project_vertices(head.astype(np.float64), camera)
    m_per_px = float(np.ptp(head[:, 0]) / max(np.ptp(xy_head[:, 0]), 1.0))
    frags = render_mesh(vertices, model.faces, camera)
    hang_xy, _ = project_vertices(np.array([[head[:, 0].mean(), hang_height(vertices, model), head[:, 2].mean()]]), camera)
    # How far the hair stands out of the head: below the ears per pixel (hanging hair, from the head's outline at
    # ear height), above them per direction from the head's centre (``thickness_by_direction``).
    centre_xy, _ = project_vertices(head.mean(0, keepdims=True).astype(np.float64), camera)
    below = np.arange(hair.shape[0])[:, None] >= int(hang_xy[0, 1])
    reach = np.where(below, distance_transform_edt(~silhouette) * m_per_px, thickness_by_direction(hair, silhouette, centre_xy[0], m_per_px))
    behind = behind_neck(hair, silhouette, int(hang_xy[0, 1]))
    # The hair's thickness over the hidden back and top of the head: as far as it stands out above the ears in the photo.
    above = hair & (np.arange(hair.shape[0])[:, None] < int(hang_xy[0, 1]))
    cover_m = float(np.clip(np.median(reach[above]) if above.any() else 0.0, HAIR_COVER_MIN_M, HAIR_COVER_MAX_M))
    # Voxel centres stay inside the person by as far as their splats reach beyond them (HAIR_OUTLINE_REACH_SIGMAS);
    # only against the backdrop: next to the face and neck the hair meets the mesh's own splats.
    inset_m = HAIR_OUTLINE_REACH_SIGMAS * HAIR_SCALE_VOXELS * HAIR_VOXEL_M - HAIR_VOXEL_M / 2
    inset_px = max(0, int(round(inset_m / m_per_px)))
    fill = hair & ~dilate(person < MASK_THRESHOLD, inset_px)
    means = hair_volume_points(vertices, model, camera, fill, reach, behind, np.where(frags.mask, frags.depth, np.inf), cover_m)
    if len(means) == 0:
        return None
    xy, depth = project_vertices(means.astype(np.float64), camera)
    # The front layer takes the photo's (lightly blurred) colour; deeper voxels, which show from the sides and
    # back as streaks of the front's colours, blend to the hair's local mean colour (a wide blur of the hair only).
    sharp = bilinear_sample(gaussian_filter(target, sigma=(COLOUR_BLUR_PX, COLOUR_BLUR_PX, 0)), xy)
    # Colours come from the hair's inside: its outline's pixels mix in the backdrop and skin.
    inner = binary_erosion(hair, iterations=HAIR_EDGE_PX)
    inner = inner if inner.sum() >= MIN_INNER_FRACTION * hair.sum() else hair
    weight = gaussian_filter(inner.astype(np.float32), DEEP_BLUR_PX)[..., None]
    local = gaussian_filter(target * inner[..., None], sigma=(DEEP_BLUR_PX, DEEP_BLUR_PX, 0)) / np.maximum(weight, 1e-6)
    # Far from any hair pixel (behind the face, over the back of the head): the local colour of the nearest hair
    # pixel, blurred wide, so the hidden hair continues the visible hair's light and dark parts (not one flat colour).
    far = weight[..., 0] < MIN_LOCAL_HAIR
    _, (near_r, near_c) = distance_transform_edt(far, return_indices=True)
    local = np.where(far[..., None], gaussian_filter(local[near_r, near_c], sigma=(FAR_BLUR_PX, FAR_BLUR_PX, 0)), local)
    wide = bilinear_sample(local, xy)
    pix = np.floor(xy).astype(np.int64)
    key = np.clip(pix[:, 1], 0, hair.shape[0] - 1) * hair.shape[1] + np.clip(pix[:, 0], 0, hair.shape[1] - 1)
    front = np.full(hair.size, np.inf)
    np.minimum.at(front, key, depth)
    t = np.clip((depth - front[key]) / DEEP_BLEND_M, 0.0, 1.0)
    t[silhouette.reshape(-1)[key]] = 1.0  # behind the neck: the photo shows the neck there, not this hair
    t = t[:, None]
    colors = np.clip((1.0 - t) * sharp + t * wide, 0.0, 1.0).astype(np.float32)
    n = len(means)
    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1.0
    return Gaussians(
        means=torch.as_tensor(means, device=device),
        quats=torch.as_tensor(quats, device=device),
        scales=torch.full((n, 3), HAIR_SCALE_VOXELS * HAIR_VOXEL_M, device=device),
        opacities=torch.full((n,), HAIR_OPACITY, device=device),
        colors=torch.as_tensor(colors, device=device),
    )


__all__ = ["behind_neck", "hair_gaussians", "hair_volume_points", "hang_height", "thickness_by_direction"]
