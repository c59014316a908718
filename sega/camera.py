"""Pinhole cameras (OpenCV axes, world-to-camera ``viewmat``; see ``sega.conventions``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .conventions import FRONTAL_CAMERA_ROTATION


@dataclass(frozen=True)
class Camera:
    """One camera. Arrays are float64 numpy; use ``.torch()`` for tensors."""

    K: np.ndarray  # [3, 3] intrinsics in pixels
    viewmat: np.ndarray  # [4, 4] world-to-camera
    width: int  # pixels
    height: int  # pixels

    def torch(self, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
        """(K [3, 3], viewmat [4, 4]) as tensors."""
        return (torch.as_tensor(self.K, dtype=dtype, device=device), torch.as_tensor(self.viewmat, dtype=dtype, device=device))

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "viewmat": self.viewmat.tolist(), "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(np.asarray(d["K"], dtype=np.float64), np.asarray(d["viewmat"], dtype=np.float64), int(d["width"]), int(d["height"]))

    @property
    def position(self) -> np.ndarray:
        """[3] camera centre in world coordinates."""
        r, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -r.T @ t


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """[3, 3] K with square pixels and the principal point at the image centre."""
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length (pixels) giving a horizontal field of view of ``fov_deg`` over ``size`` pixels."""
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2.0)


def orbit_camera(
    yaw_deg: float,
    pitch_deg: float = 0.0,
    distance: float = 1.0,
    target: np.ndarray | None = None,
    fov_deg: float = 20.0,
    width: int = 512,
    height: int = 512,
) -> Camera:
    """A camera on a sphere around ``target`` looking at it.

    yaw 0 = frontal (on +Z); positive yaw moves the camera towards the subject's left (+X);
    positive pitch moves it up. distance in metres.
    """
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    # Rotation taking the frontal camera to the orbit position (camera-to-world part).
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    c2w_rot = ry @ rx.T @ FRONTAL_CAMERA_ROTATION.T  # columns: camera x, y, z axes in world
    centre = target + ry @ rx.T @ np.array([0.0, 0.0, distance])
    w2c = np.eye(4)
    w2c[:3, :3] = c2w_rot.T
    w2c[:3, 3] = -c2w_rot.T @ centre
    return Camera(intrinsics(focal_from_fov(fov_deg, width), width, height), w2c, width, height)


def look_at_camera(position, target, up, fov_deg: float, width: int, height: int) -> Camera:
    """A camera at ``position`` (metres) looking at ``target``, ``up`` roughly up in the image;
    vertical field of view ``fov_deg``. Same convention as ``orbit_camera`` (OpenCV axes: x right,
    y down, z forward). Raises ValueError when position == target or up is parallel to the view."""
    position, target, up = (np.asarray(v, dtype=np.float64).reshape(3) for v in (position, target, up))
    z = target - position
    if np.linalg.norm(z) < 1e-12:
        raise ValueError("camera position equals its target")
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("camera up vector is parallel to the viewing direction")
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ position
    return Camera(intrinsics(focal_from_fov(fov_deg, height), width, height), w2c, width, height)


def project_points(points: Tensor, K: Tensor, viewmat: Tensor) -> tuple[Tensor, Tensor]:
    """World points -> pixel coordinates and camera depth.

    points: [..., N, 3]; K: [3, 3]; viewmat: [4, 4]
    returns (xy [..., N, 2] continuous pixels, depth [..., N] metres along camera z)
    """
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[..., 2]
    xy = cam[..., :2] / z[..., None].clamp_min(1e-6)
    xy = xy @ K[:2, :2].T + K[:2, 2]
    return xy, z
