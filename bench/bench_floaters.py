"""Floaters on real portraits: splat extent and off-head alpha at many expressions, per dev photo.

For every photo in ``--photos`` (default ``../shared/dev-media/photos``, test material that is never
committed) an avatar is built (``--preset``), animated at ``--expressions`` random expressions (the
displacement VAE's training distribution: one-hots such as jawOpen = 1, sparse and dense mixes in
[0, 1]) and rendered frontally at the first ``--renders`` of them (``sega.metrics.floater_report``).
Targets (issue 14): no splat std-dev beyond 0.2 head radii, mean alpha outside the head's
silhouette (grown by 0.15 head radii) at most 0.02. A contact sheet of each avatar at its fitted
expression, jawOpen, a smile and its worst expression goes to ``--out`` (not docs/: the photos are
test material only).

    python -m bench.bench_floaters [--preset default] [--expressions 200] [--out out/floaters]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np
import torch

from bench.record import write_record
from sega.avatar import Avatar, AvatarOptions
from sega.errors import SegaError
from sega.face import FaceDetector
from sega.headmodel.ict import load_ict
from sega.io import load_photo, save_png
from sega.landmarks import with_mediapipe_embedding
from sega.metrics import floater_report
from sega.nets.vae import sample_expressions

DEV_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "photos"
MAX_SPLAT_HEAD_FRACTION = 0.2
MAX_OFF_HEAD_ALPHA = 0.02
SHEET_SIZE = 192  # px per contact-sheet tile


def _sheet(avatar: Avatar, worst: np.ndarray) -> np.ndarray:
    cam = avatar.orbit_camera(0.0, size=SHEET_SIZE)
    exprs = [avatar.expression, avatar.expression_with(jawOpen=1.0), avatar.expression_with(mouthSmile_L=1.0, mouthSmile_R=1.0), worst]
    return np.concatenate([avatar.render(e, camera=cam).rgb.cpu().numpy() for e in exprs], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=DEV_PHOTOS)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--expressions", type=int, default=200)
    ap.add_argument("--renders", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("out/floaters"))
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_floaters.json)")
    args = ap.parse_args()
    model = with_mediapipe_embedding(load_ict())
    args.out.mkdir(parents=True, exist_ok=True)
    rows, sheets = {}, []
    with FaceDetector() as det:
        for photo in sorted(p for p in args.photos.iterdir() if p.is_file()):
            t0 = time.perf_counter()
            try:
                avatar = Avatar.build(load_photo(photo), model, AvatarOptions.preset(args.preset), detector=det)
            except SegaError as err:
                rows[photo.name] = {"error": str(err)}
                print(f"{photo.name:36s} refused: {err}")
                continue
            gen = torch.Generator().manual_seed(0)
            exprs = sample_expressions(args.expressions, avatar.decoders.encoder.config, gen).numpy()
            report = floater_report(avatar, exprs, renders=args.renders)
            scales = [float(avatar.animate(e).scales.max()) for e in exprs]
            report["build_s"] = round(time.perf_counter() - t0, 1)
            report["ok"] = report["max_scale_head_fraction"] <= MAX_SPLAT_HEAD_FRACTION and report["alpha_outside_max_mean"] <= MAX_OFF_HEAD_ALPHA
            rows[photo.name] = report
            sheets.append(_sheet(avatar, exprs[int(np.argmax(scales))]))
            print(f"{photo.name:36s} max splat {report['max_scale_head_fraction']:.3f} head radii, off-head alpha "
                  f"{report['alpha_outside_max_mean']:.4f} (worst render), {report['build_s']:.0f} s {'ok' if report['ok'] else 'FAIL'}", flush=True)  # fmt: skip
    if sheets:
        save_png(args.out / "floaters_sheet.png", np.clip(np.concatenate(sheets, 0), 0, 1))
    built = [r for r in rows.values() if "error" not in r]
    summary = {
        "preset": args.preset, "photos": len(rows), "built": len(built), "expressions": args.expressions,
        "max_splat_head_fraction": max((r["max_scale_head_fraction"] for r in built), default=None),
        "max_off_head_alpha": max((r["alpha_outside_max_mean"] for r in built), default=None),
        "photos_within_targets": sum(r["ok"] for r in built),
        "targets": {"max_splat_head_fraction": MAX_SPLAT_HEAD_FRACTION, "max_off_head_alpha": MAX_OFF_HEAD_ALPHA},
    }  # fmt: skip
    print(f"{summary['photos_within_targets']} of {len(built)} built avatars within the targets; worst splat "
          f"{summary['max_splat_head_fraction']:.3f} head radii, worst off-head alpha {summary['max_off_head_alpha']:.4f}")  # fmt: skip
    print(f"wrote {write_record('bench_floaters', {'summary': summary, 'per_photo': rows}, args.json)}")


if __name__ == "__main__":
    main()
