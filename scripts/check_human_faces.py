"""Check the human-face threshold of ``sega.face_check`` on people and animals (reproducible, offline).

People: the dev photos (``../shared/dev-media/photos``) as they are, rolled +-30 degrees and mirrored,
scikit-image's astronaut and matplotlib's Grace Hopper, and every 6th frame of the dev videos.
Animals: crops, sizes, rolls and mirrors of scikit-image's cat and Gradio's bundled cheetah and lion
photos (and a CGI tree creature), kept where MediaPipe finds a face at all (the others are refused
before the check runs). Prints each group's evidence range and writes JSON with every value.

    python scripts/check_human_faces.py [--out human_faces.json] [--every 6]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from sega.errors import FaceNotFoundError
from sega.face import FaceDetector
from sega.face_check import MIN_HUMAN_EVIDENCE, human_face_evidence
from sega.io import load_photo

REPO = Path(__file__).resolve().parents[1]
DEV_MEDIA = REPO.parent / "shared" / "dev-media"
ROLLS_DEG = (-30, 30)
ANIMAL_CROPS = {  # name -> crop boxes (fractions x0, y0, x1, y1) around the animal's face
    "cat": [(0, 0, 1, 1), (0.05, 0.05, 0.75, 0.95), (0.1, 0.15, 0.6, 0.85)],
    "cheetah1.jpg": [(0, 0, 1, 1), (0.1, 0.05, 0.9, 0.75), (0.2, 0.15, 0.8, 0.6)],
    "lion.jpg": [(0, 0, 1, 1), (0.15, 0, 0.7, 0.6), (0.25, 0.1, 0.55, 0.45)],
    "groot.jpeg": [(0, 0, 1, 1), (0.3, 0, 0.75, 0.9)],
}
ANIMAL_SIDES = (256, 512, 1024)
ANIMAL_ROLLS_DEG = (0, -15, 15)


def _rolled(img: np.ndarray, deg: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).rotate(deg, resample=Image.BICUBIC, fillcolor=(128, 128, 128)))


def people(every: int):
    from skimage import data

    import matplotlib

    photos = [("astronaut", data.astronaut()),
              ("grace_hopper", load_photo(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))]  # fmt: skip
    photos += [(p.name, load_photo(p)) for p in sorted((DEV_MEDIA / "photos").glob("*"))]
    for name, img in photos:
        yield name, img
        for deg in ROLLS_DEG:
            yield f"{name} rolled {deg}", _rolled(img, deg)
        yield f"{name} mirrored", np.ascontiguousarray(img[:, ::-1])
    from sega.video import read_frames

    for video in sorted((DEV_MEDIA / "videos").glob("*.mp4")):
        for i, frame in enumerate(read_frames(video).frames[::every]):
            yield f"{video.name} frame {i * every}", frame


def animals():
    from skimage import data

    import gradio

    media = Path(gradio.__file__).parent / "media_assets" / "images"
    for name, boxes in ANIMAL_CROPS.items():
        img = data.chelsea() if name == "cat" else load_photo(media / name)
        h, w = img.shape[:2]
        for b, (x0, y0, x1, y1) in enumerate(boxes):
            crop = Image.fromarray(img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)])
            for side in ANIMAL_SIDES:
                k = side / max(crop.size)
                sized = np.asarray(crop.resize((max(64, int(crop.width * k)), max(64, int(crop.height * k))), Image.BICUBIC))
                for mirror in (False, True):
                    for deg in ANIMAL_ROLLS_DEG:
                        out = _rolled(sized, deg) if deg else sized
                        yield f"{name} box{b} {side}px roll {deg}{' mirrored' if mirror else ''}", np.ascontiguousarray(out[:, ::-1] if mirror else out)


def evidence_of(detector: FaceDetector, img: np.ndarray) -> dict | None:
    try:
        d = detector.detect(img)
    except FaceNotFoundError:
        return None
    return human_face_evidence(img, d.landmarks, d.box, d.score).to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("human_faces.json"))
    ap.add_argument("--every", type=int, default=6, help="video frame step")
    args = ap.parse_args()
    result = {"threshold": MIN_HUMAN_EVIDENCE, "people": {}, "animals": {}}
    with FaceDetector(require_human=False) as det:
        for group, items in (("people", people(args.every)), ("animals", animals())):
            for name, img in items:
                result[group][name] = evidence_of(det, img)
    for group in ("people", "animals"):
        ev = [v["evidence"] for v in result[group].values() if v is not None]
        missed = sum(v is None for v in result[group].values())
        wrong = [k for k, v in result[group].items() if v is not None and (v["evidence"] >= MIN_HUMAN_EVIDENCE) != (group == "people")]
        print(f"{group}: {len(ev)} faces found ({missed} not found by MediaPipe), evidence {min(ev):.3f} .. {max(ev):.3f}; "
              f"on the wrong side of {MIN_HUMAN_EVIDENCE}: {len(wrong)} {wrong[:5]}")  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
