"""Eyeball rotation for the ARKit gaze channels (``eyeLookIn/Out/Up/Down_L/R``).

ICT-FaceKit's ``eyeLook*`` blendshapes move the lids a little and leave the eyeballs where they are,
so an avatar (and the tracker, whose iris landmarks sit on the eyeballs) could not look sideways.
``add_eye_rotation`` adds to each of those channels the displacement that turns its eyeball about
the eyeball's centre by the channel's full angle at weight 1. Blendshapes are linear: at weight w the
eyeball's points move by w times the full rotation's displacement (the chord, not the arc), so a half
look (w = 0.5, 15 degrees) draws the eyeball at most 1 - cos(7.5 deg) = 0.9% of its radius (~0.1 mm)
inside its sphere, and combined channels add their displacements. The triangle frames the Gaussians
are bound to follow the moved triangles, so the iris's splats turn with it.

Conventions (``sega.conventions``): +X the subject's left, +Y up, +Z out of the face; "left" and "right"
are the subject's. Looking *out* turns an eye away from the nose.
"""

from __future__ import annotations

import math

import numpy as np

GAZE_YAW_DEG = 30.0  # eyeLookIn / eyeLookOut at weight 1: about the extreme of comfortable horizontal gaze
GAZE_PITCH_DEG = 25.0  # eyeLookUp / eyeLookDown at weight 1
# channel -> (eye, axis, sign): the rotation's angle is sign * the axis's full angle (right-handed about +X / +Y)
GAZE_CHANNELS = {
    "eyeLookOut_L": ("left", "yaw", +1.0), "eyeLookIn_L": ("left", "yaw", -1.0),
    "eyeLookOut_R": ("right", "yaw", -1.0), "eyeLookIn_R": ("right", "yaw", +1.0),
    "eyeLookUp_L": ("left", "pitch", -1.0), "eyeLookDown_L": ("left", "pitch", +1.0),
    "eyeLookUp_R": ("right", "pitch", -1.0), "eyeLookDown_R": ("right", "pitch", +1.0),
}  # fmt: skip


def sphere_centre(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere through points [N, 3] -> centre [3] (|p|^2 = 2 c.p + k, linear in c and k)."""
    p = np.asarray(points, dtype=np.float64)
    a = np.concatenate([2.0 * p, np.ones((p.shape[0], 1))], 1)
    sol, *_ = np.linalg.lstsq(a, (p * p).sum(1), rcond=None)
    return sol[:3]


def rotation(axis: str, degrees: float) -> np.ndarray:
    """[3, 3] rotation about +X ("pitch") or +Y ("yaw"), right-handed."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    if axis == "yaw":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def add_eye_rotation(vertices: np.ndarray, eyeball_masks: dict[str, np.ndarray], expression_basis: np.ndarray,
                     expression_names) -> np.ndarray:  # fmt: skip
    """expression_basis [E, V, 3] with each gaze channel's eyeball turned (see the module docstring).

    vertices: [V, 3] the template (metres); eyeball_masks: {"left": [V] bool, "right": [V] bool}.
    Channels missing from ``expression_names`` are skipped. Returns a new float32 array."""
    out = np.array(expression_basis, dtype=np.float32, copy=True)
    names = list(expression_names)
    v = np.asarray(vertices, dtype=np.float64)
    for channel, (eye, axis, sign) in GAZE_CHANNELS.items():
        mask = eyeball_masks.get(eye)
        if channel not in names or mask is None or not mask.any():
            continue
        centre = sphere_centre(v[mask])
        full = GAZE_YAW_DEG if axis == "yaw" else GAZE_PITCH_DEG
        rel = v[mask] - centre
        out[names.index(channel)][mask] += (rel @ rotation(axis, sign * full).T - rel).astype(np.float32)
    return out
