"""A photo unwrapped into the head model's UV atlas: each texel's colour and how well the photo saw it.

What a prior's identity encoder reads (``sega.nets.prior``), made the same way for a training clip's source
frames (``sega.train.prepare``) and for the photo of a build (``sega.avatar.build.build_avatar`` with a prior).
"""

from __future__ import annotations

import numpy as np

MASK_SCALE = 255  # masks and confidences are stored as uint8: value x this


def unwrap_frame(model, atlas, buffers, identity: np.ndarray, expression: np.ndarray, pose: np.ndarray, camera, frame: np.ndarray,
                 person: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One frame in UV: (colors [T, 3] uint8, confidence [T] uint8 x 255) at the atlas texels of the tracked,
    posed mesh; confidence = seen (in the frame, unoccluded, facing, on the person) x photo_weight.

    identity [I], expression [E], pose [6] (axis-angle radians + metres; zeros for a fitted photo, whose camera
    holds its pose), camera: the photo's, frame [H, W, 3] uint8, person [H, W] in [0, 1], landmarks [478, 2|3]."""
    import torch

    from ...face_measures import interocular
    from ...geometry import apply_head_pose
    from .init import project_texels
    from .unseen import photo_weight

    with torch.no_grad():
        verts = model.deform(buffers, torch.as_tensor(identity), torch.as_tensor(expression))
        verts = apply_head_pose(verts, torch.as_tensor(pose[:3]), torch.as_tensor(pose[3:]), buffers.pivot)
        points = atlas.texel_points(verts).numpy().astype(np.float64)
        normals = atlas.texel_frames(verts)[..., 2].numpy().astype(np.float64)
    img = frame.astype(np.float32) / 255.0
    colors, visible, cos, edge_px = project_texels(img, person, camera, verts.numpy(), atlas.faces, points, normals)
    weight = np.where(visible, photo_weight(cos, edge_px / max(interocular(landmarks), 1.0)), 0.0)
    return (np.clip(np.rint(colors * 255.0), 0, 255).astype(np.uint8),
            np.clip(np.rint(weight * MASK_SCALE), 0, MASK_SCALE).astype(np.uint8))  # fmt: skip


__all__ = ["MASK_SCALE", "unwrap_frame"]
