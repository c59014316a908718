"""Initial Gaussian maps on the fitted mesh: colours from where the photo sees each texel (weighted by
how well), the mirror texel, or smooth skin / hair fields (``unseen``); defaults for teeth, mouth
interior and sclera; flat overlapping splats."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ...camera import Camera
from ...gaussians import GaussianMaps
from ...headmodel.base import HeadModel
from ...face_measures import interocular
from ...imaging import bilinear_sample, dilate, polygon_mask
from ...meshraster import project_vertices, render_mesh
from ...person_regions import CHIN, FACE_MARGIN_IOD, face_oval, hair_and_clothes, hair_colour, skin_colour, skin_mask
from ...uv import Atlas
from ..options import AvatarOptions
from ..lids import LID_MOVE_M  # lid texels get strict visibility (project_texels)
from ..texels import BLINK_EXPRESSIONS, blink_texels, neighbour_pairs, region_mask, smooth_field, texel_spacing
from .unseen import SKIN_FIELD_SIGMA_M, photo_weight, scalp_texels, unseen_colours

MOUTH_REGIONS = ("teeth", "mouth_interior")
# Default colours (linear-ish sRGB in [0, 1]) of parts a photo rarely shows.
# Colour defaults (sRGB in [0, 1]) for parts a photo rarely shows.
TEETH_COLOR = (0.90, 0.87, 0.80)  # off-white: the teeth's hue, and their colour when the photo gives no exposure
# Teeth seen in a mouth are about as bright as the face's skin (median ratio of max(rgb) 1.01, quartiles 0.94-1.12,
# over the dev clips' and photos' frames showing teeth): the mouth shades them. At TEETH_COLOR whatever the photo's
# exposure, an opened mouth showed a glaring white band, and the eval's photometric refinement closed it again.
TEETH_SKIN_VALUE_RATIO = 1.0
MOUTH_INTERIOR_COLOR = (0.38, 0.10, 0.10)  # dark red
SCLERA_COLOR = (0.92, 0.90, 0.87)  # white of the eye, slightly warm
# Painted eyeballs (where the photo does not show them: a squinting source, the parts under the lids).
# Angles from the eyeball's forward axis (+Z) about its centre (``sega.headmodel.eyes.sphere_centre``):
# an iris 11.7 mm across on a 12.2 mm-radius eyeball spans ~29 degrees; the pupil ~9 (a 4 mm pupil).
IRIS_HALF_ANGLE_DEG = 27.0
PUPIL_HALF_ANGLE_DEG = 9.0
LIMBUS_DEG = 3.0  # the iris darkens over this many degrees towards its rim (the limbal ring)
LIMBUS_DARKEN = 0.55  # ... to this fraction of its colour
IRIS_COLOR = (0.30, 0.20, 0.13)  # dark brown: the most common iris colour, when the photo shows none
PUPIL_COLOR = (0.03, 0.03, 0.03)
# An eye opened less than this (lid gap / inter-ocular distance) shows lashes and lid shadow, not the eyeball:
# its eyeball texels count as unseen and are painted (a grin's squint at 0.02-0.04 otherwise opened, when driven,
# onto a dark slit).
MIN_SEEN_EYE_GAP = 0.05
MIN_EYE_PIXELS = 12  # photo pixels needed to take the iris / sclera colour from the photo
SCLERA_BRIGHT_PERCENTILE = 70  # the sclera's colour: pixels above this brightness percentile (lash shadows left out) ...
SCLERA_SKIN_VALUE_RATIO = 1.15  # ... taken when at least this much brighter than the skin's median ...
SCLERA_SKIN_SATURATION_RATIO = 0.7  # ... and at most this saturated relative to it (else the default)
PHOTO_REGION_MARGIN_PX = 1.0  # photo eye / mouth masks grown by this before a texel counts as inside (anti-aliased edges)
# Skin and lip texels this close to the photo's mouth opening (a fraction of the inter-ocular distance) count
# as inside it: a splat is wider than its centre pixel, and lip splats at the teeth's edge were fitted white
# (a white band between the lips once the mouth closed).
LIP_EDGE_IOD = 0.04
MOUTH_DARK_LIP_RATIO = 0.6  # inside the inner lips, pixels darker than this fraction of the lips' median value are the
# mouth's interior (shadowed teeth, tongue back, throat); brighter ones are lips unless teeth-like
# The lips' inner surfaces, hidden in a closed mouth, are wet mucosa in the mouth's shadow: unseen texels this
# close to the mesh's inner-lip contour (MediaPipe's inner-lip points on the fitted mesh) take the photo's lip
# colour darkened by INNER_LIP_SHADE. Lit like the outer lips (or as skin, as before) they filled a slightly
# opened mouth with lip colour: renders at jawOpen 0.2 read as closed (MediaPipe gap 0.018 IOD on the render, 0.065 on
# the mesh; 0.051 with this shade, echomimic_a, fast preset).
INNER_LIP_RADIUS_M = 0.006
INNER_LIP_SHADE = 0.25
LIP_MIN_SATURATION = 0.1  # lips greyer than this (a black-and-white photo) cannot be told from teeth by colour: no
# teeth-like pixels are taken beyond the inner contour there
# Texel visibility in the photo.
# Visibility test when projecting texels into the photo.
VISIBILITY_DEPTH_TOLERANCE_M = 0.002  # a texel is visible if within this of the z-buffer depth
VISIBILITY_MIN_COS = 0.25  # ... and its normal faces the camera at least this much (about 75 degrees)
VISIBILITY_MIN_MASK = 0.5  # ... and the person mask there is at least this
INPAINT_NEIGHBOURS = 8  # seen texels averaged (inverse distance) for an unseen texel's starting colour
INPAINT_SMOOTH_STEPS = 20  # neighbour-averaging passes over inpainted texels
# A photo's closing eye (a squint, a blink: lids closer than ``fit.EYE_REST_GAP`` x IOD) keeps its lids' and painted
# eyeball's splats as initialised (``TexelInit.fixed_geometry``): fitted to the squint, they grew over the eyeball,
# and the driven eye stayed shut. The lids' splats are then sized for the open eye times LID_SPLAT_GROWTH, so that
# the lid, stretched again as it closes, still hides the eyeball (at 1.0 a closed eye showed 12.5% of the open
# eye's eyeball pixels). An open eye's lids are fitted as before: kept as initialised, a blink read back less
# closed on the render (MediaPipe's lid gap 0.89 of the open eye's, 0.67-0.74 fitted).
LID_SPLAT_GROWTH = 1.3
# ... but no larger than LID_MARGIN_REACH x the texel's distance to the open eye's lid margin (``lid_margin_spacing``):
# grown alike up to the lash line, the lids hung over the driven open eye (xportrait_driving's grin: MediaPipe lid gap
# on the render 0.045-0.056 IOD where the target's is 0.08-0.10, 0.066-0.071 capped; a blink still renders shut).
LID_MARGIN_REACH = 1.0
# Below the chin the template's neck widens into shoulders that stand out beside most people's necks and collars: its
# texels that the photo shows over plain backdrop are dropped (``TexelInit.backdrop``: opacity 0 after the fit). The
# coverage loss had kept them opaque and skin-filled, as pale wings beside the neck over the photo's backdrop
# (input-view silhouette IoU 0.916 on xportrait_source, 0.934 on echomimic_b).
BACKDROP_MAX_PERSON = 0.1  # pixels whose person probability is below this are backdrop ...
BACKDROP_MARGIN_IOD = 0.05  # ... this far (inter-ocular distances) from every person pixel: a splat is wider than its centre


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
    photo_weight: np.ndarray | None = None  # [T] how far the fitted colour is trusted (``unseen.photo_weight``; 1: eyes, mouth)
    fill: np.ndarray | None = None  # [T, 3] the smooth skin / hair field colours (``unseen.unseen_colours``)
    # [T] bool: texels whose geometry (offset, rotation, scale) the optimisation leaves as initialised: a closing
    # eye's lids and painted eyeball (``LID_SPLAT_GROWTH``).
    fixed_geometry: np.ndarray | None = None
    # [T] bool: texels below the chin that the photo shows over its backdrop (``BACKDROP_*``): dropped after the fit
    backdrop: np.ndarray | None = None


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photo colours of texels, whether the photo sees them, how squarely, and how far inside the mesh's silhouette.

    photo: [H, W, 3] float in [0, 1]; person_mask: [H, W] in [0, 1]; vertices [V, 3] / faces [F, 3]: the
    fitted mesh (occluder); points / normals: [T, 3] texel surface points and unit normals (world).
    texel_faces: [T] triangle of each texel, with strict: [T] bool texels that are only visible where the
    triangle drawn at their pixel shares a vertex with their own (for surfaces folded within the depth
    tolerance, e.g. an open eye's upper lid tucked under the skin above it).
    returns (colors [T, 3] float32, visible [T] bool, cos [T] float, edge_px [T] float): visible = in the
    photo, not occluded (z-buffer), facing the camera, on the person; cos = cosine between the normal and
    the direction to the camera; edge_px = distance (photo px) of the texel's pixel from the mesh's
    silhouette edge (0 outside the silhouette).
    """
    from scipy.ndimage import distance_transform_edt

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
    colors = bilinear_sample(photo, xy).astype(np.float32)
    edge_px = np.zeros(points.shape[0])
    edge_px[inside] = distance_transform_edt(frags.mask)[row[inside], col[inside]]
    return colors, visible, cos, edge_px


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


def initial_maps(
    model: HeadModel,
    atlas: Atlas,
    vertices: np.ndarray,
    photo: np.ndarray,
    person_mask: np.ndarray,
    camera: Camera,
    options: AvatarOptions,
    landmarks: np.ndarray | None = None,
    expression: np.ndarray | None = None,
    device: torch.device | str | None = None,
) -> TexelInit:
    """Initial maps on the fitted mesh; the maps' tensors on ``device`` (None: torch's default). The rest is
    numpy work on the CPU (projections, the photo's colours, numba rasterising), whatever the device.

    photo: [H, W, 3] uint8; person_mask: [H, W] float; vertices: [V, 3] fitted (unposed) mesh;
    camera: the fitted photo camera.
    Colours: the photo's colour weighted by how well the photo saw the texel (``unseen.photo_weight``:
    facing cosine and distance from the mesh's silhouette edge), then the mirror texel's by how well that
    one was seen (not on the eyeballs), then smooth fields grown from what the photo saw well (``unseen.unseen_colours``: skin,
    shaded in folds; the photo's hair colour on the scalp and on every texel facing the camera over the photo's hair;
    the photo's own colours, smoothed, over its clothes and below its frame). Teeth and mouth interior get fixed defaults;
    unseen eyeball parts are painted. ``confidence`` = smoothstep of the facing cosine between
    ``photo_cos_low`` and ``photo_cos_high`` where seen, else 0.

    landmarks: [478, 2|3] the photo's MediaPipe landmarks. With them, a texel only takes its photo colour
    where the photo shows its kind of surface (``photo_agreement``): eyeball texels inside the photo's eye
    openings, skin and lips outside them and outside the inner lips. Where the fitted mesh is off (a lid
    fitted too low over a squinting eye, lips over the teeth of a grin), the others are treated as unseen
    and locked (the optimisation does not repaint them), so the opened eye shows an eye and the closed
    lips show lips. Unseen eyeball texels get a painted eye (``paint_eyeballs``).
    """
    verts_t = torch.as_tensor(vertices, dtype=torch.float32)
    points = atlas.texel_points(verts_t).numpy().astype(np.float64)
    normals = atlas.texel_frames(verts_t)[..., 2].numpy().astype(np.float64)
    spacing = texel_spacing(atlas, vertices)
    pairs = neighbour_pairs(atlas, points, spacing)

    img = photo.astype(np.float32) / 255.0
    lids = blink_texels(model, atlas, LID_MOVE_M)
    colors, visible, cos, edge_px = project_texels(img, person_mask, camera, vertices, atlas.faces, points, normals, atlas.texel_face, lids)
    photo_rgb = colors.copy()  # the photo's colour at every texel's pixel, seen or not (``colors`` gets the mirror's)
    mouth = region_mask(atlas, *MOUTH_REGIONS)
    eyes = region_mask(atlas, "eyeball_left", "eyeball_right")
    mismatch = np.zeros_like(visible)
    if landmarks is not None:
        mismatch = visible & ~photo_agreement(atlas, points, camera, landmarks, img)
        visible &= ~mismatch
    seen = np.where(visible, _smoothstep(cos, options.photo_cos_low, options.photo_cos_high), 0.0)
    visible &= ~mouth  # teeth / mouth colours start from defaults (may still be optimised where seen)
    mirror = atlas.mirror_texels(model)
    # The photo's colour where seen, else the mirror texel's where that one is seen, else (and for eyeballs,
    # painted) the smooth skin / hair fields (``unseen``). How far each seen colour is trusted
    # (``unseen.photo_weight``: squarely, away from the mesh's silhouette edge) is applied after the photo
    # fit (``blend_unseen``): the fit starts from the photo everywhere it sees, as the input view needs.
    # Not on the eyeballs: each turns with the gaze, so with the photo's look to one side the other eye's mirrored
    # spot is iris where this one's is sclera, and the copies showed as blots once the eyes turned (sadtalker_wda_aoc:
    # a teal patch on the iris looking inwards). Their unseen texels are painted (``paint_eyeballs``).
    from_mirror = ~visible & visible[mirror] & ~mouth & ~eyes
    colors[from_mirror] = colors[mirror[from_mirror]]
    known = visible | from_mirror
    iod = interocular(landmarks) if landmarks is not None else np.inf
    weight = np.where(visible, photo_weight(cos, edge_px / iod), 0.0)
    skin_rgb = skin_colour(img, landmarks) if landmarks is not None else np.median(colors[weight > 0.5], 0)
    hair_rgb = None
    scalp = scalp_texels(model, atlas)
    clothes = np.zeros_like(visible)
    below_frame = np.zeros_like(visible)
    xy, _ = project_vertices(points, camera)  # [T, 2] each texel's photo pixel
    if landmarks is not None:
        hair_px, clothes_px = hair_and_clothes(img, person_mask, landmarks)
        hair_rgb = hair_colour(img, hair_px, landmarks)
        # Texels the photo shows as hair are hair wherever the template puts them (the temples, a forehead under
        # the hairline, ears under long hair), grazing ones too (cos below VISIBILITY_MIN_COS): filled with skin,
        # the band along the mesh's silhouette at the temples showed as pale wedges in the hair, input view included.
        scalp = scalp | ((cos > 0.0) & _in_photo_mask(xy, hair_px))
        # Likewise the neck's base where the photo shows clothes: filled with skin, a pale band under the collar.
        clothes = (cos > 0.0) & ~scalp & _in_photo_mask(xy, clothes_px)
        below_frame = (xy[:, 1] >= img.shape[0]) & ~scalp  # the body goes on below a frame that cuts it
    fill = unseen_colours(colors, weight, points, normals, pairs, spacing, skin_rgb, scalp, hair_rgb, excluded=eyes | mouth | lids)
    if clothes.any():  # a smooth field of the photo's own colours there (no folds or prints survive it), continued below the frame
        clothed = clothes | below_frame
        fill[clothed] = smooth_field(np.where(clothes[:, None], photo_rgb, 0.0), clothes, points, SKIN_FIELD_SIGMA_M)[clothed]
    # The fit starts unseen texels from their seen neighbours' colours (inpainted): they partly show through
    # the splats around them in the input view and barely move in the fit, so the smooth fields there cost
    # the input view's face ~1 dB. The fields replace them after the fit (``blend_unseen``).
    sources = visible & (cos >= options.photo_cos_low) & ~eyes & ~mouth & ~lids
    near = inpaint_colors(np.where(sources[:, None], colors, 0.0), sources, points, pairs) if sources.any() else fill
    colors = np.where(known[:, None], colors, near)
    colors[eyes & ~known] = SCLERA_COLOR
    if landmarks is not None:
        colors = paint_eyeballs(model, atlas, colors, eyes & ~known, img, landmarks)
    colors[region_mask(atlas, "teeth")] = TEETH_COLOR if landmarks is None else teeth_colour(img, landmarks, skin_rgb)
    colors[region_mask(atlas, "mouth_interior")] = MOUTH_INTERIOR_COLOR
    inner = np.zeros_like(visible)
    if landmarks is not None:
        # (not the lip texels that the photo's teeth or mouth opening covered: those are the outer lips, unseen)
        inner = inner_lip_texels(model, vertices, points) & ~visible & ~mismatch & ~mouth & ~eyes
        colors[inner] = fill[inner] = INNER_LIP_SHADE * lip_colour(img, landmarks)

    squint = closing_eye_texels(atlas, points, camera, landmarks) if landmarks is not None else np.zeros_like(lids)
    splat_spacing = spacing
    if (lids & squint).any():  # a closing eye's lids sized for the open eye (the mesh with its blinks undone)
        open_vertices = np.asarray(vertices, np.float64)
        blinks = [model.expression_index(n) for n in BLINK_EXPRESSIONS if n in model.expression_names]
        if expression is not None and blinks:
            open_vertices = open_vertices - np.tensordot(np.asarray(expression, np.float64)[blinks],
                                                         np.asarray(model.expression_basis, np.float64)[blinks], axes=1)
        grown = LID_SPLAT_GROWTH * texel_spacing(atlas, open_vertices)
        if landmarks is not None:
            grown = np.minimum(grown, lid_margin_spacing(model, atlas, open_vertices))
        splat_spacing = np.where(lids & squint, grown, spacing)
    in_plane = np.log(options.init_scale_texels * splat_spacing)
    log_scale = np.stack([in_plane, in_plane, in_plane + math.log(options.init_normal_scale_ratio)], 1)
    logit = math.log(options.init_opacity / (1.0 - options.init_opacity))
    maps = GaussianMaps.initial(atlas.num_texels, torch.as_tensor(log_scale), torch.as_tensor(colors.astype(np.float32)), logit, device=device)
    # Eyes and mouth keep their fitted colours (their own rules above), and so does the input view's face: it
    # needs every fitted colour there (its grazing slivers add up to ~2 dB).
    weight[eyes | mouth] = 1.0
    if landmarks is not None:
        weight[_in_photo_mask(xy, face_oval(landmarks, img.shape[:2], FACE_MARGIN_IOD))] = 1.0
    # The painted eyeball (what the photo did not show of it) stays as painted, in colour and shape: fitted, its
    # iris splats stretched into the dark slit of a squint.
    painted_eyes = eyes & ~visible & squint
    locked = (lids & ~visible) | (mismatch & ~mouth) | inner | painted_eyes
    backdrop = None
    if landmarks is not None:
        # (facing the camera or not: the back of the neck's base lies behind the same backdrop pixels)
        backdrop = (xy[:, 1] > landmarks[CHIN, 1]) & _in_photo_mask(xy, backdrop_pixels(person_mask, iod))
    return TexelInit(maps, seen.astype(np.float32), spacing, pairs, mirror, locked=locked,
                     photo_weight=weight.astype(np.float32), fill=fill, fixed_geometry=(lids & squint) | painted_eyes,
                     backdrop=backdrop)  # fmt: skip


def closing_eye_texels(atlas: Atlas, points: np.ndarray, camera: Camera, landmarks: np.ndarray) -> np.ndarray:
    """[T] bool: texels on the side of an eye the photo shows closing (``fit.closing_eyes``), i.e. nearer
    that eye's centre in the photo than the other's. points: [T, 3] texel points; landmarks: [478, 2|3]."""
    from ...face_measures import EYE_CONTOURS
    from ...fit import closing_eyes

    closing = closing_eyes(landmarks)
    out = np.zeros(len(points), dtype=bool)
    if not closing:
        return out
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    centres = {side: lm[list(EYE_CONTOURS[side])].mean(0) for side in ("left", "right")}
    xy, _ = project_vertices(points, camera)
    near_left = np.linalg.norm(xy - centres["left"], axis=1) < np.linalg.norm(xy - centres["right"], axis=1)
    for side in closing:
        out |= near_left if side == "left" else ~near_left
    return out


def lid_margin_spacing(model: HeadModel, atlas: Atlas, open_vertices: np.ndarray) -> np.ndarray:
    """[T] metres: the largest splat spacing (std-dev = ``init_scale_texels`` x spacing) for each texel that
    keeps a lid splat off the open eye: LID_MARGIN_REACH x its distance, on the open mesh (open_vertices
    [V, 3]), to the nearer lid margin (MediaPipe's eye contours through the landmark embedding); inf
    without that embedding."""
    from ...face_measures import EYE_CONTOURS
    from ...fit import LANDMARK_SET, surface_rows

    emb = model.landmarks.get(LANDMARK_SET)
    points = atlas.texel_points(torch.as_tensor(open_vertices, dtype=torch.float32)).numpy()
    if emb is None:
        return np.full(len(points), np.inf)
    rows = surface_rows(model, emb, np.asarray(open_vertices)).numpy()
    margin = rows[[i for side in ("left", "right") for i in EYE_CONTOURS[side]]]
    dist, _ = cKDTree(margin).query(points)
    return LID_MARGIN_REACH * dist


def inner_lip_texels(model: HeadModel, vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[T] bool: texels within ``INNER_LIP_RADIUS_M`` of the inner-lip contour on the mesh (MediaPipe's
    inner-lip points through the head model's landmark embedding). vertices: [V, 3] the fitted mesh;
    points: [T, 3] texel surface points on it."""
    from ...face_measures import INNER_LIPS
    from ...fit import LANDMARK_SET, surface_rows

    emb = model.landmarks.get(LANDMARK_SET)
    if emb is None:
        return np.zeros(len(points), dtype=bool)
    contour = surface_rows(model, emb, np.asarray(vertices))[list(INNER_LIPS)].numpy()
    dist, _ = cKDTree(contour).query(points)
    return dist < INNER_LIP_RADIUS_M


def teeth_colour(photo: np.ndarray, landmarks: np.ndarray, skin_rgb: np.ndarray) -> np.ndarray:
    """[3] the teeth's starting colour: the median of the photo's teeth where it shows them, else TEETH_COLOR
    at ``TEETH_SKIN_VALUE_RATIO`` of the skin's brightness (never brighter than TEETH_COLOR). photo: [H, W, 3]
    float in [0, 1]; skin_rgb: [3] the photo's skin colour."""
    from ...face_measures import MIN_POLYGON_PX, lip_polygons, teeth_pixels, teeth_shown

    if teeth_shown(photo, landmarks):  # (the lip polygons exist then: a closed mouth shows no teeth)
        inner, lips = lip_polygons(landmarks, *photo.shape[:2])
        px = photo[inner & teeth_pixels(photo, lips)]
        if len(px) >= MIN_POLYGON_PX:
            return np.median(px, axis=0).astype(np.float32)
    default = np.asarray(TEETH_COLOR, dtype=np.float32)
    return (default * min(1.0, TEETH_SKIN_VALUE_RATIO * float(np.max(skin_rgb)) / float(default.max()))).astype(np.float32)


def lip_colour(photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """[3] median colour of the photo's lips (between the outer and inner lip contours); the mouth
    interior's default where they cover too few pixels. photo: [H, W, 3] float in [0, 1]."""
    from ...face_measures import MIN_POLYGON_PX, lip_polygons

    _, lips = lip_polygons(landmarks, *photo.shape[:2])
    if lips is None or lips.sum() < MIN_POLYGON_PX:
        return np.asarray(MOUTH_INTERIOR_COLOR, dtype=np.float32)
    return np.median(photo[lips], axis=0).astype(np.float32)


def backdrop_pixels(person_mask: np.ndarray, iod: float) -> np.ndarray:
    """[H, W] bool: pixels at least ``BACKDROP_MARGIN_IOD`` x ``iod`` px from every pixel whose person probability
    (person_mask [H, W]) reaches ``BACKDROP_MAX_PERSON``."""
    from scipy.ndimage import distance_transform_edt

    backdrop = person_mask < BACKDROP_MAX_PERSON
    if backdrop.all():
        return backdrop
    return distance_transform_edt(backdrop) >= BACKDROP_MARGIN_IOD * iod


def _in_photo_mask(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[T] bool: the texels' photo pixels (xy [T, 2]) fall into ``mask`` [H, W] bool (outside the photo: False)."""
    h, w = mask.shape
    col, row = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return inside & mask[np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)]


def photo_masks(landmarks: np.ndarray, shape: tuple[int, int], photo: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The photo's surface kinds from its landmarks [478, 2|3]: {"eyes": [H, W] bool inside either eye
    opening (lid contours), "mouth": [H, W] bool the mouth opening}.

    Without ``photo`` the opening is the inner-lip polygon. With ``photo`` ([H, W, 3] float in [0, 1]) it is
    what of that polygon does not look like lips (teeth-like or dark pixels, judged against the lips'
    median colour: MediaPipe's inner contour of a closed smile often runs over the lower lip), plus the
    teeth-like pixels between the contours that touch it when the photo shows teeth (the inner contour of
    a wide grin runs a little inside the teeth; ``sega.face_measures.teeth_pixels``; not in a grey photo).
    Teeth-like pixels that touch no opening stay lips: a closed mouth's glossy lower lip has highlights as
    bright and grey as teeth, and taking them painted teeth onto the lip."""
    from scipy.ndimage import label

    from ...face_measures import EYE_CONTOURS, INNER_LIPS, MIN_POLYGON_PX, OUTER_LIPS, landmark_measures, teeth_pixels, teeth_shown, value_saturation

    h, w = shape
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]

    def poly(idx) -> np.ndarray:
        try:
            return polygon_mask(lm[list(idx)], h, w)
        except Exception:  # a flat polygon (a closed eye or mouth): nothing inside
            return np.zeros((h, w), dtype=bool)

    gaps = landmark_measures(lm)
    eyes = np.zeros((h, w), dtype=bool)
    for side in ("left", "right"):
        if gaps[f"eye_opening_{side}"] >= MIN_SEEN_EYE_GAP:
            eyes |= poly(EYE_CONTOURS[side])
    mouth = poly(INNER_LIPS)
    lips = poly(OUTER_LIPS) & ~mouth
    if photo is None or lips.sum() < MIN_POLYGON_PX:
        return {"eyes": eyes, "mouth": mouth}
    teeth = teeth_pixels(photo, lips)
    value, saturation = value_saturation(photo)
    dark = value < MOUTH_DARK_LIP_RATIO * float(np.median(value[lips]))
    opening = mouth & (teeth | dark)
    if teeth_shown(photo, lm) and float(np.median(saturation[lips])) >= LIP_MIN_SATURATION:
        extra = lips & teeth
        parts, _ = label(extra)
        touching = np.unique(parts[dilate(opening, 1) & extra])  # components within 1 px of the opening
        opening |= np.isin(parts, touching[touching > 0])
    return {"eyes": eyes, "mouth": opening}


def photo_agreement(atlas: Atlas, points: np.ndarray, camera: Camera, landmarks: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """[T] bool: the photo shows the texel's kind of surface where the texel projects: eyeball texels
    inside an eye opening, teeth and mouth-interior texels inside the inner lips, every other texel
    outside both (each polygon grown by ``PHOTO_REGION_MARGIN_PX``: a texel at an edge agrees with either side).
    points: [T, 3] texel surface points (world); photo: [H, W, 3] float in [0, 1]."""

    shape = photo.shape[:2]
    from ...face_measures import interocular

    masks = photo_masks(landmarks, shape, photo)
    margin = int(np.ceil(PHOTO_REGION_MARGIN_PX))
    grown = {k: dilate(v, margin) for k, v in masks.items()}
    core = {k: ~dilate(~v, margin) for k, v in masks.items()}  # shrunk by the margin
    core["mouth"] = dilate(masks["mouth"], int(round(LIP_EDGE_IOD * interocular(landmarks))))
    xy, _ = project_vertices(points, camera)
    h, w = shape
    col = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, w - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, h - 1)
    eyes, mouth = region_mask(atlas, "eyeball_left", "eyeball_right"), region_mask(atlas, *MOUTH_REGIONS)
    agree = ~core["eyes"][row, col] & ~core["mouth"][row, col]  # skin, lips, hair
    agree[eyes] = grown["eyes"][row[eyes], col[eyes]]
    agree[mouth] = grown["mouth"][row[mouth], col[mouth]]
    return agree


def _iris_circles(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] bool inside either iris circle (centre 468 / 473, radius: mean distance of the four rim points)."""
    h, w = shape
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w), dtype=bool)
    for centre, rim in ((468, range(469, 473)), (473, range(474, 478))):
        c = lm[centre]
        r = float(np.linalg.norm(lm[list(rim)] - c, axis=1).mean())
        out |= (xx + 0.5 - c[0]) ** 2 + (yy + 0.5 - c[1]) ** 2 <= r * r
    return out


def eye_colours(photo: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(iris rgb [3], sclera rgb [3]) from the photo's eye openings, or the defaults where it shows too
    little. photo: [H, W, 3] float in [0, 1]. The sclera's colour is taken only when it is clearly
    brighter and less saturated than the face's skin (``SCLERA_SKIN_VALUE_RATIO``,
    ``SCLERA_SKIN_SATURATION_RATIO``): in a squint, the "opening" holds lids and lashes."""
    from ...face_measures import value_saturation

    shape = photo.shape[:2]
    opening = photo_masks(landmarks, shape)["eyes"]
    iris = _iris_circles(landmarks, shape)
    iris_px, sclera_px = photo[opening & iris], photo[opening & ~iris]
    iris_rgb = np.median(iris_px, 0) if len(iris_px) >= MIN_EYE_PIXELS else np.asarray(IRIS_COLOR)
    sclera_rgb = np.asarray(SCLERA_COLOR)
    if len(sclera_px) >= MIN_EYE_PIXELS:
        bright = sclera_px.max(1) >= np.percentile(sclera_px.max(1), SCLERA_BRIGHT_PERCENTILE)
        candidate = np.median(sclera_px[bright], 0)
        skin_v, skin_s = (float(np.median(x)) for x in value_saturation(photo[skin_mask(landmarks, shape)]))
        cand_v, cand_s = (float(x[0]) for x in value_saturation(candidate[None]))
        if cand_v >= SCLERA_SKIN_VALUE_RATIO * skin_v and cand_s <= SCLERA_SKIN_SATURATION_RATIO * skin_s:
            sclera_rgb = candidate
    return iris_rgb.astype(np.float32), sclera_rgb.astype(np.float32)


def paint_eyeballs(model: HeadModel, atlas: Atlas, colors: np.ndarray, which: np.ndarray, photo: np.ndarray,
                   landmarks: np.ndarray) -> np.ndarray:  # fmt: skip
    """colors [T, 3] with the eyeball texels ``which`` [T] bool painted as an eye looking straight ahead:
    pupil, iris (its colour from the photo's visible iris, darkening towards the limbus) and sclera (from
    the photo's visible sclera), by each texel's angle from its eyeball's forward axis on the template
    (eyeballs turn rigidly with gaze, so the angle names the same spot whatever the expression)."""
    from ...headmodel.eyes import sphere_centre

    out = np.array(colors, dtype=np.float32, copy=True)
    iris_rgb, sclera_rgb = eye_colours(photo, landmarks)
    template = atlas.texel_points(torch.as_tensor(model.vertices, dtype=torch.float32)).numpy().astype(np.float64)
    for side in ("left", "right"):
        region = f"eyeball_{side}"
        if region not in atlas.region_names:
            continue
        texels = region_mask(atlas, region) & which
        if not texels.any():
            continue
        centre = sphere_centre(np.asarray(model.vertices, np.float64)[model.region_vertex_mask(region)])
        d = template[texels] - centre
        angle = np.degrees(np.arccos(np.clip(d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12), -1.0, 1.0)))
        rim = np.clip((angle - (IRIS_HALF_ANGLE_DEG - LIMBUS_DEG)) / LIMBUS_DEG, 0.0, 1.0)[:, None]
        rgb = np.where((angle < IRIS_HALF_ANGLE_DEG)[:, None], iris_rgb * (1.0 - (1.0 - LIMBUS_DARKEN) * rim), sclera_rgb)
        rgb[angle < PUPIL_HALF_ANGLE_DEG] = PUPIL_COLOR
        out[texels] = rgb
    return out
