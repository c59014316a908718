"""Derive where MediaPipe's 478 face-mesh points lie on a head model's surface.

Method (reproducible, no external data): render the neutral head model shaded, with simple
painted features (brows, lips, irises) from several views with our rasteriser, run MediaPipe's
face mesh on each render, back-project every detected point through the triangle-id buffer to
the template surface, take the per-landmark median of the 3D points over views and snap it to
the closest surface point (triangle id + barycentrics).

Writes ``sega/data/<model>_mediapipe478.npz`` and ``sega/data/mediapipe_groups.json``.
Usage: python scripts/make_landmark_embedding.py [--ict-dir DIR] [--preview docs/landmark_embedding.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sega.camera import orbit_camera, project_points
from sega.face import FaceDetector
from sega.headmodel.ict import load_ict
from sega.landmarks import MP_GROUPS_FILE, MP_NUM_LANDMARKS, embedding_file
from sega.meshraster import draw_points, render_mesh, shade
from sega.synthetic import FACE_CENTRE, paint

DATA = Path(__file__).resolve().parents[1] / "sega" / "data"
YAWS = (-24.0, -12.0, 0.0, 12.0, 24.0)  # degrees
PITCHES = (-8.0, 0.0, 8.0)  # degrees
IMAGE_SIZE = 512  # pixels
DISTANCE = 0.7  # metres
FOV_DEG = 25.0
IRIS_POINTS = range(468, 478)
SNAP_RADIUS = 0.02  # metres: triangles considered when snapping a point to the surface


def mediapipe_groups() -> dict[str, list[int]]:
    from mediapipe.python.solutions import face_mesh_connections as conn

    def idx(edges):
        return sorted({i for e in edges for i in e})

    names = ["face_oval", "lips", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "left_iris", "right_iris", "nose"]
    groups = {n: idx(getattr(conn, "FACEMESH_" + n.upper())) for n in names}
    groups["left_iris"] = sorted(groups["left_iris"] + [473])  # iris centres
    groups["right_iris"] = sorted(groups["right_iris"] + [468])
    return groups


def snap_to_surface(p: np.ndarray, v: np.ndarray, faces: np.ndarray, allowed: np.ndarray) -> tuple[int, np.ndarray]:
    """Nearest point of the allowed triangles to ``p [3]`` -> (face id, barycentrics [3]).

    Projects onto each candidate triangle's plane and clamps the barycentrics (exact enough for
    points within millimetres of the surface, which back-projected samples are).
    """
    cand = np.nonzero(allowed & (np.linalg.norm(v[faces] - p, axis=2).min(1) < SNAP_RADIUS))[0]
    a, b, c = (v[faces[cand, k]] for k in range(3))
    e0, e1, d = b - a, c - a, p - a
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (d * e0).sum(1), (d * e1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bc = np.clip(np.stack([1 - w1 - w2, w1, w2], 1), 0, None)
    bc /= bc.sum(1, keepdims=True)
    q = bc[:, :1] * a + bc[:, 1:2] * b + bc[:, 2:] * c
    k = int(np.argmin(np.linalg.norm(q - p, axis=1)))
    return int(cand[k]), bc[k].astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ict-dir", type=Path)
    ap.add_argument("--preview", type=Path, help="write a PNG of the frontal render with the embedded points")
    args = ap.parse_args()

    model = load_ict(args.ict_dir)
    regions = ("face", "head_neck", "eyeball_left", "eyeball_right", "mouth_interior", "teeth")
    face_mask = model.region_face_mask(*regions)
    eye_faces = model.region_face_mask("eyeball_left", "eyeball_right")
    albedo = paint(model)
    v = model.vertices.astype(np.float64)
    samples: list[list[np.ndarray]] = [[] for _ in range(MP_NUM_LANDMARKS)]
    per_view = []
    renders = []
    with FaceDetector() as det:
        for pitch in PITCHES:
            for yaw in YAWS:
                cam = orbit_camera(yaw, pitch, DISTANCE, FACE_CENTRE, FOV_DEG, IMAGE_SIZE, IMAGE_SIZE)
                frags = render_mesh(model.vertices, model.faces, cam, face_mask=face_mask)
                img = shade(frags, model.vertices, model.faces, cam, vertex_colors=albedo)
                img8 = (np.clip(img, 0, 1) * 255).astype(np.uint8)
                try:
                    d = det.detect(img8)
                except Exception as err:  # a view the detector misses is skipped, and reported
                    print(f"yaw {yaw:+.0f} pitch {pitch:+.0f}: no detection ({err})")
                    continue
                if yaw == 0 and pitch == 0:
                    renders.append((img8, cam, d))
                hits = 0
                for i, (x, y) in enumerate(d.landmarks[:, :2]):
                    r, c = int(y), int(x)
                    if not (0 <= r < IMAGE_SIZE and 0 <= c < IMAGE_SIZE):
                        continue
                    fid = int(frags.face_id[r, c])
                    if fid < 0:
                        continue
                    if i in IRIS_POINTS and not eye_faces[fid]:
                        continue
                    b = frags.bary[r, c].astype(np.float64)
                    samples[i].append((v[model.faces[fid]] * b[:, None]).sum(0))
                    hits += 1
                per_view.append({"yaw": yaw, "pitch": pitch, "hits": hits})
                print(f"yaw {yaw:+.0f} pitch {pitch:+.0f}: {hits} landmarks on the mesh")

    skin_faces = model.region_face_mask("face", "head_neck")
    face_ids = np.zeros(MP_NUM_LANDMARKS, dtype=np.int64)
    bary = np.zeros((MP_NUM_LANDMARKS, 3), dtype=np.float32)
    valid = np.zeros(MP_NUM_LANDMARKS, dtype=bool)
    for i, s in enumerate(samples):
        if not s:
            continue
        target = np.median(np.stack(s), axis=0)
        # snap to the closest surface point of the allowed regions
        allowed = eye_faces if i in IRIS_POINTS else skin_faces
        face_ids[i], bary[i] = snap_to_surface(target, v, model.faces, allowed)
        valid[i] = True
    print(f"embedded {valid.sum()} / {MP_NUM_LANDMARKS} landmarks")

    # consistency: re-project the embedding into the frontal render and compare with the detection
    if renders:
        img8, cam, d = renders[0]
        import torch

        emb_pts = (v[model.faces[face_ids]] * bary[..., None]).sum(1)
        k, vm = cam.torch(torch.float64)
        xy, _ = project_points(torch.as_tensor(emb_pts), k, vm)
        err = np.linalg.norm(xy.numpy() - d.landmarks[:, :2], axis=1)[valid]
        iod = np.linalg.norm(d.landmarks[33, :2] - d.landmarks[263, :2])
        print(f"frontal re-projection: mean {err.mean():.2f} px, NME {err.mean() / iod:.4f}")
        if args.preview:
            out = draw_points(img8.copy(), d.landmarks[:, :2], (255, 0, 0), 1)
            out = draw_points(out, xy.numpy()[valid], (0, 255, 0), 1)
            from PIL import Image

            args.preview.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(out).save(args.preview)

    provenance = {"views": per_view, "image_size": IMAGE_SIZE, "fov_deg": FOV_DEG, "distance_m": DISTANCE, "method": __doc__.split("\n\n")[1]}
    np.savez(
        DATA / embedding_file(model.name),
        face_ids=face_ids,
        barycentrics=bary,
        valid=valid,
        num_faces=np.int64(model.num_faces),
        num_vertices=np.int64(model.num_vertices),
        provenance_json=np.frombuffer(json.dumps(provenance).encode(), dtype=np.uint8),
    )
    (DATA / MP_GROUPS_FILE).write_text(json.dumps(mediapipe_groups()))
    print(f"wrote {DATA / embedding_file(model.name)} and {DATA / MP_GROUPS_FILE}")


if __name__ == "__main__":
    main()
