"""Tracking speed for driving: frames/s of landmarks (MediaPipe video mode) + expression/pose solve.

Frames: a synthetic talking head (the painted ICT head of ``sega.synthetic``, another identity) with
jaw, smile, blink and brow motion and a turning head, rendered at 512 x 512 (the issue's "512^2
crops"). Prints the landmark time, the solve time (identity + camera fit once, then per-frame
Levenberg-Marquardt) and their sum as frames per second [goal >= 15 frames/s on 2 cores].

Run: ``python -m bench.bench_track [--frames 90]`` from the repository root; writes
``bench/results/bench_track.json`` (``bench.record``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np

from bench.record import machine_line, write_record
from sega.camera import orbit_camera
from sega.face import FaceDetector
from sega.fit import FitOptions, fit_landmarks
from sega.headmodel import load_head_model
from sega.landmarks import with_mediapipe_embedding
from sega.synthetic import FACE_CENTRE, paint, render_painted_head
from sega.track import TrackOptions, detect_video_landmarks, track_landmarks

TARGET_FPS = 15.0

SIZE = 512


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_track.json)")
    args = ap.parse_args()
    model = with_mediapipe_embedding(load_head_model("ict"))
    rng = np.random.default_rng(0)
    identity = rng.standard_normal(model.num_identity).astype(np.float32) * 0.8
    albedo = paint(model)
    cam = orbit_camera(0.0, 0.0, 0.7, FACE_CENTRE, 25.0, SIZE, SIZE)
    jaw, smile_l, smile_r = (model.expression_index(n) for n in ("jawOpen", "mouthSmile_L", "mouthSmile_R"))
    blink_l, blink_r, brow = (model.expression_index(n) for n in ("eyeBlink_L", "eyeBlink_R", "browInnerUp_L"))
    frames = []
    for t in range(args.frames):
        e = np.zeros(model.num_expressions, np.float32)
        e[jaw] = max(0.0, math.sin(t / 2.5)) * 0.7
        e[[smile_l, smile_r]] = 0.3 + 0.3 * math.sin(t / 11)
        e[[blink_l, blink_r]] = 1.0 if t % 30 in (10, 11, 12) else 0.0
        e[brow] = max(0.0, math.sin(t / 7)) * 0.6
        pose = np.array([0.15 * math.sin(t / 9), 0.35 * math.sin(t / 13), 0.05 * math.sin(t / 5), 0, 0, 0], np.float32)
        frames.append(render_painted_head(model, identity, e, pose, cam, albedo))
    print(f"machine: {machine_line()}")
    with FaceDetector() as det:
        detect_video_landmarks(frames[:5], det)  # warm up the graphs
        landmarks, t_lmk = detect_video_landmarks(frames, det)
        _, t_single = detect_video_landmarks(frames, det, mirror=False)  # baseline: one stream, no flipped frames
    t0 = time.perf_counter()
    fit = fit_landmarks(model, landmarks[0], (SIZE, SIZE), FitOptions.preset(TrackOptions().fit_preset))
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    track = track_landmarks(model, landmarks, (SIZE, SIZE), TrackOptions(), fit.identity, fit.camera, fps=30.0)
    t_solve = time.perf_counter() - t0
    n = len(frames)
    print(f"{n} frames of {SIZE}x{SIZE}, faces found in {int(track.found.sum())}")
    print(f"  identity + camera fit, once:      {t_fit:6.2f} s")
    print(f"  landmarks (MediaPipe video mode): {1e3 * t_lmk / n:6.1f} ms/frame, frame + flipped frame "
          f"({1e3 * t_single / n:.1f} ms without the flipped stream: x{t_lmk / t_single:.2f})")  # fmt: skip
    print(f"  expression + pose solve (LM):     {1e3 * t_solve / n:6.1f} ms/frame")
    print(f"  tracking: {n / (t_lmk + t_solve):.1f} frames/s per frame after the first (goal >= {TARGET_FPS:g}); "
          f"{n / (t_lmk + t_solve + t_fit):.1f} frames/s over these {n} frames including the one-off fit")
    figures = {
        "frames": n, "frame_size_px": SIZE, "faces_found": int(track.found.sum()),
        "identity_camera_fit_s": round(t_fit, 2),
        "landmarks_ms_per_frame": round(1e3 * t_lmk / n, 1),
        "landmarks_single_stream_ms_per_frame": round(1e3 * t_single / n, 1),
        "flipped_stream_cost_ratio": round(t_lmk / t_single, 2),
        "solve_ms_per_frame": round(1e3 * t_solve / n, 1),
        "tracking_fps": round(n / (t_lmk + t_solve), 1),
        "tracking_fps_with_fit": round(n / (t_lmk + t_solve + t_fit), 1),
        "targets": {"tracking_fps": f">= {TARGET_FPS:g}"},
    }  # fmt: skip
    print(f"wrote {write_record('bench_track', figures, args.json)}")


if __name__ == "__main__":
    main()
