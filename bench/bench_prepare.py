"""Preparing a training set: frames per second of ``sega.train.prepare`` on dev clips, one process and a pool.

For ``--clips`` dev videos (default: three 512 px real speakers from ``../shared/dev-media/videos``, test
material that is never committed), all frames of each (or the first ``--max-frames``) are prepared at ``--size``
(512 px crops) with ``--workers`` 1 and then 2 processes, into a temporary folder. Prints and records:

* ``fps_by_workers``: frames prepared per second of wall time (tracking, crops, masks, the UV unwraps,
  compressed shards, checksums), the pool's start-up included [target: >= 15 frames/s at 512 px on 2 cores];
* ``pool_speedup``: 2 workers over 1, measured in the same run;
* ``bytes_per_frame``: the set's size on disk per frame.

    python -m bench.bench_prepare [--clips retalking_1.mp4 ...] [--max-frames 0] [--size 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

from bench.record import machine_line, write_record
from sega.train.prepare import PrepareOptions, prepare

DEV_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "videos"
DEFAULT_CLIPS = ("sadtalker_wda_aoc.mp4", "sadtalker_wda_kh.mp4", "xportrait_driving.mp4")  # 512 px sources
TARGETS = {"fps_best": ">= 15 (512 px, 2 cores)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=DEV_VIDEOS)
    ap.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS))
    ap.add_argument("--max-frames", type=int, default=0, help="frames per clip (0: all; the one-off identity fit per clip is amortised as in real use)")
    ap.add_argument("--size", type=int, default=512, help="crop side (px)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_prepare.json)")
    args = ap.parse_args()
    print(f"machine: {machine_line()}")
    sources = [args.videos / c for c in args.clips]
    fps, per_frame_bytes, frames = {}, None, 0
    for workers in args.workers:
        options = PrepareOptions(size=args.size, max_frames=args.max_frames, workers=workers)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            manifest = prepare(sources, Path(tmp) / "set", options)
            seconds = time.perf_counter() - t
            frames = sum(c["frames"] for c in manifest["clips"].values())
            size = sum(p.stat().st_size for p in (Path(tmp) / "set").rglob("*") if p.is_file())
        if manifest["failed"]:
            print(f"failed: {manifest['failed']}")
        fps[str(workers)] = round(frames / seconds, 2)
        per_frame_bytes = int(size / max(frames, 1))
        print(f"{workers} worker(s): {frames} frames of {len(manifest['clips'])} clips in {seconds:.1f} s = {frames / seconds:.2f} frames/s "
              f"({per_frame_bytes / 1e3:.0f} kB a frame on disk)")  # fmt: skip
    figures = {
        "clips": args.clips,
        "frames": frames,
        "size_px": args.size,
        "fps_by_workers": fps,
        "fps_best": max(fps.values()),
        "pool_speedup": round(fps["2"] / fps["1"], 2) if {"1", "2"} <= set(fps) else None,
        "bytes_per_frame": per_frame_bytes,
        "targets": TARGETS,
    }
    print(f"wrote {write_record('bench_prepare', figures, args.json)}")


if __name__ == "__main__":
    main()
