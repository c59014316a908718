"""What a prior trained here does: train on the dev clips with one left out, then evaluate self-reenactment on the
left-out clip and its views at ±30° / ±45°, built with and without the prior (same frames, same metrics).

The dev clips are test material: a prior trained on them is a measurement, never shipped. Steps:

1. prepare every dev clip (``--size`` px, every 3rd frame, at most 60 a clip, 3 source frames) unless ``--dataset``;
2. ``torchrun --nproc_per_node 2 -m sega train`` (gloo, one thread each) for ``--steps``, validating on the
   left-out clip (``--holdout``; its person is never trained on) unless ``--prior`` names a trained one;
3. build the left-out clip's frame 0 with the default preset twice, without and with the prior, and score each
   with ``sega eval``'s code (``evaluate_frames``: every 5th frame, at most 12) and ``view_checks.view_report``
   (dlib identity distance at each yaw).

Records ``bench/results/bench_prior.json`` and writes ``docs/prior_experiment.png`` (rows: without, with; the
source crop, the input view, then yaws 0, 30, -30, 45, -45, 90, -90, 180).

    python -m bench.bench_prior [--holdout retalking_3] [--steps 1500] [--dataset DIR] [--prior FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

from bench.record import machine_line, write_record

ROOT = Path(__file__).resolve().parents[1]
DEV_VIDEOS = ROOT.parent / "shared" / "dev-media" / "videos"
GALLERY = ROOT / "docs" / "prior_experiment.png"
VIEW_SIZE = 192  # px of each gallery tile


def prepare_set(videos: Path, out: Path, size: int) -> Path:
    from sega.train.prepare import PrepareOptions, prepare

    manifest = prepare(sorted(videos.glob("*.mp4")), out, PrepareOptions(size=size, every=3, max_frames=60, source_frames=3, workers=2))
    print(f"prepared {len(manifest['clips'])} clips, failed: {manifest['failed'] or 'none'}", flush=True)
    return out


def train_prior(dataset: Path, out: Path, steps: int, static_steps: int, holdout: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sega", "train", str(dataset),
           "-o", str(out), "--steps", str(steps), "--static-steps", str(static_steps), "--threads", "1", "--val-clips", holdout,
           "--val-every", str(max(steps // 6, 1)), "--checkpoint-every", str(max(steps // 3, 1)), "--quiet"]  # fmt: skip
    if (out / "last.npz").exists():
        cmd.append("--resume")
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if run.returncode:
        raise SystemExit(f"training failed:\n{run.stderr[-3000:]}")
    print(run.stdout.strip(), flush=True)
    return json.loads((out / "summary.json").read_text())


def score(video: Path, prior_path: Path | None) -> tuple[dict, np.ndarray]:
    """(figures, gallery row) of one build of the clip's frame 0."""
    from bench.bench_fidelity import clip_figures
    from sega.avatar import AvatarOptions
    from sega.avatar.build import build_avatar
    from sega.evaluate import EvalOptions, evaluate_frames, identity_embedder
    from sega.face import FaceDetector
    from sega.headmodel.ict import load_ict
    from sega.landmarks import with_mediapipe_embedding
    from sega.nets.prior_file import load_prior
    from sega.video import read_frames
    from sega.view_checks import view_report, view_row

    model = with_mediapipe_embedding(load_ict())
    frames = read_frames(video)
    prior = None if prior_path is None else load_prior(prior_path, model)
    embed = identity_embedder()
    with FaceDetector() as det:
        t0 = time.perf_counter()
        avatar, data = build_avatar(frames.frames[0], model, AvatarOptions.preset("default"), detector=det, prior=prior)
        build_s = time.perf_counter() - t0
        report = evaluate_frames(frames, model, det, EvalOptions(every=5, max_scored=12), avatar=avatar)
        views, renders = view_report(avatar, data, frames.frames[0], det, embed, VIEW_SIZE) if embed else ({}, None)
    fig = clip_figures(report)
    ids = {y: v["identity_distance"] for y, v in views.get("views", {}).items()}
    fig |= {"build_s": round(build_s, 1), "view_identity_distance": ids, "input_iou": views.get("input_iou"),
            "input_face_psnr_db": views.get("input_face_psnr_db")}  # fmt: skip
    return fig, None if renders is None else view_row(data.target, renders, VIEW_SIZE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=DEV_VIDEOS)
    ap.add_argument("--holdout", default="retalking_3", help="the clip left out of training and evaluated")
    ap.add_argument("--dataset", type=Path, help="a prepared set of the dev clips (default: prepare into --work)")
    ap.add_argument("--prior", type=Path, help="a prior already trained without the holdout (skips training)")
    ap.add_argument("--work", type=Path, default=Path("out/prior_bench"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--static-steps", type=int, default=400)
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_prior.json)")
    args = ap.parse_args()
    print(f"machine: {machine_line()}")
    args.work.mkdir(parents=True, exist_ok=True)
    training = None
    prior = args.prior
    if prior is None:
        dataset = args.dataset or prepare_set(args.videos, args.work / "set", args.size)
        training = train_prior(dataset, args.work / "run", args.steps, args.static_steps, args.holdout)
        prior = args.work / "run" / "prior.npz"
    video = args.videos / f"{args.holdout}.mp4"
    results, rows = {}, []
    for name, path in (("without_prior", None), ("with_prior", prior)):
        results[name], row = score(video, path)
        if row is not None:
            rows.append(row)
        r = results[name]
        print(f"{name:14s} PSNR {r['psnr_db']:.2f} dB, SSIM {r['ssim']:.3f}, mouth {r['mouth_psnr_db']:.2f} dB, identity {r['identity_distance']}, "
              f"views {r['view_identity_distance']}, build {r['build_s']} s", flush=True)  # fmt: skip
    if rows:
        from sega.io import save_png

        save_png(GALLERY, np.concatenate(rows, 0))
        print(f"wrote {GALLERY}")
    w, p = results["without_prior"], results["with_prior"]

    def gain(key: str):
        return None if w.get(key) is None or p.get(key) is None else round(p[key] - w[key], 4)

    def median_id(r: dict, yaws: tuple[str, ...]):
        vals = [r["view_identity_distance"].get(y) for y in yaws]
        vals = [v for v in vals if v is not None]
        return round(float(np.median(vals)), 4) if vals else None

    figures = {
        "holdout": args.holdout,
        "training": None if training is None else {k: training[k] for k in ("steps", "seconds", "samples_per_s", "world_size", "fixed_batch_loss",
                                                                            "validation", "train_clips")},
        "without_prior": w,
        "with_prior": p,
        "gain": {k: gain(k) for k in ("psnr_db", "ssim", "mouth_psnr_db", "identity_distance")},
        "median_identity_distance_30": {"without": median_id(w, ("30", "-30")), "with": median_id(p, ("30", "-30"))},
        "median_identity_distance_45": {"without": median_id(w, ("45", "-45")), "with": median_id(p, ("45", "-45"))},
    }  # fmt: skip
    print(json.dumps(figures["gain"]))
    print(f"wrote {write_record('bench_prior', figures, args.json)}")


if __name__ == "__main__":
    main()
