"""Training the prior: seconds per step of ``python -m sega train`` on one process with one CPU thread, and the
throughput of ``torchrun --nproc_per_node 2`` (gloo DDP, one thread each) against it, measured in the same run.

A prepared set is made first (``--clips`` dev videos, test material never committed, at ``--size`` px, every
3rd frame, at most 40 a clip) unless ``--dataset`` names one. Each run trains ``--steps`` steps of the default
``TrainOptions`` (batch 4 a process; the first ``--static-steps`` are the static stage) through the real CLI;
the per-step times come from its log.csv, the first ``WARMUP_STEPS`` left out (shard reads, first calls).
Prints and records:

* ``step_s_1proc``: median seconds a step, one process, one thread, at ``size`` px [target: <= 1 s at 256²];
  also by stage (``step_s_by_stage``);
* ``samples_per_s``: per process count; ``ddp_speedup``: 2 processes over 1 [target: >= 1.6].

    python -m bench.bench_train [--dataset DIR] [--steps 24] [--size 256]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

from bench.record import machine_line, write_record

DEV_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "videos"
DEFAULT_CLIPS = ("retalking_1.mp4", "tpsmm_driving.mp4", "sadtalker_wda_kh.mp4")
WARMUP_STEPS = 3  # steps left out of the timings
TARGETS = {"step_s_1proc": "<= 1.0", "ddp_speedup": ">= 1.6"}


def prepared_set(videos: Path, clips: list[str], size: int, root: Path) -> Path:
    from sega.train.prepare import PrepareOptions, prepare

    manifest = prepare([videos / c for c in clips], root / "set", PrepareOptions(size=size, every=3, max_frames=40, workers=2))
    if manifest["failed"]:
        print(f"failed: {manifest['failed']}")
    return root / "set"


def run_training(dataset: Path, out: Path, steps: int, static_steps: int, procs: int, val_clip: str) -> dict:
    """Train through the CLI -> {median step s overall and by stage, samples/s}."""
    args = ["-m", "sega", "train", str(dataset), "-o", str(out), "--steps", str(steps), "--static-steps", str(static_steps),
            "--threads", "1", "--val-every", "0", "--checkpoint-every", "0", "--val-clips", val_clip, "--val-frames", "1", "--quiet"]  # fmt: skip
    cmd = [sys.executable, *args] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                                      str(procs), *args]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if run.returncode:
        raise SystemExit(f"training failed:\n{run.stderr[-3000:]}")
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[WARMUP_STEPS:]
    summary = json.loads((out / "summary.json").read_text())
    secs = [float(r["seconds"]) for r in rows]
    by_stage = {s: round(statistics.median([float(r["seconds"]) for r in rows if r["stage"] == s]), 4)
                for s in ("static", "dynamic") if any(r["stage"] == s for r in rows)}  # fmt: skip
    step = statistics.median(secs)
    batch = json.loads((out / "config.json").read_text())["options"]["batch"]
    return {"step_s": round(step, 4), "step_s_by_stage": by_stage, "samples_per_s": round(batch * procs / step, 3),
            "ranks_equal": summary["ranks_equal"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, help="a prepared set (default: prepare --clips into a temporary folder)")
    ap.add_argument("--videos", type=Path, default=DEV_VIDEOS)
    ap.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS))
    ap.add_argument("--size", type=int, default=256, help="crop side (px) of the set made here")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--static-steps", type=int, default=12)
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_train.json)")
    args = ap.parse_args()
    print(f"machine: {machine_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or prepared_set(args.videos, args.clips, args.size, Path(tmp))
        from sega.train.dataset import read_manifest

        manifest = read_manifest(dataset)
        clips = sorted(manifest["clips"])
        size = manifest["options"]["size"]
        runs = {}
        for procs in (1, 2):
            runs[procs] = run_training(dataset, Path(tmp) / f"run{procs}", args.steps, args.static_steps, procs, clips[-1])
            print(f"{procs} process(es): {runs[procs]['step_s']:.3f} s a step ({runs[procs]['step_s_by_stage']}), "
                  f"{runs[procs]['samples_per_s']:.2f} samples/s")  # fmt: skip
    speedup = runs[2]["samples_per_s"] / runs[1]["samples_per_s"]
    print(f"DDP speedup, 2 processes over 1: {speedup:.2f}x")
    figures = {
        "size_px": size,
        "clips": len(clips),
        "steps": args.steps,
        "batch_per_process": 4,
        "step_s_1proc": runs[1]["step_s"],
        "step_s_by_stage": runs[1]["step_s_by_stage"],
        "step_s_2proc": runs[2]["step_s"],
        "samples_per_s": {"1": runs[1]["samples_per_s"], "2": runs[2]["samples_per_s"]},
        "ddp_speedup": round(speedup, 2),
        "ranks_equal": runs[2]["ranks_equal"],
        "targets": TARGETS,
    }
    print(f"wrote {write_record('bench_train', figures, args.json)}")


if __name__ == "__main__":
    main()
