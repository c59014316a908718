"""Conventions used everywhere in SEGA. Everything else refers to this module.

Units
    Lengths are **metres** (ICT-FaceKit ships centimetres and is scaled by
    ``ICT_CM_TO_M`` when converted; FLAME is already in metres). Angles are radians
    in code, degrees only at user-facing edges (CLI flags, reports).

Head-model (world) space
    Right-handed. +X points to the subject's **left** (so the subject's left eye is
    on the image right in a frontal photo), +Y up, +Z out of the face (towards a
    frontal camera). "_L"/"_R" in expression names are the subject's left/right.

Cameras
    Pinhole, OpenCV axes: x right, y down, z forward (into the scene).
    ``viewmat`` is the 4x4 **world-to-camera** matrix ``[R | t]`` so that
    ``X_cam = R @ X_world + t``. ``K`` is 3x3 in pixels. Continuous pixel
    coordinates put the *centre* of pixel (row i, col j) at (j + 0.5, i + 0.5),
    the same as gsplat and MediaPipe's normalised coordinates times (W, H).
    A frontal camera therefore looks along world -Z: ``R = diag(1, -1, -1)``.

Rotations
    Quaternions are unit **wxyz**. Axis-angle vectors are (3,) radians.
    Head pose = rotation about ``HeadModel.pivot`` followed by translation, stored as
    ``HEAD_POSE_SIZE`` = 6 numbers: axis-angle (3, radians) then translation (3, metres).

UV
    UV origin is bottom-left (OBJ convention), v up. In atlas images row 0 is
    the top: texel (row r, col c) has centre u = (c + 0.5) / W, v = 1 - (r + 0.5) / H.

Images and colour
    Tensors are float32 in [0, 1], layout [H, W, C]; files are 8-bit sRGB.
    Colours are stored and optimised in sRGB directly (as 3DGS does).
    Gaussian colour uses SH degree 0: rgb = 0.5 + SH_C0 * f_dc.
"""

from __future__ import annotations

import numpy as np

ICT_CM_TO_M = 0.01  # ICT-FaceKit OBJ files are in centimetres.
SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi)).
HEAD_POSE_SIZE = 6  # rx, ry, rz (axis-angle, radians), tx, ty, tz (metres): clips, bundles, tracking

# World-to-camera rotation of a camera on the +Z axis looking at the origin (OpenCV axes).
FRONTAL_CAMERA_ROTATION = np.diag([1.0, -1.0, -1.0])


def pixel_to_uv(row: np.ndarray, col: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Texel centre (row, col) of an H x W atlas -> (u, v) in UV space (origin bottom-left)."""
    u = (np.asarray(col, dtype=np.float64) + 0.5) / width
    v = 1.0 - (np.asarray(row, dtype=np.float64) + 0.5) / height
    return u, v


def uv_to_pixel(u: np.ndarray, v: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) -> continuous (x, y) image coordinates of an H x W atlas (x = col, y = row, pixel centres at +0.5)."""
    x = np.asarray(u, dtype=np.float64) * width
    y = (1.0 - np.asarray(v, dtype=np.float64)) * height
    return x, y
