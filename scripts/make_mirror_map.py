"""Which MediaPipe landmark is the mirror image of which: ``sega/data/mediapipe_mirror.json``.

Why: the tracker averages each frame's landmarks with those of the horizontally flipped frame
(``sega.face.FaceDetector.track``, ``mirror=True``); a left-right asymmetric bias of the landmark
model then cancels. On the flipped image FaceMesh calls the subject's right lid corner "left", so
the flipped landmarks must be re-indexed: point ``mirror[i]`` of the flipped image is point ``i``.

Method (reproducible, no external data): detect the landmarks of frontal faces (skimage's astronaut
and painted ICT heads of a few identities) and of their flipped images, flip the latter back, and
solve the assignment that puts every flipped point on an original one (Hungarian, cost summed over
the faces, in inter-ocular distances). The map must come out an involution (mirror[mirror[i]] == i)
that swaps the left and right eye, brow and iris groups; the script checks both.

Usage: python scripts/make_mirror_map.py [--ict-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from sega.camera import orbit_camera
from sega.face import FaceDetector
from sega.fit import interocular
from sega.headmodel.ict import load_ict
from sega.landmarks import MP_MIRROR_FILE, MP_NUM_LANDMARKS, mediapipe_groups
from sega.synthetic import FACE_CENTRE, paint, render_painted_head

DATA = Path(__file__).resolve().parents[1] / "sega" / "data"
PAINTED_IDENTITIES = 4  # painted heads besides the photo: the template and random faces
IDENTITY_STD = 0.8
IMAGE_SIZE, DISTANCE, FOV_DEG = 512, 0.7, 25.0
MAX_MEAN_COST = 0.03  # inter-ocular distances: a flipped point further than this on average means a bad map
SEED = 0


def flipped_landmarks(det: FaceDetector, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(landmarks [L, 2] of img, landmarks [L, 2] of the flipped img, flipped back to img's x)."""
    a = det.detect(img).landmarks[:, :2]
    b = det.detect(np.ascontiguousarray(img[:, ::-1])).landmarks[:, :2].copy()
    b[:, 0] = img.shape[1] - b[:, 0]
    return a, b


def main() -> None:
    from skimage import data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ict-dir", type=Path)
    args = ap.parse_args()
    model = load_ict(args.ict_dir)
    cam = orbit_camera(0.0, 0.0, DISTANCE, FACE_CENTRE, FOV_DEG, IMAGE_SIZE, IMAGE_SIZE)
    albedo = paint(model)
    rng = np.random.default_rng(SEED)
    identities = [np.zeros(model.num_identity, np.float32)] + [
        (rng.standard_normal(model.num_identity) * IDENTITY_STD).astype(np.float32) for _ in range(PAINTED_IDENTITIES - 1)]  # fmt: skip
    neutral, still = np.zeros(model.num_expressions, np.float32), np.zeros(6, np.float32)
    images = [data.astronaut()] + [render_painted_head(model, ident, neutral, still, cam, albedo) for ident in identities]
    cost = np.zeros((MP_NUM_LANDMARKS, MP_NUM_LANDMARKS))
    with FaceDetector() as det:
        for img in images:
            a, b = flipped_landmarks(det, img)
            cost += np.linalg.norm(a[:, None] - b[None], axis=-1) / interocular(a)
    rows, mirror = linear_sum_assignment(cost)
    mean_cost = float(cost[rows, mirror].mean() / len(images))
    if not (mirror[mirror] == np.arange(MP_NUM_LANDMARKS)).all():
        raise SystemExit("the assignment is not an involution: the faces are not frontal enough")
    groups = mediapipe_groups()
    for left in ("left_eye", "left_eyebrow", "left_iris"):
        right = left.replace("left", "right")
        if set(mirror[list(groups[left])].tolist()) != set(groups[right]):
            raise SystemExit(f"the map does not swap {left} and {right}")
    if mean_cost > MAX_MEAN_COST:
        raise SystemExit(f"flipped points lie {mean_cost:.3f} inter-ocular distances from their partners (> {MAX_MEAN_COST})")
    out = DATA / MP_MIRROR_FILE
    out.write_text(json.dumps({"mirror": mirror.tolist()}) + "\n")
    print(f"wrote {out}: {int((mirror == np.arange(MP_NUM_LANDMARKS)).sum())} points on the midline, "
          f"mean distance to the partner {mean_cost:.4f} inter-ocular distances over {len(images)} faces")  # fmt: skip


if __name__ == "__main__":
    main()
