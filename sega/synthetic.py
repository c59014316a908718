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
