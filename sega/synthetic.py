"""Synthetic fitting cases with known ground truth (for tests and benchmarks).

A case draws a random identity (N(0, 1) per component), a sparse random expression and a camera
orbiting the face, then projects the model's landmark points exactly and adds pixel noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import Camera, orbit_camera, project_points
from .headmodel.base import HeadModel

FACE_CENTRE = np.array([0.0, 0.01, 0.05])  # metres, ICT-ish point between the eyes and the mouth

# ---- painted heads (albedo per vertex) that MediaPipe detects as faces ---------------------------
SKIN = (0.80, 0.62, 0.52)
LIPS = (0.62, 0.32, 0.32)
BROW = (0.25, 0.17, 0.12)
IRIS = (0.25, 0.17, 0.10)
PUPIL = (0.03, 0.03, 0.03)
SCLERA = (0.92, 0.90, 0.88)
MOUTH = (0.25, 0.08, 0.08)
BROW_RADIUS = 0.006  # metres around the brow landmark polyline
IRIS_COS, PUPIL_COS = 0.90, 0.98  # cosine of the angle from the eyeball's forward axis
IBUG_BROWS = (range(17, 22), range(22, 27))
IBUG_OUTER_LIPS = range(48, 60)


@dataclass(frozen=True)
class SyntheticCase:
    identity: np.ndarray  # [I]
    expression: np.ndarray  # [E]
    camera: Camera
    vertices: np.ndarray  # [V, 3] ground-truth canonical-pose vertices
    landmarks: np.ndarray  # [L, 2] projected landmark points + noise, pixels
    yaw_deg: float
    pitch_deg: float


def random_expression(model: HeadModel, rng: np.random.Generator, max_active: int = 5) -> np.ndarray:
    """[E] sparse weights: 1..max_active random expressions active with weights in [0.2, 1]."""
    e = np.zeros(model.num_expressions, dtype=np.float32)
    k = int(rng.integers(1, max_active + 1))
    idx = rng.choice(model.num_expressions, size=k, replace=False)
    e[idx] = rng.uniform(0.2, 1.0, size=k)
    return e


def random_case(
    model: HeadModel,
    rng: np.random.Generator,
    embedding: str = "mediapipe478",
    max_yaw_deg: float = 30.0,
    max_pitch_deg: float = 10.0,
    noise_px: float = 1.0,
    image_size: int = 512,
    fov_deg: float = 25.0,
    distance: float = 0.7,
    identity_scale: float = 1.0,
) -> SyntheticCase:
    """One random case; landmark noise is isotropic Gaussian with std ``noise_px`` pixels per axis."""
    ident = (rng.standard_normal(model.num_identity) * identity_scale).astype(np.float32)
    expr = random_expression(model, rng)
    yaw = float(rng.uniform(-max_yaw_deg, max_yaw_deg))
    pitch = float(rng.uniform(-max_pitch_deg, max_pitch_deg))
    cam = orbit_camera(yaw, pitch, distance, FACE_CENTRE, fov_deg, image_size, image_size)
    buf = model.torch_buffers()
    with torch.no_grad():
        verts = model.deform(buf, torch.as_tensor(ident), torch.as_tensor(expr))
        pts = model.landmarks[embedding].points(verts, buf.faces)
        k, vm = cam.torch()
        xy, _ = project_points(pts, k, vm)
    lmk = xy.numpy() + rng.normal(0.0, noise_px, size=xy.shape)
    return SyntheticCase(ident, expr, cam, verts.numpy(), lmk.astype(np.float32), yaw, pitch)


def similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama: the similarity transform of ``src [N,3]`` that best matches ``dst [N,3]``; returns aligned src."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / (s0**2).sum(1).mean()
    return scale * s0 @ rot.T + mu_d


def paint(model: HeadModel) -> np.ndarray:
    """[V, 3] albedo: skin, brows and lips from the ibug-68 landmark vertices, eyes by direction."""
    from matplotlib.path import Path as PolyPath  # lazy: matplotlib is slow to import
    v = model.vertices.astype(np.float64)
    col = np.tile(np.array(SKIN), (model.num_vertices, 1))
    emb = model.landmarks["ibug68"]
    lmk = (v[model.faces[emb.face_ids]] * emb.barycentrics[..., None]).sum(1)
    face = model.region_vertex_mask("face")
    for brow in IBUG_BROWS:
        pts = lmk[list(brow)]
        for a, b in zip(pts[:-1], pts[1:]):
            ab = b - a
            t = np.clip(((v - a) @ ab) / (ab @ ab), 0, 1)
            d = np.linalg.norm(v - (a + t[:, None] * ab), axis=1)
            col[face & (d < BROW_RADIUS)] = BROW
    lips = PolyPath(lmk[list(IBUG_OUTER_LIPS), :2])
    front = v[:, 2] > lmk[list(IBUG_OUTER_LIPS), 2].min() - 0.01
    col[face & front & lips.contains_points(v[:, :2])] = LIPS
    for side in ("eyeball_left", "eyeball_right"):
        m = model.region_vertex_mask(side)
        centre = v[m].mean(0)
        radius = np.linalg.norm(v[m] - centre, axis=1).max()
        centre = centre - np.array([0, 0, 0.2 * radius])  # the mesh centroid sits in front of the ball centre
        d = v - centre
        cos = d[:, 2] / np.linalg.norm(d, axis=1).clip(1e-9)
        col[m] = SCLERA
        col[m & (cos > IRIS_COS)] = IRIS
        col[m & (cos > PUPIL_COS)] = PUPIL
    col[model.region_vertex_mask("mouth_interior")] = MOUTH
    return col.astype(np.float32)


def render_painted_head(model: HeadModel, identity, expression, head_pose, camera: Camera, albedo: np.ndarray | None = None,
                        background: float = 1.0) -> np.ndarray:  # fmt: skip
    """A shaded render of the painted head: [H, W, 3] uint8 (a synthetic person MediaPipe can track).

    identity [I], expression [E], head_pose [6] (axis-angle radians about the model's pivot, metres).
    """
    from .geometry import apply_head_pose
    from .meshraster import render_mesh, shade

    buf = model.torch_buffers()
    with torch.no_grad():
        v = model.deform(buf, torch.as_tensor(np.asarray(identity), dtype=torch.float32), torch.as_tensor(np.asarray(expression), dtype=torch.float32))
        pose = torch.as_tensor(np.asarray(head_pose), dtype=torch.float32)
        v = apply_head_pose(v, pose[:3], pose[3:], torch.as_tensor(model.pivot, dtype=torch.float32)).numpy()
    regions = [r for r in ("face", "head_neck", "eyeball_left", "eyeball_right", "mouth_interior", "teeth") if r in model.region_names]
    frags = render_mesh(v, model.faces, camera, face_mask=model.region_face_mask(*regions))
    img = shade(frags, v, model.faces, camera, vertex_colors=paint(model) if albedo is None else albedo, background=background)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
