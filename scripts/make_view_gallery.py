"""The committed whole-head gallery (docs/views_gallery.png): the example photo (skimage's astronaut,
public domain) built with a preset and rendered at yaw 0, +-30, +-45, +-90 and 180, next to the source
crop and the input-view render (``sega.view_checks``, as ``bench.bench_views`` draws each dev photo; the
dev photos themselves are test material that is never committed).

    .venv/bin/python scripts/make_view_gallery.py [--preset default] [--out docs/views_gallery.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np


def main() -> None:
    from sega.avatar import AvatarOptions
    from sega.avatar.build import build_avatar
    from sega.evaluate import identity_embedder
    from sega.examples import example_photo
    from sega.face import FaceDetector
    from sega.headmodel.ict import load_ict
    from sega.io import load_photo, save_png
    from sega.landmarks import with_mediapipe_embedding
    from sega.view_checks import view_report, view_row

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("docs/views_gallery.png"))
    args = ap.parse_args()
    embed = identity_embedder() or (lambda img: None)
    photo = load_photo(example_photo())
    with FaceDetector() as det:
        avatar, data = build_avatar(photo, with_mediapipe_embedding(load_ict()), AvatarOptions.preset(args.preset), detector=det)
        report, renders = view_report(avatar, data, photo, det, embed, args.size)
    save_png(args.out, view_row(data.target, renders, args.size))
    ids = {k: v["identity_distance"] for k, v in report["views"].items()}
    print(f"wrote {args.out}: input IoU {report['input_iou']}, identity distance by yaw {ids}, {avatar.num_hair} hair Gaussians")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
