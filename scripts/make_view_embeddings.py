"""View-dependent MediaPipe landmark embeddings: where each of the 478 points lies on the head model's
surface when the face is seen from a given yaw / pitch.

Why: MediaPipe's points slide over the face as it turns (a cheek-contour point is where the
silhouette is; even nose and lid points move by a pixel or two), so one embedding for every view
leaves 3-4 degrees of head-pose error in tracking. With an embedding per view the tracker
(``sega.track``) interpolates the embedding for the current head pose (about 2 degrees).

Method (same as ``make_landmark_embedding.py``, per view bin): render the painted neutral head model
with ``IDENTITIES`` identities at yaw/pitch on a grid (plus small offsets), detect, back-project each
point through the triangle-id buffer onto that identity's surface, express it on the template as
(triangle, barycentrics), take the median 3D point on the template per bin and snap it to the surface.
Points never hit in a bin keep the global embedding. Plain landmarks, although the tracker averages
each frame with its mirror image (``sega.face.TRACK_MIRROR``): embeddings made from mirror-averaged
detections gave the same head-pose error on the check videos (1.54 vs 1.55 degrees, measured with
a one-off variant of this script).

Writes ``sega/data/<model>_mediapipe478_views.npz``. Usage: python scripts/make_view_embeddings.py [--ict-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np
import torch

# Run as ``python scripts/make_view_embeddings.py``: Python puts scripts/ on the path, so its sibling imports.
from make_landmark_embedding import IRIS_POINTS, snap_to_surface

from sega.camera import orbit_camera
from sega.face import FaceDetector
from sega.headmodel.ict import load_ict
from sega.landmarks import MP_NUM_LANDMARKS, view_embedding_file, with_mediapipe_embedding
from sega.meshraster import render_mesh, shade
from sega.synthetic import FACE_CENTRE, paint

DATA = Path(__file__).resolve().parents[1] / "sega" / "data"
YAWS = (-35.0, -28.0, -21.0, -14.0, -7.0, 0.0, 7.0, 14.0, 21.0, 28.0, 35.0)  # degrees, bin centres
PITCHES = (-20.0, -10.0, 0.0, 10.0, 20.0)  # degrees, bin centres
OFFSETS = ((1.5, 1.0), (-1.5, -1.0))  # (yaw, pitch) degrees added per sample
IDENTITIES = 8  # identities per view: the template and random faces (2 -> 8: head-pose error on painted heads of
# other identities 1.76 -> 1.57 degrees; 16 gave no further gain there)
IDENTITY_STD = 0.8
IMAGE_SIZE, DISTANCE, FOV_DEG = 512, 0.7, 25.0
SEED = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ict-dir", type=Path)
    ap.add_argument("--out", type=Path, help="write here instead of sega/data (experiments)")
    args = ap.parse_args()
    model = with_mediapipe_embedding(load_ict(args.ict_dir))
    glob = model.landmarks["mediapipe478"]
    regions = ("face", "head_neck", "eyeball_left", "eyeball_right", "mouth_interior", "teeth")
    face_mask = model.region_face_mask(*regions)
    eye_faces = model.region_face_mask("eyeball_left", "eyeball_right")
    skin_faces = model.region_face_mask("face", "head_neck")
    albedo = paint(model)
    template = model.vertices.astype(np.float64)
    rng = np.random.default_rng(SEED)
    buf = model.torch_buffers()
    shapes = [np.zeros(model.num_identity, np.float32)] + [
        (rng.standard_normal(model.num_identity) * IDENTITY_STD).astype(np.float32) for _ in range(IDENTITIES - 1)]  # fmt: skip
    verts = []
    with torch.no_grad():
        for ident in shapes:
            verts.append(model.deform(buf, torch.as_tensor(ident), torch.zeros(model.num_expressions)).numpy())
    face_ids = np.tile(glob.face_ids, (len(PITCHES), len(YAWS), 1))
    bary = np.tile(glob.barycentrics, (len(PITCHES), len(YAWS), 1, 1)).astype(np.float32)
    hits = np.zeros((len(PITCHES), len(YAWS), MP_NUM_LANDMARKS), np.int32)
    with FaceDetector() as det:
        for i, pitch in enumerate(PITCHES):
            for j, yaw in enumerate(YAWS):
                samples: list[list[np.ndarray]] = [[] for _ in range(MP_NUM_LANDMARKS)]
                for v in verts:
                    for dy, dp in OFFSETS:
                        cam = orbit_camera(yaw + dy, pitch + dp, DISTANCE, FACE_CENTRE, FOV_DEG, IMAGE_SIZE, IMAGE_SIZE)
                        frags = render_mesh(v, model.faces, cam, face_mask=face_mask)
                        img = (np.clip(shade(frags, v, model.faces, cam, vertex_colors=albedo), 0, 1) * 255).astype(np.uint8)
                        try:
                            lm = det.detect(img).landmarks
                        except Exception as err:  # a view the detector misses is skipped, and reported
                            print(f"yaw {yaw + dy:+.0f} pitch {pitch + dp:+.0f}: no detection ({err})")
                            continue
                        for k, (x, y) in enumerate(lm[:, :2]):
                            r, c = int(y), int(x)
                            if not (0 <= r < IMAGE_SIZE and 0 <= c < IMAGE_SIZE) or frags.face_id[r, c] < 0:
                                continue
                            fid = int(frags.face_id[r, c])
                            if not (eye_faces if k in IRIS_POINTS else skin_faces)[fid]:
                                continue
                            samples[k].append((template[model.faces[fid]] * frags.bary[r, c][:, None]).sum(0))
                for k, s in enumerate(samples):
                    if not s:
                        continue
                    allowed = eye_faces if k in IRIS_POINTS else skin_faces
                    try:
                        face_ids[i, j, k], bary[i, j, k] = snap_to_surface(np.median(np.stack(s), axis=0), template, model.faces, allowed)
                    except ValueError:  # the median fell off the surface (samples on two sheets): keep the global point
                        continue
                    hits[i, j, k] = len(s)
                print(f"yaw {yaw:+.0f} pitch {pitch:+.0f}: {int((hits[i, j] > 0).sum())} landmarks placed")
    out = args.out or DATA / view_embedding_file(model.name)
    np.savez_compressed(out, yaws_deg=np.asarray(YAWS), pitches_deg=np.asarray(PITCHES), face_ids=face_ids.astype(np.int32),
                        barycentrics=bary, hits=hits, num_faces=model.num_faces, num_vertices=model.num_vertices)  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
