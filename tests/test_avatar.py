"""The avatar built from the astronaut photo (fast preset): fidelity, coverage, expressions, I/O, determinism.

One library build (module fixture) and one CLI build with the same seed (~10 s each on 2 cores).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sega.avatar import (
    AVATAR_FORMAT_VERSION,
    BUILD_STAGES,
    Avatar,
    psnr,
    ssim_map,
)
from sega.errors import SegaError
from sega.gaussians import bind
from sega.geometry import apply_head_pose
from sega.landmarks import mediapipe_groups
from sega.meshraster import project_vertices, render_mesh
from sega.metrics import hair_footprint

pytestmark = pytest.mark.slow

# Thresholds, measured on the astronaut with the fast preset (2-core x86 CPU, seed 0):
#   input-view PSNR inside the face mask 30.5 dB, SSIM 0.937; before optimisation (initial
#   projected colours) 20.9 dB / 0.64. 28 dB / 0.90 prove that the optimisation works and leave
#   ~2.5 dB for other CPUs / thread counts (the numba renderer sums per-thread gradients).
MIN_FACE_PSNR_DB = 28.0
MIN_FACE_SSIM = 0.90
#   alpha coverage inside the mesh silhouette: 0.9987-0.9997 at yaw 0 / 90 / 180; mean alpha
#   farther than FLOAT_MARGIN_PX outside it: <= 0.02 (the hair grown beyond the mesh stays close).
MIN_COVERAGE = 0.99
COVERAGE_VIEW_SIZE = 128  # px
FLOAT_MARGIN_PX = 8
MAX_FLOATING_ALPHA = 0.05
# Expressions: mean absolute pixel change inside the mouth / eye boxes, measured 0.14 (jawOpen) and
# 0.14 / 0.17 (blink, per eye); far from them (forehead box; mouth box for blink) it is ~2e-5.
MAX_BLINK_APERTURE_RATIO = 0.8  # detected lid gap with eyeBlink = 1 / open (measured 0.67-0.74; 0.95 before lid fix)
MIN_REGION_CHANGE = 0.03
MAX_FAR_CHANGE = 0.005
BOX_MARGIN_PX = 3  # landmark boxes are grown by this
JAW_DROP_PX = 12  # the mouth box is extended downwards by this (the chin moves down)


@pytest.fixture(scope="module")
def built(fast_build):
    return fast_build


def target_on_background(data, options) -> np.ndarray:
    m = data.person_mask[..., None]
    return data.target * m + np.asarray(options.background, np.float32) * (1 - m)


def landmark_box(avatar: Avatar, group: str, expression=None, grow_down: int = 0) -> tuple[slice, slice]:
    """Rows/cols of the crop-camera box around a MediaPipe landmark group on the avatar's mesh."""
    emb = avatar.head_model.landmarks["mediapipe478"]
    pts = emb.points(avatar.vertices(expression), torch.as_tensor(avatar.head_model.faces)).numpy()
    xy, _ = project_vertices(pts[list(mediapipe_groups()[group])], avatar.crop_camera)
    (x0, y0), (x1, y1) = np.floor(xy.min(0)).astype(int) - BOX_MARGIN_PX, np.ceil(xy.max(0)).astype(int) + BOX_MARGIN_PX
    return slice(max(y0, 0), y1 + grow_down), slice(max(x0, 0), x1)


def test_stages_are_reported_in_order(built):
    _, _, stages = built
    names = [s for s, _ in stages]
    assert [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n] == list(BUILD_STAGES)
    assert all(0.0 <= f <= 1.0 for _, f in stages) and stages[-1] == ("precompute", 1.0)


def test_input_view_matches_the_photo(built):
    avatar, data, _ = built
    assert data.face_mask.sum() > 2000  # the face covers a good part of the 192 px crop
    rgb = avatar.render().rgb.numpy()
    target = target_on_background(data, avatar.options)
    assert psnr(rgb, target, data.face_mask) >= MIN_FACE_PSNR_DB
    ssim = ssim_map(torch.as_tensor(rgb), torch.as_tensor(target))[torch.as_tensor(data.face_mask)].mean()
    assert float(ssim) >= MIN_FACE_SSIM
    # and the avatar is not simply the photo pasted everywhere: outside the person it shows the background
    far = data.person_mask < 0.01
    far[: avatar.options.render_size // 2] = False  # lower half only: away from hair
    assert np.abs(rgb[far] - np.asarray(avatar.options.background)).mean() < 0.05


def test_alpha_covers_the_head_silhouette(built):
    avatar, _, _ = built
    verts = avatar.vertices().numpy()
    for yaw in (0, 90, 180):
        cam = avatar.orbit_camera(yaw, size=COVERAGE_VIEW_SIZE)
        sil = render_mesh(verts, avatar.atlas.faces, cam).mask
        alpha = avatar.render(camera=cam).alpha.numpy()[..., 0]
        assert sil.sum() > 1000
        assert alpha[sil].mean() >= MIN_COVERAGE, yaw
        # nothing much floats off the head (its hair Gaussians stand off the mesh by design)
        assert alpha[~_grow(sil | hair_footprint(avatar, cam), FLOAT_MARGIN_PX)].mean() < MAX_FLOATING_ALPHA, yaw


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=r)


def test_expressions_move_the_mouth_and_eyes(built):
    avatar, _, _ = built
    neutral = avatar.render().rgb.numpy()
    far = landmark_box(avatar, "left_eyebrow")  # eyebrow box shifted up into the forehead / hair
    far = slice(max(far[0].start - 25, 0), max(far[0].start - 10, 1)), far[1]
    jaw_expr = avatar.expression_with(jawOpen=1.0)
    jaw = avatar.render(jaw_expr).rgb.numpy()
    mouth = landmark_box(avatar, "lips", grow_down=JAW_DROP_PX)
    assert np.abs(jaw - neutral)[mouth].mean() > MIN_REGION_CHANGE
    assert np.abs(jaw - neutral)[far].mean() < MAX_FAR_CHANGE
    blink = avatar.render(avatar.expression_with(eyeBlink_L=1.0, eyeBlink_R=1.0)).rgb.numpy()
    for eye in ("left_eye", "right_eye"):
        assert np.abs(blink - neutral)[landmark_box(avatar, eye)].mean() > MIN_REGION_CHANGE, eye
    assert np.abs(blink - neutral)[mouth].mean() < MAX_FAR_CHANGE


MARKER = (0.0, 1.0, 0.0)  # pure green: no skin, hair or photo colour comes near it
# Visible eyeball pixels with eyeBlink = 1, as a fraction of the open eye's: 0.077 on the fast astronaut (0.066 with
# the default preset), a sliver at the lash line. ICT's lash cards hid it, but as splats they also covered opened eyes.
MAX_EYEBALL_SHOWING_CLOSED = 0.1
MARKER_VIEW_SIZE = 384  # px, the input view rendered larger so the eyes span enough pixels
MIN_TEETH_PX = 40  # teeth pixels at jawOpen = 1 in that view (measured 82 on the fast astronaut; 0 with the jaw shut)


def marker_pixels(avatar: Avatar, regions: tuple[str, ...], expr) -> int:
    """Pixels of the input view where the texels of ``regions`` (painted MARKER) are what is seen."""
    maps = avatar.maps.detach()
    maps.color[torch.as_tensor(avatar.atlas.region_mask(*regions))] = torch.tensor(MARKER)
    painted = replace(avatar, maps=maps, rig=None)  # precompute runs again
    rgb = painted.render(expr, width=MARKER_VIEW_SIZE, height=MARKER_VIEW_SIZE).rgb.numpy()
    return int(((rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)).sum())


def test_blink_closes_the_eyes_and_jaw_open_shows_the_teeth(built):
    """Rendered pixels, not parameters: the closed lids hide the eyeballs; the open mouth shows teeth."""
    avatar, _, _ = built
    eyes = ("eyeball_left", "eyeball_right")
    open_px = marker_pixels(avatar, eyes, avatar.expression_with(eyeBlink_L=0.0, eyeBlink_R=0.0))
    closed_px = marker_pixels(avatar, eyes, avatar.expression_with(eyeBlink_L=1.0, eyeBlink_R=1.0))
    assert open_px > 50 and closed_px <= MAX_EYEBALL_SHOWING_CLOSED * open_px, (open_px, closed_px)
    shut_px = marker_pixels(avatar, ("teeth",), avatar.expression_with(jawOpen=0.0))
    teeth_px = marker_pixels(avatar, ("teeth",), avatar.expression_with(jawOpen=1.0))
    assert teeth_px >= MIN_TEETH_PX and teeth_px > shut_px, (teeth_px, shut_px)


def test_static_dynamic_split_matches_binding_the_posed_mesh(built, ict_model):
    avatar, _, _ = built
    names = avatar.atlas.region_names
    dyn = avatar.dynamic_mask
    for region in ("teeth", "mouth_interior", "eyeball_left", "eyeball_right"):
        assert dyn[avatar.atlas.region_mask(region)].all(), region
    top = avatar.atlas.texel_region == names.index("head_neck")
    assert (~dyn[top]).mean() > 0.5  # most of the scalp / neck / back is static
    assert 0.2 < dyn.mean() < 0.8
    rig = avatar.rig
    order = torch.cat([rig.static_index, rig.dynamic_index])
    pose = (torch.tensor([0.1, -0.4, 0.05]), torch.tensor([0.01, 0.0, -0.02]))
    buf = ict_model.torch_buffers()
    for expr, tol in ((avatar.expression, 1e-5), (avatar.expression_with(jawOpen=1.0), 1e-5)):
        g = avatar.animate(expr, pose)
        verts = avatar.vertices(expr)
        posed = apply_head_pose(verts, pose[0], pose[1], buf.pivot)
        maps = avatar.texel_maps(expr)  # the maps plus both decoders' residuals at this expression
        ref = bind(maps, avatar.atlas, posed)
        # Dynamic texels: exactly the bound posed mesh; static texels: rigid copies of the canonical ones,
        # exact at the fitted expression and within the dynamic threshold otherwise.
        nd = int(rig.dynamic_index.numel())
        assert torch.allclose(g.means[-nd:], ref.means[rig.dynamic_index], atol=tol)
        ns = int(rig.static_index.numel())  # the hair Gaussians (rig.num_hair) lie between the static and dynamic texels
        assert len(g) == ns + rig.num_hair + nd
        err = (g.means[:ns] - ref.means[rig.static_index]).norm(dim=1).max()
        limit = tol if expr is avatar.expression else 1.5 * avatar.options.dynamic_threshold_m
        assert err <= limit
        assert torch.equal(torch.cat([g.colors[:ns], g.colors[ns + rig.num_hair:]]), maps.color[order])


def test_render_views_batches_the_cameras_of_one_frame(built):
    """Orbit views, previews and the view bench render one frame from several cameras in one batch: on
    the CPU each view is exactly ``render`` at that camera; cameras of different sizes are refused."""
    avatar = built[0]
    yaws = (0.0, 45.0, -90.0)
    expr = avatar.expression_with(jawOpen=0.6)
    batch = avatar.render_views([avatar.orbit_camera(y, size=64) for y in yaws], expr)
    assert batch.rgb.shape == (3, 64, 64, 3) and batch.alpha.shape == (3, 64, 64, 1)
    for i, y in enumerate(yaws):
        assert torch.equal(batch.rgb[i], avatar.render(expr, camera=avatar.orbit_camera(y, size=64)).rgb), y
    views = avatar.orbit_views(yaws, size=64, expression=expr)
    assert len(views) == 3 and np.array_equal(views[1], batch.rgb[1].numpy())
    with pytest.raises(ValueError, match="one image size"):
        avatar.render_views([avatar.orbit_camera(0, size=64), avatar.orbit_camera(0, size=32)])


def test_animate_frames_is_animate_frame_by_frame(built):
    """A batch of frames with different expressions and head poses (the decoders' dynamic branch on): each
    frame's Gaussians are ``animate``'s at that frame, and ``render_frames`` (the CPU twin of one gsplat
    call per batch) gives ``render``'s images."""
    from sega.avatar.frames import render_frames

    avatar = built[0]
    rng = np.random.default_rng(3)
    e = avatar.head_model.num_expressions
    expr = np.clip(avatar.expression[None] + rng.uniform(0, 0.8, (3, e)) * (rng.random((3, e)) < 0.15), 0, 1).astype(np.float32)
    rot, trans = rng.normal(0, 0.2, (3, 3)).astype(np.float32), rng.normal(0, 0.01, (3, 3)).astype(np.float32)
    batch = avatar.animate_frames(expr, rot, trans)
    assert batch.means.shape == (3, avatar.num_gaussians, 3) and batch.opacities.shape == (3, avatar.num_gaussians)
    for f in range(3):
        one = avatar.animate(expr[f], (rot[f], trans[f]))
        for name, tol in (("means", 1e-6), ("quats", 1e-5), ("scales", 1e-7), ("opacities", 1e-6), ("colors", 1e-6)):
            assert torch.allclose(getattr(batch, name)[f], getattr(one, name), atol=tol), (f, name)
    assert not torch.allclose(batch.means[0], batch.means[1])
    canonical = avatar.animate_frames(expr[:1])
    assert torch.allclose(canonical.means[0], avatar.animate(expr[0]).means, atol=1e-6)
    cam = avatar.orbit_camera(15.0, size=48)
    images = render_frames(avatar, batch, cam)
    assert images.rgb.shape == (3, 48, 48, 3)
    assert (images.rgb[1] - avatar.render(expr[1], (rot[1], trans[1]), camera=cam).rgb).abs().max() < 1e-4
    with pytest.raises(ValueError, match="expressions"):
        avatar.animate_frames(expr[0])
    with pytest.raises(ValueError, match="rotations"):
        avatar.animate_frames(expr, rot[:2], trans)


def test_save_load_round_trip_renders_identically(built, ict_model, tmp_path):
    avatar, _, _ = built
    path = avatar.save(tmp_path / "avatar.npz")
    header = Avatar.read_header(path)
    assert header["options"] == json.loads(json.dumps(avatar.options.to_dict()))
    assert header["seed"] == 0 and header["head_model"]["name"] == "ict"
    assert "MIT" in header["head_model"]["licence"] and header["sega_version"]
    loaded = Avatar.load(path, ict_model)
    cam = avatar.orbit_camera(30, size=96)
    expr = avatar.expression_with(jawOpen=0.5)
    a = avatar.render(expr, (np.array([0.0, 0.2, 0.0]), np.zeros(3)), camera=cam)
    b = loaded.render(expr, (np.array([0.0, 0.2, 0.0]), np.zeros(3)), camera=cam)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)
    with np.load(path, allow_pickle=False) as z:  # readable without pickles
        assert "header_json" in z.files
    with pytest.raises(SegaError):
        Avatar.load(path, replace(ict_model, name="flame"))
    # the learned branches travel exactly (configs in the header, weights as arrays)
    assert header["format_version"] == AVATAR_FORMAT_VERSION and header["decoders"]["dynamic"]["map_resolution"] > 0
    assert header["provenance"]["displacement_vae"] == avatar.decoders.vae_provenance
    for name, arr in avatar.decoders.arrays().items():
        assert np.array_equal(arr, loaded.decoders.arrays()[name]), name


def test_old_avatar_format_is_rejected_clearly(built, ict_model, tmp_path):
    avatar, _, _ = built
    path = avatar.save(tmp_path / "avatar.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header_json"]).decode("utf-8"))
    header["format_version"] = 1
    arrays["header_json"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    with pytest.raises(SegaError, match="rebuild"):
        Avatar.load(old, ict_model)


# After personalisation the dynamic decoder's residuals (raw, unit-scale channels) stay small at
# expressions the photo never showed: measured max |offset| 0.17 mm, |log-scale| 0.13, |opacity logit|
# 0.17, |colour| 0.07 on the astronaut (fast preset, untrained stand-in expression encoder).
MAX_RESIDUAL_OFFSET_M = 0.002
MAX_RESIDUAL_LOG_SCALE = 0.5
MAX_RESIDUAL_OPACITY_LOGIT = 1.0
MAX_RESIDUAL_COLOR = 0.15


def test_decoder_residuals_are_finite_and_small(built):
    avatar, _, _ = built
    assert avatar.decoders is not None
    rng = np.random.default_rng(3)
    expr = torch.as_tensor(rng.uniform(0.0, 1.0, avatar.head_model.num_expressions), dtype=torch.float32)
    res = avatar.dynamic_residual_maps(expr)
    assert len(res) == int(avatar.dynamic_mask.sum())
    t = res.tensors()
    assert all(bool(torch.isfinite(v).all()) for v in t.values())
    assert float(t["offset"].norm(dim=1).max()) <= MAX_RESIDUAL_OFFSET_M
    assert float(t["log_scale"].abs().max()) <= MAX_RESIDUAL_LOG_SCALE
    assert float(t["opacity_logit"].abs().max()) <= MAX_RESIDUAL_OPACITY_LOGIT
    assert float(t["color"].abs().max()) <= MAX_RESIDUAL_COLOR
    assert float(t["color"].abs().max()) > 0.0  # personalisation did fit the decoder (it starts at exactly zero)
    static = avatar.decoders.static()
    assert bool(torch.isfinite(static).all()) and static.shape == (int(avatar.static_mask.sum()), 10)


def test_cli_build_is_deterministic_and_writes_outputs(built, ict_model, tmp_path):
    """A second fast build (through the CLI, same seed) gives the very same maps."""
    from PIL import Image

    from sega.cli import main

    avatar, _, _ = built
    out = tmp_path / "out"
    assert main(["build", "--example", "-o", str(out), "--preset", "fast", "--no-download", "--quiet", "--preview-size", "96"]) == 0
    again = Avatar.load(out / "avatar.npz", ict_model)
    for name, t in avatar.maps.tensors().items():
        assert torch.equal(t, again.maps.tensors()[name]), name
    for name, arr in avatar.decoders.arrays().items():
        assert np.array_equal(arr, again.decoders.arrays()[name]), name
    for name in ("fit.json", "previews.png", "turntable.mp4", "preview_yaw+0.png", "preview_jawopen.png", "preview_blink.png"):
        assert (out / name).stat().st_size > 0, name
    sheet = np.asarray(Image.open(out / "previews.png"))
    assert sheet.shape == (3 * 96, 3 * 96, 3)


# MediaPipe indices used to read expressions back from renders (inner lips: 13 upper / 14 lower;
# mouth corners 61 / 291).
MP_INNER_LIPS = (13, 14)
MP_MOUTH_CORNERS = (61, 291)
READBACK_SIZE = 512  # px: a frontal orbit view large enough for the detector


def test_expressions_read_back_by_the_landmark_detector(built, face_detector):
    """Landmarks detected on the rendered avatar: jawOpen parts the lips, mouthSmile lifts the mouth
    corners (relative to the lip centre), eyeBlink narrows the detected eye opening (the detector still
    reads the closed lids' lash line as a slit; the eyeball test above shows the lids do cover the eyes)."""
    avatar, _, _ = built
    cam = avatar.orbit_camera(0.0, size=READBACK_SIZE)

    def landmarks(expr):
        img = (avatar.render(expr, camera=cam).rgb.numpy().clip(0, 1) * 255).astype(np.uint8)
        return face_detector.detect(img).landmarks[:, :2]

    calm = landmarks(avatar.expression_with(mouthSmile_L=0.0, mouthSmile_R=0.0, jawOpen=0.0))
    iod = np.linalg.norm(calm[33] - calm[263])
    lip_gap = lambda p: p[MP_INNER_LIPS[1], 1] - p[MP_INNER_LIPS[0], 1]
    corner_lift = lambda p: p[list(MP_INNER_LIPS), 1].mean() - p[list(MP_MOUTH_CORNERS), 1].mean()

    jaw = landmarks(avatar.expression_with(jawOpen=1.0))
    assert lip_gap(jaw) - lip_gap(calm) > 0.15 * iod, (lip_gap(jaw), lip_gap(calm), iod)
    smile = landmarks(avatar.expression_with(mouthSmile_L=1.0, mouthSmile_R=1.0, jawOpen=0.0))
    # (0.022 IOD since the inner-lip landmarks sit on their lips and the astronaut's fit opens her grin; 0.03 before)
    assert corner_lift(smile) - corner_lift(calm) > 0.018 * iod, (corner_lift(smile), corner_lift(calm), iod)
    aperture = lambda p: (abs(p[159, 1] - p[145, 1]) + abs(p[386, 1] - p[374, 1])) / 2  # upper / lower lid midpoints
    shut = landmarks(avatar.expression_with(eyeBlink_L=1.0, eyeBlink_R=1.0))
    assert aperture(shut) <= MAX_BLINK_APERTURE_RATIO * aperture(calm), (aperture(shut), aperture(calm))


# Floaters (splats far off the head at expressions the photo did not show). Measured on the astronaut
# (fast preset), 200 random expressions: largest splat std-dev 0.088 head radii, mean alpha outside the
# grown silhouette 0.011. With the runaway decoder below: 0.13 radii and 0.019 (without the scale cap
# and the residual saturation: 263 radii and 0.999, the whole frame). Real portraits without them
# reached 1.3 head radii (hallo_6, jawOpen), dark splats across the frame.
MAX_SPLAT_HEAD_FRACTION = 0.2
MAX_OFF_HEAD_ALPHA = 0.02
MAX_OFF_HEAD_ALPHA_RUNAWAY = 0.04  # every residual pinned at its bound: a little more haze at the outline, no floaters
FLOATER_EXPRESSIONS = 200


def _random_expressions(avatar, n: int, seed: int) -> np.ndarray:
    from sega.nets.vae import sample_expressions

    return sample_expressions(n, avatar.decoders.encoder.config, torch.Generator().manual_seed(seed)).numpy()


def test_no_floaters_at_random_expressions(built):
    from sega.metrics import floater_report

    avatar, _, _ = built
    report = floater_report(avatar, _random_expressions(avatar, FLOATER_EXPRESSIONS, seed=7), renders=6)
    assert report["max_scale_head_fraction"] <= MAX_SPLAT_HEAD_FRACTION, report
    assert report["alpha_outside_max_mean"] <= MAX_OFF_HEAD_ALPHA, report


def test_a_runaway_dynamic_decoder_cannot_make_floaters(built, ict_model, tmp_path):
    """Even a decoder whose residuals are huge at every expression (as fitted decoders were at unseen
    ones) leaves every splat within its texel's scale cap (grown at most ``max_stretch`` times with its
    triangle) and near the head: the residuals saturate and binding caps the scales (torch and the exported
    graph alike)."""
    from sega.metrics import floater_report

    avatar, _, _ = built
    path = avatar.save(tmp_path / "a.npz")
    wild = Avatar.load(path, ict_model)
    head = wild.decoders.dynamic.trunk.head
    with torch.no_grad():  # raw units: +80 log-scale units (x e^8 unbounded), 50 mm offsets, +20 opacity logits
        head.bias[0:3] += 50.0
        head.bias[3:6] += 80.0
        head.bias[6] += 20.0
    report = floater_report(wild, _random_expressions(wild, 40, seed=8), renders=3)
    assert report["max_scale_head_fraction"] <= MAX_SPLAT_HEAD_FRACTION, report
    assert report["alpha_outside_max_mean"] <= MAX_OFF_HEAD_ALPHA_RUNAWAY, report
    rig = wild.rig
    cap = torch.exp(rig.dynamic_scale_cap)
    g = wild.animate(wild.expression_with(jawOpen=1.0))
    grown = g.scales[len(rig.static):] / cap
    assert bool((grown <= rig.max_stretch * (1 + 1e-5)).all()) and rig.max_stretch == wild.options.max_stretch > 1.0
    still = ~torch.isin(torch.arange(len(rig.texel_face)), torch.arange(rig.num_moving))  # never-moving texels never grow
    assert bool((grown[still] <= 1 + 1e-5).all()) and float(grown.max()) > 1.05  # the jaw stretches some triangles


def _open_eye_masks(avatar: Avatar) -> dict[str, np.ndarray]:
    """{side: [H, W] bool}: the input view's pixels inside each open eye's contour (MediaPipe's, on the fitted mesh)."""
    from sega.face_measures import EYE_CONTOURS
    from sega.imaging import polygon_mask

    cam = avatar.crop_camera
    pts = avatar.head_model.landmarks["mediapipe478"].points(avatar.vertices(), torch.as_tensor(avatar.head_model.faces)).numpy()
    xy, _ = project_vertices(pts, cam)
    return {side: polygon_mask(xy[list(EYE_CONTOURS[side])], cam.height, cam.width) for side in ("left", "right")}


def _open_eye_mask(avatar: Avatar) -> np.ndarray:
    """[H, W] bool: the input view's pixels inside the open eyes' contours (``_open_eye_masks``, both eyes)."""
    masks = _open_eye_masks(avatar)
    return masks["left"] | masks["right"]


def _eyeball_share(avatar: Avatar, blink: float) -> float:
    """How much of the open eye's pixels (MediaPipe's eye contours on the mesh, input view) the eyeball's splats
    make at eyeBlink ``blink``: the mean difference between renders with them white and black."""
    from sega.render import render

    rig, cam = avatar.rig, avatar.crop_camera
    texel = torch.cat([rig.static_index, torch.full((rig.num_hair,), -1), rig.dynamic_index])
    eyeball = torch.as_tensor(avatar.atlas.region_mask("eyeball_left", "eyeball_right"))[texel.clamp_min(0)] & (texel >= 0)
    g = avatar.animate(avatar.expression_with(eyeBlink_L=blink, eyeBlink_R=blink))
    k, view = cam.torch(torch.float32)
    bg = torch.as_tensor(avatar.options.background, dtype=torch.float32)
    shades = [render(g.means, g.quats, g.scales, g.opacities, torch.where(eyeball[:, None], torch.full_like(g.colors, c), g.colors), k,
                     view, cam.width, cam.height, bg).rgb.numpy() for c in (0.0, 1.0)]  # fmt: skip
    return float(np.abs(shades[1] - shades[0]).mean(-1)[_open_eye_mask(avatar)].mean())


def test_a_blink_hides_the_eyeball(built):
    """The lids' splats grow with their stretching triangles (``AvatarOptions.max_stretch``), so a closed eye is
    lid, not eyeball seen through gaps. The test avatar's eyeball makes 0.71 of its open eyes' pixels, and of its
    closed eyes' 0.27 with splats of fixed size, 0.076 grown (a real clip's, retalking_4: 0.83, 0.38, 0.12)."""
    avatar = built[0]
    fixed = copy.copy(avatar)
    fixed.options = replace(avatar.options, max_stretch=1.0)
    fixed.precompute()
    open_share = _eyeball_share(avatar, 0.0)
    closed, closed_fixed = _eyeball_share(avatar, 1.0), _eyeball_share(fixed, 1.0)
    assert open_share > 0.5, open_share  # the open eye is eyeball
    assert closed < 0.2 * open_share and closed < 0.6 * closed_fixed, (open_share, closed, closed_fixed)
    assert _eyeball_share(fixed, 0.0) == pytest.approx(open_share, abs=1e-6)  # the photo's expression is untouched


def _closed_eye_pixels(avatar: Avatar, blink: float) -> np.ndarray:
    """[P, 3] the input view's pixels inside the open eyes' contours (MediaPipe's, on the fitted mesh) at eyeBlink ``blink``."""
    return avatar.render(avatar.expression_with(eyeBlink_L=blink, eyeBlink_R=blink)).rgb.numpy()[_open_eye_mask(avatar)]


def test_a_closed_lid_shows_lid_skin_and_a_lash_line(built, face_detector, monkeypatch):
    """As the eyes close, the lids' texels move to lid skin (``sega.avatar.lids``): the lash line and dark eye
    corners the photo sees at the lid margins no longer spread into a dark band over the closed eye, the margin
    where the lids meet takes the lash colour, and late in the blink the eyeballs take the skin colour too, so
    that the closed eye reads closed. The fitted expression renders exactly as without it, and
    ``animate_frames`` and ``animate`` agree at blinks. Measured on the test avatar: dark pixels (below 0.6 of
    the closed eye's median value) 0.252 of the closed eye without, 0.000 with; MediaPipe's larger lid gap on
    the closed eyes 0.089 IOD without, 0.078 with skin but no lash line, 0.023 with both (six dev avatars'
    mean lid gap: 0.041 with the single lid colour before ``closed_skin_field``, 0.030 now)."""
    import sega.avatar.lids as lids
    from sega.eval_frame import measure_image

    avatar = built[0]
    closing = avatar.rig.lid_closing
    assert isinstance(closing, lids.LidClosing) and bool((closing.color != 0).any(1).sum() > 20)
    plain = copy.copy(avatar)
    plain.options = replace(avatar.options, closing_lid_skin=False)
    plain.precompute()
    assert plain.rig.lid_closing is None
    assert torch.equal(avatar.animate().colors, plain.animate().colors)  # the photo's expression is untouched

    def dark_share(a: Avatar) -> float:
        px = _closed_eye_pixels(a, 1.0).max(1)
        return float((px < 0.6 * np.median(px)).mean())

    with_skin, without = dark_share(avatar), dark_share(plain)
    print(f"closed-eye dark share: {without:.3f} without, {with_skin:.3f} with")
    assert with_skin < 0.6 * without, (with_skin, without)

    def lid_gap(a: Avatar) -> float:  # MediaPipe's larger eye opening (IOD) on the input view at eyeBlink 1
        rgb = a.render(a.expression_with(eyeBlink_L=1.0, eyeBlink_R=1.0), camera=a.camera).rgb.numpy()
        m = measure_image((rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8), face_detector).measures
        return max(m["eye_opening_left"], m["eye_opening_right"])

    monkeypatch.setattr(lids, "LASH_TRAVEL_FRACTION", 2.0)  # no texel travels that far: lid skin, no lash line
    bare = copy.copy(avatar)
    bare.precompute()
    gaps = {"without": lid_gap(plain), "skin only": lid_gap(bare), "skin and lash line": lid_gap(avatar)}
    print("closed-eye lid gap (IOD):", {k: round(v, 3) for k, v in gaps.items()})
    assert gaps["skin and lash line"] < 0.5 * min(gaps["without"], gaps["skin only"]), gaps

    # Half-way: the lids' change scaled by 0.5 / LID_COLOUR_FULL and none of the eyeballs' (they start at
    # EYEBALL_CLOSING_ONSET); the fitted blink weight is where it starts; clamped past 1.
    e = avatar.expression_with(eyeBlink_L=1.0, eyeBlink_R=1.0)
    full = closing.colour_change(torch.as_tensor(e))
    fitted = closing.fitted.numpy()
    half = e.copy()
    half[closing.columns.numpy()] = (fitted + 1.0) / 2
    late = closing.onset > 0
    changed = (closing.color != 0).any(1)
    assert bool((late & changed).sum() > 20) and bool((~late & changed).sum() > 20)  # eyeballs and lids both change
    assert torch.allclose(closing.onset[late], torch.tensor(lids.EYEBALL_CLOSING_ONSET))
    dynamic = avatar.rig.dynamic_index.cpu().numpy()
    for k, ball in enumerate(lids.EYEBALL_REGIONS):  # each eyeball closes with its own eye's blink (eyeBlink_L, _R)
        on = torch.as_tensor(avatar.atlas.region_mask(ball)[dynamic])
        assert bool(on.any()) and bool((late[on] & (closing.eye[on] == k)).all()), ball
    at_half = closing.colour_change(torch.as_tensor(half))
    assert torch.allclose(at_half[~late], full[~late] * min(0.5 / lids.LID_COLOUR_FULL, 1.0), atol=1e-6)
    assert float(at_half[late].abs().max()) == 0.0 and float(full[late].abs().max()) > 0.1
    closed = avatar.texel_maps().color[avatar.rig.dynamic_index] + closing.color  # the closed colours (the fitted
    # ones are unbounded where the photo never showed the texel: the eyeballs behind the lids)
    assert -0.1 <= float(closed[changed].min()) and float(closed[changed].max()) <= 1.0
    assert float(full.abs().max()) > 0.05  # more than a shading change somewhere on the lids

    frames = np.stack([avatar.expression, half, e]).astype(np.float32)
    batch = avatar.animate_frames(frames)
    for f in range(3):
        assert torch.allclose(batch.colors[f], avatar.animate(frames[f]).colors, atol=1e-6), f


def test_a_closed_lid_continues_the_skin_around_it(built):
    """The closed lids' skin is the skin around the eye continued over them (``closed_skin_field``), not one colour
    for the whole lid: a closed eye must not show as an oval darker than the skin around it (MediaPipe read such
    an oval as an open eye). Input view at eyeBlink 1: the median brightness inside each open eye's contour against
    a band of skin around it. Measured on the test avatar: 0.915 / 0.923 of the band's with the single lid colour
    (the ring's median mixed with the lid's own least-moved texels), 0.979 / 0.995 with the field."""
    from scipy.ndimage import binary_dilation

    avatar = built[0]
    value = avatar.render(avatar.expression_with(eyeBlink_L=1.0, eyeBlink_R=1.0)).rgb.numpy().max(2)
    ratios = []
    for eye in _open_eye_masks(avatar).values():
        band_px = max(2, int(round(0.5 * np.sqrt(eye.sum()))))  # about a third of the eye's height around it
        band = binary_dilation(eye, iterations=band_px) & ~eye
        ratios.append(float(np.median(value[eye]) / np.median(value[band])))
    print("closed lid / skin around it (median brightness):", [round(r, 3) for r in ratios])
    assert all(r > 0.95 for r in ratios), ratios


def test_eyes_and_mouth_appear_only_where_they_open(built):
    """The astronaut smiles with her teeth showing: closing her mouth shows lips, not a white band of
    teeth colour painted on them; opening it wide shows teeth; the eyes show sclera and a dark iris."""
    from sega.face_measures import EYE_CONTOURS, TEETH_SHOWN_FRACTION, teeth_fraction
    from sega.imaging import polygon_mask

    avatar, _, _ = built
    names = avatar.head_model.expression_names
    closed = avatar.expression.copy()
    closed[[i for i, n in enumerate(names) if n.startswith(("jaw", "mouth"))]] = 0.0
    cam = avatar.orbit_camera(0, size=512)
    for expr, want_teeth in ((closed, False), (avatar.expression_with(jawOpen=1.0), True)):
        rgb = (avatar.render(expr, camera=cam).rgb.numpy().clip(0, 1) * 255).astype(np.uint8)
        from sega.face import FaceDetector

        with FaceDetector(require_human=False) as det:
            lm = det.detect(rgb).landmarks
        f = teeth_fraction(rgb, lm)
        # "Teeth shown" as the eval judges it (0.15 of the inner-lip polygon teeth-like). Measured: 0.27 opened
        # (the wide-open mouth is mostly dark interior below the upper teeth), 0.0 closed.
        if want_teeth:
            assert f is not None and f >= TEETH_SHOWN_FRACTION, f
        else:
            assert f is None or f < TEETH_SHOWN_FRACTION, f
        if not want_teeth:  # eyes open: bright sclera beside a dark iris inside each eye opening
            for side in ("left", "right"):
                px = rgb[polygon_mask(lm[list(EYE_CONTOURS[side]), :2], 512, 512)].astype(np.float32) / 255
                v = px.max(1)
                assert np.percentile(v, 90) - np.percentile(v, 10) > 0.3, side


DEV_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "dev-media"


@pytest.mark.parametrize(
    "name, closed",
    [("videos/echomimic_a.mp4", True),  # closed mouth, glossy lower lip (its highlight is as bright and grey as teeth)
     ("photos/hallo_1.jpg", True),  # closed smile: MediaPipe's inner contour runs over the lower lip
     ("photos/xportrait_source.png", True),
     ("videos/xportrait_driving.mp4", False)],  # a grin showing teeth
)  # fmt: skip
def test_photo_mouth_opening_is_what_is_not_lips(face_detector, name, closed):
    """The photo's mouth opening (where teeth texels take the photo's colour and lip texels do not) covers
    a grin's teeth but not a closed mouth's lips. Measured (IOD^2): 0.0016, 0.0003, 0.0033 closed (the
    inner-lip polygons: 0.003, 0.019, 0.033; with the highlight taken as teeth echomimic_a had ~0.027), 0.031 the grin."""
    from sega.avatar.build.init import photo_masks
    from sega.face_measures import interocular
    from sega.video import read_frames

    frame = read_frames(DEV_MEDIA / name).frames[0]
    lm = face_detector.detect(frame).landmarks
    area = photo_masks(lm, frame.shape[:2], frame.astype(np.float32) / 255.0)["mouth"].sum() / interocular(lm) ** 2
    if closed:
        assert area <= 0.006, area
    else:
        assert area >= 0.025, area


def test_a_squinting_photos_eyes_are_found_closing(ict_model):
    """The photo of the dev set's grin (``xportrait_driving`` frame 0) squints both eyes (lid gaps 0.016 and 0.041
    IOD): the texels about both eyes are a closing eye's (``closing_eye_texels``), whose lids and painted
    eyeball keep the geometry of the initialisation (fitted, they grew over the eyeball and the driven eye
    stayed shut). The astronaut's open eyes have none."""
    from sega.avatar.build import atlas_regions
    from sega.avatar.build.init import closing_eye_texels
    from sega.face import FaceDetector
    from sega.fit import FitOptions, fit_landmarks
    from sega.uv import Atlas
    from sega.video import read_frames
    from skimage import data

    atlas = Atlas.build(ict_model, 128, regions=atlas_regions(ict_model))
    buf = ict_model.torch_buffers()
    eyes = atlas.region_mask("eyeball_left", "eyeball_right")
    found = []
    for frame in (read_frames(DEV_MEDIA / "videos" / "xportrait_driving.mp4").frames[0], data.astronaut()):
        with FaceDetector() as det:
            lm = det.detect(frame).landmarks
        fit = fit_landmarks(ict_model, lm, frame.shape[:2], FitOptions.preset("fast"))
        with torch.no_grad():
            verts = ict_model.deform(buf, torch.as_tensor(fit.identity), torch.as_tensor(fit.expression))
        points = atlas.texel_points(verts).numpy().astype(np.float64)
        found.append(closing_eye_texels(atlas, points, fit.camera, lm))
    assert found[0][eyes].all() and not found[1].any()


def test_a_squinting_photos_lid_splats_leave_the_open_eye_open(ict_model):
    """A closing eye's lid splats are sized for the open eye times LID_SPLAT_GROWTH, so the lid still hides the
    eyeball once stretched shut, but capped near the lash line (``lid_margin_spacing``): on the open template,
    rendered dark over white eyeballs, the capped lids cover under a third of the eye opening (MediaPipe's
    eye contours) and under half what the uncapped ones cover (54%: the driven eye looked half shut)."""
    from sega.avatar.build import atlas_regions
    from sega.avatar.build.init import LID_MOVE_M, LID_SPLAT_GROWTH, lid_margin_spacing
    from sega.avatar.options import AvatarOptions
    from sega.avatar.texels import blink_texels, region_mask, texel_spacing
    from sega.camera import look_at_camera, project_points
    from sega.face_measures import EYE_CONTOURS
    from sega.fit import LANDMARK_SET, surface_rows
    from sega.imaging import polygon_mask
    from sega.render import render
    from sega.synthetic import FACE_CENTRE
    from sega.uv import Atlas

    atlas = Atlas.build(ict_model, AvatarOptions().atlas_resolution, regions=atlas_regions(ict_model))
    verts = np.asarray(ict_model.vertices, np.float64)
    lids, eyes = blink_texels(ict_model, atlas, LID_MOVE_M), region_mask(atlas, "eyeball_left", "eyeball_right")
    spacing = texel_spacing(atlas, verts)
    grown = LID_SPLAT_GROWTH * spacing
    capped = np.minimum(grown, lid_margin_spacing(ict_model, atlas, verts))
    size = 256
    cam = look_at_camera(FACE_CENTRE + [0.0, 0.0, 0.4], FACE_CENTRE, [0.0, -1.0, 0.0], 30.0, size, size)
    K, V = cam.torch()
    contours = surface_rows(ict_model, ict_model.landmarks[LANDMARK_SET], verts)
    opening = np.zeros((size, size), bool)
    for side in ("left", "right"):
        uv, _ = project_points(contours[list(EYE_CONTOURS[side])], K, V)
        opening |= polygon_mask(uv.numpy(), size, size)
    sel = lids | eyes
    means = atlas.texel_points(torch.as_tensor(verts, dtype=torch.float32))[torch.as_tensor(sel)]
    n = int(sel.sum())
    colors = torch.as_tensor(eyes[sel], dtype=torch.float32)[:, None].repeat(1, 3)  # lids black, eyeballs white
    covered = []
    for lid_spacing in (grown, capped):
        sigma = AvatarOptions().init_scale_texels * np.where(lids, lid_spacing, spacing)[sel]
        out = render(means, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), torch.as_tensor(sigma, dtype=torch.float32)[:, None].repeat(1, 3),
                     torch.full((n,), 0.95), colors, K, V, size, size, torch.zeros(3))  # fmt: skip
        covered.append(float((out.rgb[..., 0].numpy()[opening] < 0.5).mean()))
    assert opening.sum() > 200, opening.sum()
    assert covered[1] <= 0.3 and covered[1] <= 0.5 * covered[0], covered


def test_decoder_residuals_spare_what_the_init_fixed():
    """``_residual_keep``: the decoders' geometry channels are dropped where the geometry is fixed, their
    appearance channels where the appearance is locked, and nothing else."""
    from sega.avatar.build.optimise import _residual_keep
    from sega.nets.decoders import ATTRIBUTES

    appearance = torch.tensor([True, False, False])
    geometry = torch.tensor([False, True, False])
    keep = _residual_keep(appearance, geometry)
    names = [n for n, w in ATTRIBUTES for _ in range(w)]
    geo_cols = [i for i, n in enumerate(names) if n in ("offset", "log_scale")]
    app_cols = [i for i, n in enumerate(names) if n not in ("offset", "log_scale")]
    assert keep.shape == (3, len(names))
    assert (keep[0, geo_cols] == 1).all() and (keep[0, app_cols] == 0).all()
    assert (keep[1, geo_cols] == 0).all() and (keep[1, app_cols] == 1).all()
    assert (keep[2] == 1).all()


def test_a_squinting_eye_shows_the_photo_no_eyeball():
    """``photo_masks``: an eye whose lids are closer than ``MIN_SEEN_EYE_GAP`` has no opening (its slit is
    lashes and lid shadow, and the eyeball texels there are painted instead); an open one has."""
    from sega.avatar.build.init import MIN_SEEN_EYE_GAP, photo_masks
    from sega.face_measures import EYE_CONTOURS, LID_LOWER, LID_UPPER, interocular

    lm = np.zeros((478, 2))
    lm[EYE_CONTOURS["left"], :] = np.array([[300 + 30 * np.cos(a), 200 + 12 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, len(EYE_CONTOURS["left"]), endpoint=False)])
    lm[EYE_CONTOURS["right"], :] = lm[EYE_CONTOURS["left"], :] - [100, 0]
    iod = interocular(lm)
    for side, gap in (("left", 0.5 * MIN_SEEN_EYE_GAP), ("right", 2.0 * MIN_SEEN_EYE_GAP)):
        mid = lm[LID_LOWER[side]]
        lm[LID_UPPER[side]] = mid - [0, gap * iod]
    eyes = photo_masks(lm, (400, 400))["eyes"]
    assert not eyes[:, 250:].any() and eyes[:, :250].any()
