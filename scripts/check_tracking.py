"""Head-pose and weight error of the tracker on check videos that the tests do not use.

Why: tracker settings (``sega.track.TrackOptions``, ``sega.face.TRACK_*``) are chosen on these videos,
never on the renders of ``tests/test_drive.py``, which then report a figure nothing was tuned on.

The check videos (synthetic, with known expression weights and head poses, frame 0 at rest):
- ``astro_a``, ``astro_b``: the astronaut avatar (fast preset) with two motions unlike the test's
  (a: smile, brows down, jaw, blink, yaw/pitch/roll and some translation; b: funnel, squint, outer brows,
  jaw, blink, yaw/pitch);
- ``paint0``..``paint4``: painted ICT heads of five random identities, motions a (0-2) and b (3-4);
- ``pose_only``, ``expr_only``: the paint0 identity with motion a's head poses and no expression, and
  with its expressions and no head motion (which of the two moves the pose error).

Prints per video the mean head-pose error (degrees, rotation angle of estimate vs truth), its mean
pitch / yaw / roll parts, and the weight MAE; then the mean pose error over the videos.
Usage: python scripts/check_tracking.py [--no-mirror] [--oval-weight W] [--iterations N]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np
import torch

from sega.avatar import AvatarOptions, build_avatar
from sega.camera import orbit_camera
from sega.eval_frame import rotation_angle_deg
from sega.face import FaceDetector
from sega.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from sega.headmodel import load_head_model
from sega.landmarks import with_mediapipe_embedding
from sega.synthetic import FACE_CENTRE, paint, render_painted_head
from sega.track import TrackOptions, track_landmarks

FRAMES, FPS, SIZE = 30, 25.0, 512
IDENTITY_SEEDS = (100, 101, 102, 103, 104)  # painted identities (the view embeddings use seed 0's)


def motion_a(model, n: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """[T, E] weights, [T, 6] head poses: smile, brows down, jaw, a blink; yaw 22, pitch 12, roll 6 deg, translation."""
    x = model.expression_index
    exprs, poses = np.zeros((n, model.num_expressions), np.float32), np.zeros((n, 6), np.float32)
    for t in range(1, n):
        s = math.sin(2 * math.pi * t / n + 1.0)
        exprs[t, [x("mouthSmile_L"), x("mouthSmile_R")]] = max(0.0, s) * 0.6
        exprs[t, x("jawOpen")] = max(0.0, math.cos(2 * math.pi * t / 15)) * 0.5
        exprs[t, [x("browDown_L"), x("browDown_R")]] = max(0.0, -s) * 0.5
        exprs[t, [x("eyeBlink_L"), x("eyeBlink_R")]] = 1.0 if 20 <= t <= 22 else 0.0
        poses[t] = [math.radians(12) * math.cos(3 * math.pi * t / n), math.radians(22) * math.sin(2 * math.pi * t / n + 0.5),
                    math.radians(6) * math.sin(1.4 * math.pi * t / n), 0.005 * math.sin(t / 4), 0.0, 0.01 * math.cos(t / 5)]  # fmt: skip
    return exprs, poses


def motion_b(model, n: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Funnel, squint, outer brows, jaw, a blink; yaw 25, pitch 15 deg, no translation."""
    x = model.expression_index
    exprs, poses = np.zeros((n, model.num_expressions), np.float32), np.zeros((n, 6), np.float32)
    for t in range(n):
        s = math.sin(2 * math.pi * t / n)
        exprs[t, x("mouthFunnel")] = max(0.0, s) * 0.6
        exprs[t, [x("eyeSquint_L"), x("eyeSquint_R")]] = max(0.0, -s) * 0.6
        exprs[t, x("jawOpen")] = max(0.0, math.sin(2 * math.pi * t / 10)) * 0.6
        exprs[t, [x("browOuterUp_L"), x("browOuterUp_R")]] = max(0.0, math.cos(2 * math.pi * t / n)) * 0.5
        exprs[t, [x("eyeBlink_L"), x("eyeBlink_R")]] = 1.0 if 8 <= t <= 10 else 0.0
        poses[t, :2] = [-math.radians(15) * math.sin(2.5 * math.pi * t / n), math.radians(25) * math.sin(1.5 * math.pi * t / n)]
    exprs[0] = 0.0
    return exprs, poses


def pose_parts_deg(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    """[T, 3] axis-angle of R_est R_true^T in degrees: pitch, yaw, roll parts of the error."""
    out = []
    for p, q in zip(est, true):
        ra, rb = (axis_angle_to_matrix(torch.as_tensor(v[:3], dtype=torch.float64)) for v in (p, q))
        out.append(np.degrees(matrix_to_axis_angle(ra @ rb.T).numpy()))
    return np.array(out)


def main() -> None:
    from skimage import data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-mirror", action="store_true", help="track without averaging the flipped frames")
    ap.add_argument("--oval-weight", type=float, default=TrackOptions().oval_weight)
    ap.add_argument("--iterations", type=int, default=TrackOptions().iterations)
    args = ap.parse_args()
    options = replace(TrackOptions(), oval_weight=args.oval_weight, iterations=args.iterations)
    model = with_mediapipe_embedding(load_head_model("ict"))
    cam = orbit_camera(0.0, 0.0, 0.7, FACE_CENTRE, 25.0, SIZE, SIZE)
    albedo = paint(model)
    a, b = motion_a(model), motion_b(model)
    with FaceDetector() as det:
        avatar, _ = build_avatar(data.astronaut(), model, AvatarOptions.preset("fast"), None, det)
        rest = avatar.expression.astype(np.float32)

        def avatar_video(motion):
            exprs = np.clip(motion[0] + rest, 0, 1)
            frames = [(avatar.render(e, (p[:3], p[3:]), camera=avatar.camera).rgb.cpu().numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)
                      for e, p in zip(exprs, motion[1])]  # fmt: skip
            return frames, exprs, motion[1]

        def painted_video(seed, exprs, poses):
            ident = (np.random.default_rng(seed).standard_normal(model.num_identity) * 0.8).astype(np.float32)
            return [render_painted_head(model, ident, e, p, cam, albedo) for e, p in zip(exprs, poses)], exprs, poses

        videos = {"astro_a": avatar_video(a), "astro_b": avatar_video(b)}
        for k, seed in enumerate(IDENTITY_SEEDS):
            videos[f"paint{k}"] = painted_video(seed, *(a if k < 3 else b))
        videos["pose_only"] = painted_video(IDENTITY_SEEDS[0], np.zeros_like(a[0]), a[1])
        videos["expr_only"] = painted_video(IDENTITY_SEEDS[0], a[0], np.zeros_like(a[1]))
        errors = []
        for name, (frames, exprs, poses) in videos.items():
            det.reset_tracking()
            landmarks = [det.track(f, mirror=not args.no_mirror) for f in frames]
            track = track_landmarks(model, landmarks, (SIZE, SIZE), options, fps=FPS)
            err = np.array([rotation_angle_deg(p[:3], q[:3]) for p, q in zip(track.head_poses, poses)])
            parts = np.abs(pose_parts_deg(track.head_poses, poses)).mean(0)
            mae = float(np.abs(track.expressions - exprs).mean())
            errors.append(err.mean())
            print(f"{name:10s} pose error {err.mean():.2f} deg (max {err.max():.2f}; pitch/yaw/roll {parts[0]:.2f}/{parts[1]:.2f}/"
                  f"{parts[2]:.2f}), weight MAE {mae:.4f}, {len(track.missing)} frames without a face")  # fmt: skip
    print(f"mean pose error over {len(errors)} check videos: {np.mean(errors):.2f} deg")


if __name__ == "__main__":
    main()
