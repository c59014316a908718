"""Driving an avatar from a video and measuring fidelity (``sega.track``, ``sega.drive``, ``sega.evaluate``).

Synthetic driving videos with known ground truth: renders of the astronaut avatar (fast preset) with
known expressions and head poses (self-reenactment), and a painted ICT head of another identity with
a resting smile (cross-identity). Figures are printed with ``-s``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from sega.cli import main
from sega.drive import DriveOptions, drive_frames, retarget
from sega.errors import FaceNotFoundError
from sega.eval_frame import rotation_angle_deg, yaw_change_deg
from sega.evaluate import SAME_PERSON_DISTANCE, EvalOptions, evaluate_frames, look_of, write_report
from sega.smoothing import one_euro
from sega.synthetic import paint, render_painted_head
from sega.track import ExpressionPoseSolver, TrackOptions, track_landmarks
from sega.video import Frames, VideoError, read_frames, write_video

pytestmark = pytest.mark.slow

NUM_FRAMES = 20
FPS = 25.0
MAX_YAW_DEG, MAX_PITCH_DEG = 25.0, 15.0
MAX_WEIGHT_MAE = 0.10  # issue target
# Issue 8's target was 2.0, measured 1.65. Since the eyes were remade (eyeballs turn with eyeLook*, painted eyes
# where the photo shows none, no lash-card splats) these renders give 2.07-2.15 (not the tracker: its gaze and iris
# settings leave it within 0.03 degrees, and the split inner lips 0.06); the held-out real clips are what issue 16
# measures (bench.bench_fidelity). The hair volume (issue 17: Gaussians around the face beyond the head mesh)
# adds ~0.08 (2.25 with it, 2.17 without, same build). The shaded inner lips (a slightly opened mouth shows its
# dark gap, as real ones do) move MediaPipe's lip points on these renders: 2.39 (on the real clips the pose error
# did not grow: echomimic_a 1.02 degrees against 1.09). Taking the backdrop colour inside letterbox bars and
# without the person (person_regions.border_colour) moved the test avatar's hair edge: 2.44 -> 2.451. The hair's
# outline pulled in to the photo's (hair.HAIR_OUTLINE_REACH_SIGMAS: it spilled 1-4 px past it) moves MediaPipe's
# readings of these renders again: 2.45 -> 2.53 (2.45 with the inset off, same code). Splats growing with their
# stretched triangles (AvatarOptions.max_stretch: a blink now hides the eyeball) change them once more: 2.53 -> 2.64
# (2.53 with max_stretch 1, 2.63 at 2, same code; on the real clips bench_fidelity measures the pose error). Kept
# close (0.05 above the measured figure) so that a further slip shows.
MAX_POSE_ERROR_DEG = 2.69
MIN_EVAL_PSNR_DB = 35.0  # issue target, in the head mask
MAX_YAW_ERROR_DEG = 3.0  # tracked yaw change from the source frame against the known one
MAX_JITTER_STD = 0.02  # issue target, smoothed weights of a still face with 1 px landmark noise


def known_motion(model, rest: np.ndarray, n: int = NUM_FRAMES):
    """Expressions (rest + jaw, brows, a 3-frame blink) and head poses (yaw/pitch within the limits; frame 0 at rest)."""
    exprs, poses = [], []
    for t in range(n):
        e = rest.copy()
        s = math.sin(2 * math.pi * t / n)
        e[model.expression_index("jawOpen")] = max(0.0, s) * 0.8
        blink = 1.0 if 12 <= t <= 14 else 0.0
        e[model.expression_index("eyeBlink_L")] = e[model.expression_index("eyeBlink_R")] = blink
        e[model.expression_index("browInnerUp_L")] = e[model.expression_index("browInnerUp_R")] = max(0.0, -s) * 0.7
        yaw = math.radians(MAX_YAW_DEG) * math.sin(2 * math.pi * t / n)
        pitch = math.radians(MAX_PITCH_DEG) * math.sin(4 * math.pi * t / n)
        exprs.append(np.clip(e, 0, 1).astype(np.float32))
        poses.append(np.array([pitch, yaw, 0, 0, 0, 0], np.float32))
    return np.stack(exprs), np.stack(poses)


@pytest.fixture(scope="module")
def avatar(fast_build):
    return fast_build[0]


@pytest.fixture(scope="module")
def self_video(avatar):
    """Renders of the avatar itself at its photo camera: (Frames, expressions [T, E], poses [T, 6])."""
    exprs, poses = known_motion(avatar.head_model, avatar.expression.astype(np.float32))
    frames = [(avatar.render(e, (p[:3], p[3:]), camera=avatar.camera).rgb.numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)
              for e, p in zip(exprs, poses)]  # fmt: skip
    return Frames(frames, FPS, "synthetic avatar renders", "video"), exprs, poses


def test_drive_recovers_known_expressions_and_head_poses(ict_model, face_detector, self_video, record_property):
    frames, exprs, poses = self_video
    result = drive_frames(frames, ict_model, face_detector, replace(DriveOptions(), smooth=False, remove_neutral=False))
    assert result.missing == []
    mae = float(np.abs(result.expressions - exprs).mean())
    pose_err = float(np.mean([rotation_angle_deg(p[:3], q[:3]) for p, q in zip(result.head_poses, poses)]))
    print(f"\ndrive on {len(exprs)} avatar renders (yaw +-{MAX_YAW_DEG:.0f}, pitch +-{MAX_PITCH_DEG:.0f} deg): "
          f"weight MAE {mae:.4f}, pose error {pose_err:.2f} deg")  # fmt: skip
    record_property("drive_weight_mae", mae)
    record_property("drive_pose_error_deg", pose_err)
    assert mae <= MAX_WEIGHT_MAE
    assert pose_err <= MAX_POSE_ERROR_DEG
    jaw = ict_model.expression_index("jawOpen")
    assert np.corrcoef(result.expressions[:, jaw], exprs[:, jaw])[0, 1] > 0.8, "jawOpen follows the video"


def test_eval_of_the_avatar_against_its_own_renders(ict_model, face_detector, self_video, avatar, tmp_path, record_property):
    frames, _, _ = self_video
    report = evaluate_frames(frames, ict_model, face_detector, EvalOptions(every=5), avatar=avatar)
    o = report["overall"]
    print(f"\neval on own renders: PSNR {o['psnr_db']['mean']:.2f} dB, SSIM {o['ssim']['mean']:.3f}, L1 {o['l1']['mean']:.4f}, "
          f"expression error {o['expression_error']['mean']:.4f}, pose error {o['pose_error_deg']['mean']:.2f} deg")  # fmt: skip
    record_property("eval_psnr_db", o["psnr_db"]["mean"])
    assert report["scored_frames"] == 3
    assert o["psnr_db"]["mean"] >= MIN_EVAL_PSNR_DB and o["ssim"]["mean"] > 0.8
    # The same person: dlib's distance between the render and its target (the [eval] models are installed in CI).
    assert report["identity_note"] is None and o["identity_distance"]["max"] < SAME_PERSON_DISTANCE
    assert -1.0 <= o["identity_similarity"]["min"] <= o["identity_similarity"]["max"] <= 1.0
    # The frozen baseline (source expression, same pose) is scored on the same frames; on these renders,
    # which move the jaw and lids, driving is what matches them.
    f, g = report["frozen"], report["gain"]
    assert set(f) >= {"psnr_db", "mouth_psnr_db", "eye_psnr_db", "mouth_opening_error", "eye_opening_error", "gaze_error"}
    assert g["mouth_psnr_db"] > 0 and o["mouth_opening_error"]["mean"] < f["mouth_opening_error"]["mean"]
    assert 0.0 <= report["teeth"]["agreement"] <= 1.0 and report["eyes_closed_wrongly"]["count"] == 0
    # Two readings of a clean render (static detection, tracker's video landmarks) agree closely, and far more
    # closely than the frozen render does with its target on a moving jaw.
    reread = report["target_reread"]
    assert 0.0 <= reread["gaze_error"]["mean"] < 0.05 and reread["mouth_opening_error"]["max"] < 0.5 * f["mouth_opening_error"]["mean"]
    # The tracked yaw change from the source frame follows the known one; "turned" scores the furthest-turned frames.
    _, _, poses = self_video
    for e in report["per_frame"]:
        known = yaw_change_deg(poses[e["frame"]][:3], poses[0][:3])
        assert abs(e["yaw_from_source_deg"] - known) < MAX_YAW_ERROR_DEG, (e["frame"], e["yaw_from_source_deg"], known)
    turned = report["turned"]
    assert len(turned["frames"]) == 1 and turned["min_abs_yaw_deg"] == max(abs(e["yaw_from_source_deg"]) for e in report["per_frame"])
    assert turned["psnr_db"] >= MIN_EVAL_PSNR_DB - 3.0
    frame = next(e for e in report["per_frame"] if "psnr_db" in e)
    assert {"mouth_psnr_db", "eye_ssim", "gaze_error", "teeth_target", "teeth_render", "frozen", "target_measures", "look"} <= set(frame)
    # The look per frame, tracked and scored: the renders keep the avatar's own look (eyes fixed in the head), and the
    # tracker reads it within a look of 0.3 (about 9 degrees sideways) on every scored frame.
    rest = look_of(avatar.expression, avatar.head_model.expression_names)
    for e in (e for e in report["per_frame"] if "look" in e):
        assert len(e["look"]["tracked"]) == len(e["look"]["scored"]) == 2
        assert max(abs(a - b) for a, b in zip(e["look"]["tracked"], rest)) < 0.3, (e["frame"], e["look"], rest)
    path = write_report(report, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<polyline") >= 7 and "data:image/png;base64," in page  # the curves and the sheet, inline
    sheet = Image.open(tmp_path / "report" / "contact_sheet.png")
    rows = len(report["_images"][:4])
    assert path.is_file() and sheet.width == 4 * (sheet.height // rows) * frames.frames[0].shape[1] // frames.frames[0].shape[0]  # 4 tiles a row


def test_refinement_cull_leaves_the_compared_pixels_as_they_are(avatar):
    """The refinement renders only Gaussians whose footprint box touches the (grown) loss mask
    (``sega.evaluate._boxes_touch``): on the avatar's own view, the pixels inside the mask and the
    gradients that reach the kept Gaussians are those of a render of all of them."""
    from sega.evaluate import _boxes_touch
    from sega.imaging import polygon_mask
    from sega.render import render
    from sega.render.projection import project_gaussians

    g = avatar.animate()
    size = 96
    cam = avatar.camera
    s = size / max(cam.width, cam.height)
    K = torch.tensor(np.diag([s, s, 1.0]) @ cam.K, dtype=torch.float32)
    V = torch.tensor(cam.viewmat, dtype=torch.float32)
    bg = torch.ones(3)
    mask = polygon_mask(np.array([[30.0, 20.0], [70.0, 25.0], [60.0, 80.0], [35.0, 70.0]]), size, size)
    proj = project_gaussians(g.means, g.quats, g.scales, K, V, size, size, opacities=g.opacities)
    keep = torch.nonzero(torch.as_tensor(_boxes_touch(mask, proj.means2d.numpy(), proj.radii.numpy()))).squeeze(1)
    assert 0 < len(keep) < int(proj.valid.sum())  # the mask leaves some visible Gaussians out
    m = torch.as_tensor(mask)

    def masked_loss(sub):
        colors = g.colors[sub].clone().requires_grad_(True)
        out = render(g.means[sub], g.quats[sub], g.scales[sub], g.opacities[sub], colors, K, V, size, size, bg)
        loss = out.rgb[m].sum()
        loss.backward()
        return out.rgb[m].detach(), colors.grad

    everything = torch.arange(len(g))
    full_rgb, full_grad = masked_loss(everything)
    kept_rgb, kept_grad = masked_loss(keep)
    assert torch.allclose(full_rgb, kept_rgb, atol=1e-6)
    assert torch.allclose(full_grad[keep], kept_grad, atol=1e-6)
    dropped = torch.ones(len(g), dtype=torch.bool)
    dropped[keep] = False
    assert float(full_grad[dropped].abs().max()) == 0.0  # what the cull drops took no part in the loss


def test_refinement_leaves_the_lids_as_tracked(avatar, face_detector):
    """``refine_photometric`` moves the driving signal towards the frame's pixels, except the lid channels
    (``REFINE_FROZEN_CHANNELS``): a render with the jaw and one lid moved, refined from the rest expression,
    gains jaw while the lids stay exactly where the tracker put them."""
    from sega.evaluate import REFINE_FROZEN_CHANNELS, refine_photometric

    names = list(avatar.head_model.expression_names)
    rest = np.asarray(avatar.expression, np.float32)
    moved = rest.copy()
    moved[names.index("jawOpen")] += 0.4
    moved[names.index("eyeBlink_L")] = 0.8
    pose = np.zeros(6, np.float32)  # the photo's own view (as the renders of ``self_video``)
    frame = (avatar.render(moved, (pose[:3], pose[3:]), camera=avatar.camera).rgb.numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)
    landmarks = face_detector.detect(frame).landmarks
    expr, _ = refine_photometric(avatar, frame, landmarks, rest, pose, iterations=20, size=128)
    jaw = names.index("jawOpen")
    assert expr[jaw] - rest[jaw] > 0.05  # the refinement did move the free channels towards the frame ...
    for n in REFINE_FROZEN_CHANNELS:  # ... and not the lids, though the frame's left eye is closing
        assert expr[names.index(n)] == rest[names.index(n)], n


def test_identity_box_from_landmarks_matches_dlibs_detector(face_detector, astronaut):
    """The eval boxes each face for dlib's embedding from its MediaPipe landmarks (cheaper than dlib's
    upsampled HOG detector); the box is the detector's, nearly, and so is the embedding."""
    import dlib

    from sega.evaluate import identity_embedder, landmark_face_box

    lm = face_detector.detect(astronaut).landmarks
    hog = max(dlib.get_frontal_face_detector()(astronaut, 1), key=lambda b: b.width() * b.height())
    l, t, r, b = landmark_face_box(lm)
    inter = max(0, min(r, hog.right()) - max(l, hog.left())) * max(0, min(b, hog.bottom()) - max(t, hog.top()))
    union = (r - l) * (b - t) + hog.width() * hog.height() - inter
    assert inter / union > 0.7, (l, t, r, b, hog)
    embed = identity_embedder()
    assert np.linalg.norm(embed(astronaut, lm) - embed(astronaut)) < 0.1


def test_still_face_with_landmark_noise_gives_steady_weights(ict_model, face_detector, astronaut, record_property):
    """The astronaut photo repeated 60 times with 1 px landmark noise: smoothed weights barely move."""
    lm = face_detector.detect(astronaut).landmarks
    rng = np.random.default_rng(0)
    noisy = [lm + np.concatenate([rng.normal(0, 1.0, (len(lm), 2)), np.zeros((len(lm), 1))], 1) for _ in range(60)]
    track = track_landmarks(ict_model, noisy, astronaut.shape[:2], TrackOptions(), fps=30.0)
    smooth, _, _ = retarget(track, 30.0, replace(DriveOptions(), remove_neutral=False), single_image=False)
    raw_std = float(track.expressions.std(0).max())
    std = float(smooth[10:].std(0).max())  # after the filter's start-up
    print(f"\njitter, 60 frames, 1 px noise: max weight std {std:.4f} smoothed ({raw_std:.4f} raw)")
    record_property("jitter_std", std)
    assert std <= MAX_JITTER_STD < raw_std


def _lip_gap_and_aperture(face_detector, img):
    p = face_detector.detect(img).landmarks
    iod = np.linalg.norm(p[33, :2] - p[263, :2])
    gap = (p[14, 1] - p[13, 1]) / iod
    aperture = (abs(p[159, 1] - p[145, 1]) + abs(p[386, 1] - p[374, 1])) / 2 / iod
    return gap, aperture


def test_cross_identity_driving_shows_the_expressions_without_the_drivers_resting_smile(ict_model, face_detector, avatar):
    """A painted head of another identity, smiling at rest, opens its jaw and blinks: the astronaut avatar
    opens its jaw and closes its eyes on those frames, and does not inherit the resting smile."""
    from sega.camera import orbit_camera
    from sega.synthetic import FACE_CENTRE

    model = ict_model
    rng = np.random.default_rng(4)
    identity = rng.standard_normal(model.num_identity).astype(np.float32) * 0.8
    rest = np.zeros(model.num_expressions, np.float32)
    smile = [model.expression_index("mouthSmile_L"), model.expression_index("mouthSmile_R")]
    rest[smile] = 0.4
    jaw, blink_l = model.expression_index("jawOpen"), model.expression_index("eyeBlink_L")
    jaw_frames, blink_frames = set(range(5, 9)), set(range(13, 17))
    cam = orbit_camera(0.0, 0.0, 0.7, FACE_CENTRE, 25.0, 512, 512)
    albedo = paint(model)
    frames = []
    for t in range(NUM_FRAMES):
        e = rest.copy()
        e[jaw] = 0.8 if t in jaw_frames else 0.0
        e[[blink_l, model.expression_index("eyeBlink_R")]] = 1.0 if t in blink_frames else 0.0
        pose = np.array([0.0, 0.1 * math.sin(t / 3), 0.0, 0, 0, 0], np.float32)
        frames.append(render_painted_head(model, identity, e, pose, cam, albedo))
    result = drive_frames(Frames(frames, FPS, "painted head", "video"), model, face_detector)
    rest_frames = [t for t in range(NUM_FRAMES) if t not in jaw_frames | blink_frames and t > 2]
    kept = drive_frames(Frames(frames, FPS, "painted head", "video"), model, face_detector, replace(DriveOptions(), remove_neutral=False))
    kept_smile = float(kept.expressions[rest_frames][:, smile].mean())
    driven_smile = float(result.expressions[rest_frames][:, smile].mean())
    print(f"\ndriver's resting smile (true 0.4; part goes into the fitted identity): found {result.neutral[smile].round(3)}, "
          f"avatar smile at rest {kept_smile:.3f} kept -> {driven_smile:.3f} removed")  # fmt: skip
    assert result.neutral is not None and result.neutral[smile].min() > 0.05, "the driver's resting smile is found"
    assert driven_smile < 0.5 * kept_smile and driven_smile < 0.08, "and not passed on"  # measured 0.176 -> 0.000
    cam_avatar = avatar.orbit_camera(0.0, size=384)
    # Eyeballs painted green on a copy of the avatar: how much eyeball the lids leave visible.
    maps = avatar.maps.detach()
    maps.color[torch.as_tensor(avatar.atlas.region_mask("eyeball_left", "eyeball_right"))] = torch.tensor([0.0, 1.0, 0.0])
    marked = replace(avatar, maps=maps, rig=None)

    def look(t):
        img = (avatar.render(result.expressions[t], camera=cam_avatar).rgb.numpy().clip(0, 1) * 255).astype(np.uint8)
        gap = _lip_gap_and_aperture(face_detector, img)[0]
        rgb = marked.render(result.expressions[t], camera=cam_avatar).rgb.numpy()
        return gap, int(((rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)).sum())

    blinks = result.expressions[:, [blink_l, model.expression_index("eyeBlink_R")]]
    calm_gap, calm_eye = look(rest_frames[0])
    jaw_gap, _ = look(7)
    _, shut_eye = look(int(np.argmax(blinks.sum(1))))
    print(f"\ncross-identity on the astronaut: lip gap {calm_gap:.3f} -> {jaw_gap:.3f} (jawOpen frames); "
          f"blink weights {blinks[sorted(blink_frames)].round(2).tolist()}, visible eyeball {calm_eye} -> {shut_eye} px")  # fmt: skip
    assert jaw_gap - calm_gap > 0.1
    before = [t for t in rest_frames if t < min(blink_frames)]  # (the filter lets a blink fade over a few frames after)
    assert blinks[sorted(blink_frames)].max() > 0.25 and blinks[before].max() < 0.15
    assert shut_eye < 0.7 * calm_eye


def test_tracker_jacobian_matches_autodiff(ict_model, face_detector, astronaut):
    lm = face_detector.detect(astronaut).landmarks
    from sega.fit import fit_landmarks

    fit = fit_landmarks(ict_model, lm, astronaut.shape[:2])
    solver = ExpressionPoseSolver(ict_model, fit.identity, fit.camera)
    p = torch.cat([torch.rand(ict_model.num_expressions) * 0.3, torch.tensor([0.1, -0.2, 0.05, 0.01, 0.0, -0.02])])
    _, jac = solver.jacobian(p)
    num_e = ict_model.num_expressions

    def f(q):  # rotation columns are a left perturbation: R <- exp(d) R
        from sega.geometry import axis_angle_to_matrix, matrix_to_axis_angle

        rot = matrix_to_axis_angle(axis_angle_to_matrix(q[num_e : num_e + 3]) @ axis_angle_to_matrix(p[num_e : num_e + 3]))
        return solver.project(torch.cat([q[:num_e], rot, q[num_e + 3 :]]))

    q0 = torch.cat([p[:num_e], torch.zeros(3), p[num_e + 3 :]])
    ref = torch.autograd.functional.jacobian(f, q0)  # [L, 2, P]
    assert torch.allclose(jac, ref, atol=1e-2 * ref.abs().max())


def test_tracker_reads_gaze_from_the_irises(ict_model, face_detector, astronaut):
    """Iris landmarks of eyes turned by eyeLook* (which turn the eyeballs) are tracked back into the gaze
    channels: sideways, down, up and a mixed look, each within 15% of its size (``sega.gaze``'s iris-only
    re-read; the full solve alone read 37-75%: the lid points resist a look), the opposite channels silent."""
    from sega.fit import fit_landmarks

    fit = fit_landmarks(ict_model, face_detector.detect(astronaut).landmarks, astronaut.shape[:2])
    names = list(ict_model.expression_names)
    looks = ({"eyeLookOut_L": 0.5, "eyeLookIn_R": 0.5}, {"eyeLookDown_L": 0.4, "eyeLookDown_R": 0.4}, {"eyeLookUp_L": 0.3, "eyeLookUp_R": 0.3},
             {"eyeLookIn_L": 0.25, "eyeLookOut_R": 0.25, "eyeLookUp_L": 0.2, "eyeLookUp_R": 0.2})  # fmt: skip
    opposite = {"Out": "In", "In": "Out", "Up": "Down", "Down": "Up"}
    read = {}
    for flag in (True, False):
        solver = ExpressionPoseSolver(ict_model, fit.identity, fit.camera, replace(TrackOptions(), gaze_from_irises=flag))
        for k, look in enumerate(looks):
            truth = np.zeros(ict_model.num_expressions + 6, np.float32)
            for name, w in look.items():
                truth[names.index(name)] = w
            solver.set_view(truth[-6:])
            params, _ = solver.solve(solver.project(torch.as_tensor(truth)).numpy(), None, 25)
            read[flag, k] = {name: float(params[names.index(name)]) for name in look}
            if flag:
                for name, w in look.items():
                    assert read[flag, k][name] == pytest.approx(w, abs=0.15 * w), (name, read[flag, k][name])
                    direction, side = name[len("eyeLook") :].split("_")
                    assert params[names.index(f"eyeLook{opposite[direction]}_{side}")] < 0.05
    assert all(read[True, k][n] > read[False, k][n] + 0.05 for k, look in enumerate(looks) for n in look)  # what the re-read adds


def test_the_avatar_keeps_the_photos_gaze(ict_model, face_detector, astronaut):
    """``with_photo_gaze``: the fit's sideways eyeLook channels become the tracker's reading of the photo (a
    sideways look the landmarks show is read into the fit; nothing else moves, the up / down channels neither:
    ICT's raise and lower the lids too), so that driving adds no second look to it."""
    from sega.fit import fit_landmarks
    from sega.track import with_photo_gaze

    fit = fit_landmarks(ict_model, face_detector.detect(astronaut).landmarks, astronaut.shape[:2])
    names = list(ict_model.expression_names)
    solver = ExpressionPoseSolver(ict_model, fit.identity, fit.camera)
    truth = np.concatenate([fit.expression, np.zeros(6, np.float32)])
    gaze = [i for i, n in enumerate(names) if n.startswith("eyeLook")]
    truth[gaze] = 0.0
    truth[[names.index("eyeLookOut_L"), names.index("eyeLookIn_R")]] = 0.35
    truth[[names.index("eyeLookDown_L"), names.index("eyeLookDown_R")]] = 0.2
    solver.set_view(truth[-6:])
    looking = replace(fit, expression=np.where(np.isin(np.arange(len(names)), gaze), 0.0, fit.expression).astype(np.float32))
    got = with_photo_gaze(looking, ict_model, solver.project(torch.as_tensor(truth)).numpy())
    sideways = [i for i, n in enumerate(names) if n.startswith(("eyeLookIn", "eyeLookOut"))]
    np.testing.assert_allclose(got.expression[sideways], truth[sideways], atol=0.06)
    assert got.expression[names.index("eyeLookOut_L")] > 0.25 and got.expression[names.index("eyeLookIn_R")] > 0.25
    others = np.setdiff1d(np.arange(len(names)), sideways)
    assert np.array_equal(got.expression[others], looking.expression[others]) and np.array_equal(got.identity, fit.identity)


def test_tracker_solves_pose_and_view_embedding_together(ict_model):
    """Exact landmarks of the view-interpolated embedding at a turned head, solved from a frontal start:
    the embedding is re-interpolated for the solved view until it settles, which recovers the pose; one
    re-interpolation leaves the error of the start view's embedding."""
    from sega.camera import orbit_camera
    from sega.synthetic import FACE_CENTRE

    rng = np.random.default_rng(3)
    identity = (rng.standard_normal(ict_model.num_identity) * 0.8).astype(np.float32)
    cam = orbit_camera(0.0, 0.0, 0.7, FACE_CENTRE, 25.0, 512, 512)
    num_e = ict_model.num_expressions
    errors = {}
    for rounds in (1, TrackOptions().view_rounds):
        solver = ExpressionPoseSolver(ict_model, identity, cam, replace(TrackOptions(), view_rounds=rounds))
        assert solver.views is not None, "the view-dependent embedding ships for ICT"
        errs = []
        for pitch, yaw in ((10.0, 25.0), (-12.0, -25.0), (15.0, 15.0)):
            truth = np.zeros(num_e + 6, np.float32)
            truth[num_e : num_e + 2] = np.radians([pitch, yaw])
            solver.set_view(truth[num_e:])
            landmarks = solver.project(torch.as_tensor(truth)).numpy()
            p, _ = solver.solve(landmarks, None, TrackOptions().first_iterations)
            errs.append(rotation_angle_deg(p[num_e : num_e + 3], truth[num_e : num_e + 3]))
        errors[rounds] = max(errs)
    print(f"\npose from exact view-embedding landmarks, frontal start: max error {errors[1]:.3f} deg with one "
          f"re-interpolation, {errors[TrackOptions().view_rounds]:.3f} deg until the view settles")  # fmt: skip
    assert errors[TrackOptions().view_rounds] < 0.1 and errors[1] > 0.2  # measured 0.04 and 0.81


def test_one_euro_smooths_noise_and_follows_steps():
    rng = np.random.default_rng(0)
    x = np.zeros((120, 1))
    x[60:] = 1.0
    noisy = x + rng.normal(0, 0.02, x.shape)  # about the frame-to-frame jitter of tracked weights
    y = one_euro(noisy, 30.0)
    assert y[:55].std() < 0.5 * noisy[:55].std()
    assert abs(y[75:].mean() - 1.0) < 0.05, "reaches the new level within half a second"


def test_pose_filter_follows_a_fast_turn_and_calms_a_still_head():
    """The head-pose filter (``DriveOptions.pose_one_euro``): a 25-degree turn in 0.2 s at 25 fps is
    followed within a couple of degrees at worst, where the weights' settings fall far behind; and pose
    jitter of a still head (0.2 degrees, about what 1 px of landmark noise gives) is roughly halved."""
    fps, turn = 25.0, math.radians(25.0)
    yaw = np.clip(np.arange(40) - 10, 0, 5) / 5 * turn  # still, a 5-frame turn, still
    pose = np.zeros((40, 6))
    pose[:, 1] = yaw
    lag = {name: float(np.degrees(np.abs(one_euro(pose, fps, o)[:, 1] - yaw).max()))
           for name, o in (("pose", DriveOptions().pose_one_euro), ("weights", DriveOptions().one_euro))}  # fmt: skip
    rng = np.random.default_rng(0)
    still = np.zeros((120, 6))
    still[:, :3] = rng.normal(0, math.radians(0.2), (120, 3))
    calmed = one_euro(still, fps, DriveOptions().pose_one_euro)
    print(f"\nturn of 25 deg in 0.2 s: lag at worst {lag['pose']:.2f} deg (weights' filter {lag['weights']:.2f}); "
          f"still head jitter {np.degrees(still[10:, 1].std()):.3f} -> {np.degrees(calmed[10:, 1].std()):.3f} deg")  # fmt: skip
    assert lag["pose"] < 3.0 and lag["weights"] > 2 * lag["pose"]
    assert (calmed[10:, :3].std(0) < 0.6 * still[10:, :3].std(0)).all()


def _moving_photo(photo: np.ndarray, n: int, fps: float) -> list[np.ndarray]:
    """The photo moved in the image plane like a handheld camera: roll 4 deg, zoom 4 %, 6 px shifts
    (frame 0 is the photo itself)."""
    from PIL import Image

    img, (h, w) = Image.fromarray(photo), photo.shape[:2]
    cx, cy = w / 2, h * 0.4  # about the face
    out = []
    for t in range(n):
        sec = t / fps
        a, s = math.radians(4.0) * math.sin(2 * math.pi * sec / 2.0), 1.0 + 0.04 * math.sin(2 * math.pi * sec / 2.5)
        dx, dy = 6.0 * math.sin(2 * math.pi * sec / 1.6), 4.0 * math.sin(2 * math.pi * sec / 2.2)
        c, si = math.cos(a) / s, math.sin(a) / s  # output pixel -> photo pixel: rotate and scale about the face
        coeffs = (c, si, cx - c * (cx + dx) - si * (cy + dy), -si, c, cy + si * (cx + dx) - c * (cy + dy))
        out.append(np.asarray(img.transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)))
    return out


def test_cli_eval_on_an_mp4_of_a_real_face(avatar, astronaut, face_detector, tmp_path, capsys):
    """``sega eval`` end to end on an H.264 MP4, 5 s at 25 fps, of the real photo moving in the image
    plane (no real talking-head video is available offline): every frame is tracked, the scored
    frames come out about as close to the target as the avatar is to its own photo."""
    import json

    from sega.avatar import psnr
    from sega.evaluate import MASK_ALPHA

    fps = 25.0
    video = write_video(tmp_path / "moving.mp4", _moving_photo(astronaut, int(5 * fps), fps), fps)
    avatar.save(tmp_path / "avatar.npz")  # built from the photo = frame 0
    assert main(["eval", "--video", str(video), "-o", str(tmp_path / "report"), "--every", "40", "--max-scored", "2",
                 "--avatar", str(tmp_path / "avatar.npz"), "--quiet", "--no-download"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    o = report["overall"]
    still = avatar.render(avatar.expression, camera=avatar.camera)
    mask = (face_detector.segment_person(astronaut) > 0.5) & (still.alpha.numpy()[..., 0] > MASK_ALPHA)  # eval's mask
    own = psnr(still.rgb.numpy().clip(0, 1), astronaut / 255.0, mask)
    print(f"\neval on a 5 s MP4 of the moving photo: PSNR {o['psnr_db']['mean']:.2f} dB (the avatar on its own photo, same "
          f"mask: {own:.2f}), SSIM {o['ssim']['mean']:.3f}, expression error {o['expression_error']['mean']:.4f}, "
          f"pose error {o['pose_error_deg']['mean']:.2f} deg")  # fmt: skip
    assert report["frames"] == 125 and report["fps"] == pytest.approx(fps) and report["frames_without_face"] == []
    assert report["scored_frames"] == 2 and report["options"]["max_scored"] == 2  # frames 40 and 80 of 40, 80, 120
    assert o["psnr_db"]["min"] > own - 2.0, "moved frames are matched about as well as the photo itself"
    assert o["expression_error"]["mean"] < 0.05 and o["pose_error_deg"]["mean"] < 4.0


# ---- bad inputs -------------------------------------------------------------------------------


def test_bad_driving_inputs_get_their_own_messages(tmp_path, face_detector, ict_model):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(VideoError, match="not a readable video"):
        read_frames(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_frames(empty)
    (tmp_path / "frames").mkdir()
    with pytest.raises(VideoError, match="no image frames"):
        read_frames(tmp_path / "frames")
    # A real video cut in half: either the index is gone, or frames are missing.
    grey = [np.full((64, 64, 3), 40 + 4 * i, np.uint8) for i in range(50)]
    full = write_video(tmp_path / "full.mp4", grey, 25.0)
    assert len(read_frames(full)) == 50
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VideoError, match="truncated"):
        read_frames(cut)
    with pytest.raises(FaceNotFoundError, match="no face found in any of its 50 frames"):
        drive_frames(read_frames(full), ict_model, face_detector)
    assert read_frames(full).fps == pytest.approx(25.0)


def test_cli_drive_writes_the_video_and_clip_and_reports_bad_input(avatar, self_video, tmp_path, capsys):
    from export.clips import read_clip

    frames, _, _ = self_video
    video = write_video(tmp_path / "driver.mp4", frames.frames[:8], FPS)
    avatar.save(tmp_path / "avatar.npz")
    out, clip = tmp_path / "out.mp4", tmp_path / "talk.json"
    assert main(["drive", str(tmp_path / "avatar.npz"), "--video", str(video), "-o", str(out), "--clip", str(clip),
                 "--size", "96", "--quiet", "--no-download"]) == 0  # fmt: skip
    c = read_clip(clip)
    assert c["frames"].shape == (8, 53) and c["head_pose"].shape == (8, 6) and c["fps"] == pytest.approx(FPS)
    assert len(read_frames(out)) == 8 and read_frames(out).frames[0].shape == (96, 192, 3)
    capsys.readouterr()
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    assert main(["drive", str(tmp_path / "avatar.npz"), "--video", str(bad), "-o", str(tmp_path / "x.mp4"), "--quiet", "--no-download"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a readable video" in err[0]
