"""Self-reenactment fidelity on real talking-head clips: ``sega eval`` on every dev clip, from its frame 0.

For each video in ``--videos`` (default ``../shared/dev-media/videos``, test material that is never
committed): build an avatar from frame 0 (``--preset``, the eval default ``default``), drive it with the
other frames and score every ``--every``-th one against the video and against the frozen baseline
(``sega.evaluate``). Writes ``bench/results/bench_fidelity.json`` (per clip: the report's overall,
frozen, gain, teeth and eye figures, PSNR on the frames turned furthest from the source; across clips:
their means and the issue's targets) and a
figure with the first rows of every clip's contact sheet (target | driven | frozen | error) to
``--out`` (not docs/: the clips are test material only).

    python -m bench.bench_fidelity [--every 5] [--max-scored 24] [--out out/fidelity] [--clips retalking_1 ...] [--reuse]

``--reuse`` reads a clip's ``report.json`` from ``--out`` where an earlier run of the same code wrote one
(with the same preset, ``--every`` and ``--max-scored``) instead of running it again: a run split over
sessions, or one clip added. Its figure rows are then the first rows of that clip's saved contact sheet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.record import write_record
from sega.errors import SegaError
from sega.evaluate import EvalOptions, contact_sheet, evaluate_frames, sheet_images, write_report
from sega.face import FaceDetector
from sega.headmodel.ict import load_ict
from sega.io import load_photo, save_png
from sega.landmarks import with_mediapipe_embedding
from sega.presets import DEFAULT_PRESET
from sega.video import read_frames

DEV_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "videos"
SHEET_ROWS = 2  # contact-sheet rows per clip in the figure
SHEET_TILE = 160  # px
# Targets of the real-video issue (means over the clips unless noted).
TARGETS = {
    "mouth_psnr_gain_db": (">=", 1.5),  # over the frozen baseline
    "mouth_opening_error": ("<=", 0.03),
    "mouth_opening_error_ratio": ("<=", 0.5),  # driven / frozen
    "eye_opening_error": ("<=", 0.02),
    "eye_opening_error_ratio": ("<=", 0.5),  # driven / frozen
    "gaze_error_ratio": ("<=", 0.5),  # driven / frozen
    "teeth_agreement": (">=", 0.8),
    "eyes_closed_wrongly_frames": ("<=", 0),  # in total
    "pose_error_deg": ("<=", 2.5),
    "identity_distance_max": ("<=", 0.5),  # on every clip
}


def _mean(key: str, src: dict) -> float | None:
    v = src.get(key)
    return None if v is None else v["mean"]


def clip_figures(report: dict) -> dict:
    """The figures of one clip's report that the bench compares."""
    o, f = report["overall"], report["frozen"]
    return {
        "scored_frames": report["scored_frames"],
        "psnr_db": _mean("psnr_db", o), "frozen_psnr_db": _mean("psnr_db", f),
        "mouth_psnr_db": _mean("mouth_psnr_db", o), "frozen_mouth_psnr_db": _mean("mouth_psnr_db", f),
        "eye_psnr_db": _mean("eye_psnr_db", o), "frozen_eye_psnr_db": _mean("eye_psnr_db", f),
        "ssim": _mean("ssim", o),
        "mouth_opening_error": _mean("mouth_opening_error", o), "frozen_mouth_opening_error": _mean("mouth_opening_error", f),
        "eye_opening_error": _mean("eye_opening_error", o), "frozen_eye_opening_error": _mean("eye_opening_error", f),
        "gaze_error": _mean("gaze_error", o), "frozen_gaze_error": _mean("gaze_error", f),
        # the same errors between two readings of the target frames: what the landmark errors can resolve
        "reread_gaze_error": _mean("gaze_error", report.get("target_reread") or {}),
        "reread_eye_opening_error": _mean("eye_opening_error", report.get("target_reread") or {}),
        "brow_height_error": _mean("brow_height_error", o), "frozen_brow_height_error": _mean("brow_height_error", f),
        "expression_error": _mean("expression_error", o),
        "pose_error_deg": _mean("pose_error_deg", o),
        "identity_distance": _mean("identity_distance", o),
        "identity_distance_max": None if o.get("identity_distance") is None else o["identity_distance"]["max"],
        "teeth_target_frames": report["teeth"]["target_frames_with_teeth"],
        "teeth_agreement": report["teeth"]["agreement"], "frozen_teeth_agreement": report["teeth"]["frozen_agreement"],
        "eyes_closed_wrongly_frames": report["eyes_closed_wrongly"]["count"],
        # the frames whose head turned furthest from the source (the sides the photo did not show)
        "turned_min_abs_yaw_deg": None if report.get("turned") is None else report["turned"]["min_abs_yaw_deg"],
        "turned_psnr_db": None if report.get("turned") is None else report["turned"]["psnr_db"],
        "seconds": round(report["seconds"], 1),
    }  # fmt: skip


def saved_sheet_rows(path: Path, tile: int = 256) -> np.ndarray:
    """The first ``SHEET_ROWS`` rows of a contact sheet that ``write_report`` saved (rows ``tile`` px tall),
    at ``SHEET_TILE`` px."""
    from PIL import Image

    sheet = load_photo(path)[: SHEET_ROWS * tile]
    h, w = sheet.shape[:2]
    return np.asarray(Image.fromarray(sheet).resize((int(round(w * SHEET_TILE / tile)), int(round(h * SHEET_TILE / tile))), Image.Resampling.BILINEAR))


def across(clips: dict[str, dict]) -> dict:
    """Means over the clips, the derived ratios the targets use, and each target's verdict."""
    ok = [c for c in clips.values() if "error" not in c]

    def mean(key: str) -> float | None:
        vals = [c[key] for c in ok if c.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    out = {k: mean(k) for k in ok[0]} if ok else {}
    if ok:
        out["mouth_psnr_gain_db"] = mean("mouth_psnr_db") - mean("frozen_mouth_psnr_db")
        out["gaze_error_ratio"] = mean("gaze_error") / max(mean("frozen_gaze_error"), 1e-9)
        out["mouth_opening_error_ratio"] = mean("mouth_opening_error") / max(mean("frozen_mouth_opening_error"), 1e-9)
        out["eye_opening_error_ratio"] = mean("eye_opening_error") / max(mean("frozen_eye_opening_error"), 1e-9)
        out["eyes_closed_wrongly_frames"] = int(sum(c["eyes_closed_wrongly_frames"] for c in ok))
        out["identity_distance_max"] = max((c["identity_distance_max"] for c in ok if c["identity_distance_max"] is not None), default=None)
    verdicts = {}
    for key, (op, bound) in TARGETS.items():
        v = out.get(key)
        verdicts[key] = None if v is None else bool(v >= bound if op == ">=" else v <= bound)
    out["clips"] = len(ok)
    return {"means": out, "targets": {k: f"{op} {b}" for k, (op, b) in TARGETS.items()}, "met": verdicts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=DEV_VIDEOS)
    ap.add_argument("--clips", nargs="*", help="clip names (file stems) to run; default all")
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--max-scored", type=int, default=24, help="score at most this many frames per clip")
    ap.add_argument("--out", type=Path, default=Path("out/fidelity"))
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_fidelity.json)")
    ap.add_argument("--reuse", action="store_true", help="read the report.json a clip already has under --out (same code and options)")
    args = ap.parse_args()
    model = with_mediapipe_embedding(load_ict())
    videos = sorted(p for p in args.videos.glob("*.mp4") if not args.clips or p.stem in args.clips)
    options = EvalOptions(every=args.every, preset=args.preset, max_scored=args.max_scored)
    clips, sheets = {}, []
    reused = []
    for video in videos:
        t0 = time.perf_counter()
        saved = args.out / video.stem / "report.json"
        if args.reuse and saved.is_file():
            report = json.loads(saved.read_text(encoding="utf-8"))
            ran = {k: report["options"][k] for k in ("preset", "every", "max_scored")}
            if ran != {"preset": options.preset, "every": options.every, "max_scored": options.max_scored}:
                raise SystemExit(f"{saved} was written with {ran}; run without --reuse or with those options")
            clips[video.stem] = clip_figures(report)
            sheets.append(saved_sheet_rows(saved.with_name("contact_sheet.png")))
            reused.append(video.stem)
            print(f"{video.stem:24s} reused {saved}", flush=True)
            continue
        try:
            with FaceDetector() as det:
                report = evaluate_frames(read_frames(video), model, det, options)
        except SegaError as err:
            clips[video.stem] = {"error": str(err)}
            print(f"{video.stem:24s} error: {err}", flush=True)
            continue
        write_report(report, args.out / video.stem)
        clips[video.stem] = c = clip_figures(report)
        sheets.append(contact_sheet(sheet_images(report, SHEET_ROWS), tile=SHEET_TILE))
        print(f"{video.stem:24s} PSNR {c['psnr_db']:.2f} (frozen {c['frozen_psnr_db']:.2f}), mouth {c['mouth_psnr_db']:.2f} "
              f"(frozen {c['frozen_mouth_psnr_db']:.2f}); errors (IOD) mouth {c['mouth_opening_error']:.3f}/{c['frozen_mouth_opening_error']:.3f}, "
              f"eyes {c['eye_opening_error']:.3f}/{c['frozen_eye_opening_error']:.3f}, gaze {c['gaze_error']:.3f}/{c['frozen_gaze_error']:.3f}; "
              f"teeth {c['teeth_agreement']}, closed eyes {c['eyes_closed_wrongly_frames']}, pose {c['pose_error_deg']:.2f} deg, "
              f"identity {c['identity_distance']}; {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    if sheets:
        width = max(s.shape[1] for s in sheets)
        save_png(args.out / "fidelity_sheets.png", np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in sheets]))
    summary = across(clips)
    print("means over clips:", {k: round(v, 4) if isinstance(v, float) else v for k, v in summary["means"].items()})
    print("targets met:", summary["met"])
    options_used = {"preset": args.preset, "every": args.every, "max_scored": args.max_scored, "reused_reports": reused}
    print(f"wrote {write_record('bench_fidelity', {'options': options_used, 'summary': summary, 'per_clip': clips}, args.json)}")


if __name__ == "__main__":
    main()
