"""The whole head from one photo: identity, silhouette and painted faces at yaw 0, ±30, ±45, ±90 and 180.

For every photo in ``--photos`` (default ``../shared/dev-media/photos``, test material that is never
committed) an avatar is built (``--preset``) and rendered around the head (``Avatar.orbit_camera``,
canonical pose, fitted expression). Per photo and view:

* ``identity_distance``: dlib's 128-d face embedding of the render against the photo's (the
  face_recognition convention: below 0.6 is the same person); None where dlib finds no face in the
  render (``face_found`` false);
* ``mediapipe_face`` at ±90 degrees: whether MediaPipe finds a face with its landmarks (the face mesh,
  as the product's own detection) in the profile render. A real profile is not found there; a face
  painted onto the side of the head is. ``mediapipe_boxes``: its box detectors' count, for reference
  (they fire on real profiles as well);
* the input view: IoU of the avatar's alpha with the photo's person mask above the shoulders
  (``sega.view_checks.scored_window``: hair included, shoulders and clothes not, nor the crop's padding
  past the photo's edge), and PSNR / SSIM inside
  the face mask (the frontal view must not get worse).

A gallery (source crop | input view | yaw 0, +30, -30, +45, -45, +90, -90, 180; a row per photo) goes to
``--out`` (not docs/: the dev photos are test material only; ``scripts/make_view_gallery.py`` makes the
committed gallery from the example photo).

    python -m bench.bench_views [--preset default] [--out out/views]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np

from bench.record import write_record
from sega.errors import SegaError
from sega.face import FaceDetector
from sega.headmodel.ict import load_ict
from sega.io import load_photo, save_png
from sega.landmarks import with_mediapipe_embedding
from sega.view_checks import VIEW_YAWS_DEG, view_report, view_row

DEV_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "photos"
# Targets (issue 17), default preset, over the dev photos.
MAX_MEDIAN_ID_30 = 0.32
MAX_MEDIAN_ID_45 = 0.40
MIN_INPUT_IOU = 0.95


def _median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.median(vals)), 4) if vals else None


def summarise(rows: dict, preset: str) -> dict:
    built = [r for r in rows.values() if "error" not in r]

    def at(yaws):
        return [r["views"][str(y)] for r in built for y in yaws]

    s30, s45, s90 = at((30, -30)), at((45, -45)), at((90, -90))
    return {
        "preset": preset, "photos": len(rows), "built": len(built),
        "median_identity_distance_by_yaw": {str(y): _median(r["views"][str(y)]["identity_distance"] for r in built) for y in VIEW_YAWS_DEG},
        "median_identity_distance_30": _median(v["identity_distance"] for v in s30),
        "median_identity_distance_45": _median(v["identity_distance"] for v in s45),
        "renders_up_to_45_without_face": sum(not v["face_found"] for v in at((0, 30, -30, 45, -45))),
        "renders_90_with_mediapipe_face": sum(bool(v["mediapipe_face"]) for v in s90),
        "renders_90_with_mediapipe_box": sum(bool(v.get("mediapipe_boxes")) for v in s90),
        "input_iou_min": min((r["input_iou"] for r in built), default=None),
        "input_iou_median": _median(r["input_iou"] for r in built),
        "input_face_psnr_db_mean": round(float(np.mean([r["input_face_psnr_db"] for r in built])), 3) if built else None,
        "input_face_ssim_mean": round(float(np.mean([r["input_face_ssim"] for r in built])), 4) if built else None,
        "build_s_mean": round(float(np.mean([r["build_s"] for r in built])), 1) if built else None,
        "targets": {"median_identity_distance_30": f"<= {MAX_MEDIAN_ID_30}", "median_identity_distance_45": f"<= {MAX_MEDIAN_ID_45}",
                    "renders_up_to_45_without_face": "== 0", "renders_90_with_mediapipe_face": "== 0",
                    "input_iou_min": f">= {MIN_INPUT_IOU}"},
    }  # fmt: skip


def main() -> None:
    from sega.avatar import AvatarOptions
    from sega.avatar.build import build_avatar
    from sega.evaluate import identity_embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=DEV_PHOTOS)
    ap.add_argument("--only", nargs="*", default=None, help="photo file names to run; default all")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--size", type=int, default=384, help="side (px) of the view renders")
    ap.add_argument("--out", type=Path, default=Path("out/views"))
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_views.json)")
    args = ap.parse_args()
    embed = identity_embedder()
    if embed is None:
        raise SystemExit("bench_views needs dlib's face models: pip install -r requirements-dev.txt")
    model = with_mediapipe_embedding(load_ict())
    args.out.mkdir(parents=True, exist_ok=True)
    rows, gallery = {}, []
    photos = sorted(p for p in args.photos.iterdir() if p.is_file() and (args.only is None or p.name in args.only))
    with FaceDetector() as det:
        for path in photos:
            photo = load_photo(path)
            t0 = time.perf_counter()
            try:
                avatar, data = build_avatar(photo, model, AvatarOptions.preset(args.preset), detector=det)
            except SegaError as err:
                rows[path.name] = {"error": str(err)}
                print(f"{path.name:34s} refused: {err}", flush=True)
                continue
            build_s = time.perf_counter() - t0
            report, renders = view_report(avatar, data, photo, det, embed, args.size)
            report["build_s"] = round(build_s, 1)
            rows[path.name] = report
            gallery.append(view_row(data.target, renders, args.size))
            ids = " ".join(f"{y:+d}:{'-' if v['identity_distance'] is None else format(v['identity_distance'], '.2f')}"
                           for y, v in ((int(k), v) for k, v in report["views"].items()))  # fmt: skip
            print(f"{path.name:34s} iou {report['input_iou']:.3f} face {report['input_face_psnr_db']:.2f} dB "
                  f"id {ids} mp90 {report['views']['90']['mediapipe_face']}/{report['views']['-90']['mediapipe_face']} "
                  f"{build_s:.0f} s", flush=True)  # fmt: skip
            save_png(args.out / "views_gallery.png", np.concatenate(gallery, 0))
    summary = summarise(rows, args.preset)
    print({k: v for k, v in summary.items() if k != "targets"})
    print(f"wrote {write_record('bench_views', {'summary': summary, 'per_photo': rows}, args.json)}")


if __name__ == "__main__":
    main()
