"""Preview renders of an avatar: orbit views, expressions, a turntable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: previews take any avatar
    from .avatar import Avatar

PREVIEW_YAWS = (0, 30, -30, 90, -90, 180)  # degrees, neutral expression
PREVIEW_EXPRESSIONS = {  # name -> weights set on top of the fitted expression, frontal view
    "jawopen": {"jawOpen": 1.0},
    "smile": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
    "blink": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
}
TURNTABLE_FRAMES = 36  # frames of one turn
TURNTABLE_FPS = 12


def preview_images(avatar: Avatar, size: int = 256) -> dict[str, np.ndarray]:
    """Named [size, size, 3] float32 renders: ``yaw{+-d}`` at the neutral expression, then each of
    ``PREVIEW_EXPRESSIONS`` frontally (expressions whose names the head model lacks are skipped)."""
    views = avatar.orbit_views(PREVIEW_YAWS, size=size)
    out = {f"yaw{yaw:+d}": img for yaw, img in zip(PREVIEW_YAWS, views)}
    known = set(avatar.head_model.expression_names)
    for name, weights in PREVIEW_EXPRESSIONS.items():
        if set(weights) <= known:
            expr = avatar.expression_with(**weights)
            out[name] = avatar.render(expr, camera=avatar.orbit_camera(0, size=size)).rgb.cpu().numpy()
    return out


def turntable_frames(avatar: Avatar, frames: int = TURNTABLE_FRAMES, size: int = 256) -> list[np.ndarray]:
    """One full turn around the head at the neutral expression: ``frames`` [size, size, 3] uint8 images."""
    views = avatar.orbit_views([360.0 * k / frames for k in range(frames)], size=size)
    return [np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8) for rgb in views]
