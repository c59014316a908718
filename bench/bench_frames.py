"""The per-frame path: animate + render, one frame at a time against a batch of frames, on the avatar's device.

Prints and records, in one run on one machine (default: the astronaut, default preset, ``--device auto``):
* ``frame_ms``: ``Avatar.animate`` + ``Avatar.render`` at ``--size`` (512 px), one frame at a time,
  median over ``--frames`` random expressions and head poses [CUDA target: <= 1 ms];
* ``batch_frame_ms`` / ``batch_fps``: the same frames through ``Avatar.animate_frames`` +
  ``sega.avatar.frames.render_frames`` in one batch of ``--frames`` (60) [CUDA target: >= 1000 frames/s],
  and ``batch_speedup`` (per-frame over batched, measured in the same run);
* ``views_ms`` / ``views_batch_ms``: the six preview yaws one render at a time against one
  ``Avatar.render_views`` call, and their ratio;
* ``batch_max_abs_diff``: the largest pixel difference between the two paths (they must agree).

On the CPU these are reference figures (no target): the CPU rasteriser draws frame by frame either way,
so batching saves only the animate step's per-op overhead. Timings synchronise CUDA before reading the clock.

    python -m bench.bench_frames [--avatar out/avatar.npz] [--device auto] [--size 512] [--frames 60]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np
import torch

from bench.record import machine_line, write_record
from sega.avatar.frames import render_frames
from sega.avatar.previews import PREVIEW_YAWS
from sega.headmodel import load_head_model

TARGETS = {"frame_ms": "<= 1 (CUDA, H100/H200 class)", "batch_fps": ">= 1000 (CUDA, 60-frame batch)"}
EXPRESSION_DENSITY = 0.3  # fraction of the channels active in a random frame ...
EXPRESSION_MAX = 0.8  # ... each at most this
POSE_STD_RAD = 0.15  # random head turns (about 9 degrees)
POSE_STD_M = 0.01  # and shifts
WARMUP_FRAMES = 3  # untimed first calls (CUDA context, allocator, gsplat's first launch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    """(result, seconds) of ``fn()`` with the device synchronised around it."""
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--avatar", type=Path, help="avatar.npz (default: build the astronaut, default preset)")
    ap.add_argument("--preset", default="default", help="preset when building (default: default)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when torch sees it)")
    ap.add_argument("--size", type=int, default=512, help="image side (px)")
    ap.add_argument("--frames", type=int, default=60, help="frames in the batch (and timed one at a time)")
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_frames.json)")
    args = ap.parse_args()
    from sega.avatar import Avatar, AvatarOptions
    from sega.devices import resolve_device

    device = torch.device(resolve_device(args.device))
    model = load_head_model("ict")
    if args.avatar:
        avatar = Avatar.load(args.avatar, model, device=str(device))
    else:
        from dataclasses import replace

        from skimage import data

        from sega.landmarks import with_mediapipe_embedding

        model = with_mediapipe_embedding(model)
        t = time.perf_counter()
        avatar = Avatar.build(data.astronaut(), model, replace(AvatarOptions.preset(args.preset), device=str(device)))
        print(f"built the astronaut avatar ({args.preset}, {device}) in {time.perf_counter() - t:.1f} s")
    print(f"machine: {machine_line()}; torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))  # fmt: skip
    print(f"avatar: {avatar.num_gaussians} Gaussians, {int(avatar.dynamic_mask.sum())} dynamic; {args.size} px, {args.frames} frames")

    rng = np.random.default_rng(0)
    num_e = avatar.head_model.num_expressions
    active = rng.random((args.frames, num_e)) < EXPRESSION_DENSITY
    exprs = (rng.random((args.frames, num_e)) * EXPRESSION_MAX * active).astype(np.float32)
    rots = rng.normal(0.0, POSE_STD_RAD, (args.frames, 3)).astype(np.float32)
    trans = rng.normal(0.0, POSE_STD_M, (args.frames, 3)).astype(np.float32)
    cam = avatar.orbit_camera(0.0, size=args.size)

    def one(f: int) -> torch.Tensor:
        return avatar.render(exprs[f], (rots[f], trans[f]), camera=cam).rgb

    def batch() -> torch.Tensor:
        return render_frames(avatar, avatar.animate_frames(exprs, rots, trans), cam).rgb

    for f in range(WARMUP_FRAMES):
        _timed(lambda f=f: one(f), device)
    _timed(batch, device)
    singles, frame_s = [], []
    for f in range(args.frames):
        rgb, s = _timed(lambda f=f: one(f), device)
        singles.append(rgb)
        frame_s.append(s)
    batched, batch_s = _timed(batch, device)
    diff = float((torch.stack(singles) - batched).abs().max())
    frame_ms = 1e3 * statistics.median(frame_s)
    batch_frame_ms = 1e3 * batch_s / args.frames

    view_cams = [avatar.orbit_camera(y, size=args.size) for y in PREVIEW_YAWS]
    _, views_s = _timed(lambda: [avatar.render(camera=c).rgb for c in view_cams], device)
    _, views_batch_s = _timed(lambda: avatar.render_views(view_cams).rgb, device)

    figures = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "num_gaussians": avatar.num_gaussians,
        "size_px": args.size,
        "frames": args.frames,
        "frame_ms": round(frame_ms, 3),
        "frame_fps": round(1e3 / frame_ms, 1),
        "batch_frame_ms": round(batch_frame_ms, 3),
        "batch_fps": round(1e3 / batch_frame_ms, 1),
        "batch_speedup": round(frame_ms / batch_frame_ms, 2),
        "batch_max_abs_diff": round(diff, 6),
        "views": len(view_cams),
        "views_ms": round(1e3 * views_s, 2),
        "views_batch_ms": round(1e3 * views_batch_s, 2),
        "views_batch_speedup": round(views_s / views_batch_s, 2),
        "targets": TARGETS,
    }
    print(f"one frame at a time: {frame_ms:.2f} ms ({1e3 / frame_ms:.1f} frames/s)")
    print(f"batch of {args.frames}: {batch_frame_ms:.2f} ms a frame ({1e3 / batch_frame_ms:.1f} frames/s), "
          f"{frame_ms / batch_frame_ms:.2f}x; max pixel difference {diff:.2e}")  # fmt: skip
    print(f"{len(view_cams)} views: {1e3 * views_s:.1f} ms one by one, {1e3 * views_batch_s:.1f} ms batched ({views_s / views_batch_s:.2f}x)")
    print(f"wrote {write_record('bench_frames', figures, args.json)}")


if __name__ == "__main__":
    main()
