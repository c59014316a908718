"""Fit overlays: the fitted mesh, shaded and half transparent, plus the landmarks, over the photo.

The overlay is drawn on an upscaled head crop so that small faces stay readable: a wireframe of
tens of thousands of triangles is a solid blob at the photo's own resolution.
"""

from __future__ import annotations

import numpy as np
import torch

from .camera import Camera
from .face import head_crop
from .fit import FitResult
from .headmodel.base import HeadModel
from .meshraster import draw_points, draw_wireframe, project_vertices, render_mesh, shade

OVERLAY_SIZE = 768  # pixels, side of the overlay image (an upscaled head crop)
MESH_ALPHA = 0.35  # opacity of the shaded fitted mesh
WIRE_ALPHA = 0.25  # opacity of the visible face-region wireframe
WIRE_COLOR = (0.3, 0.85, 1.0)  # wireframe colour (RGB, float)
DETECTED_COLOR = (255, 60, 60)  # detected landmarks (RGB)
FITTED_COLOR = (60, 255, 60)  # model landmarks after fitting
MESH_REGIONS = ("face", "head_neck", "eyeball_left", "eyeball_right")


def fit_overlay(photo: np.ndarray, fit: FitResult, model: HeadModel, detection=None) -> np.ndarray:
    """[S, S, 3] uint8 head crop of ``photo [H, W, 3]``: shaded fitted mesh blended in, detected
    landmarks in red, fitted model landmarks in green. ``detection`` gives the crop (else the
    landmarks' extent does)."""
    crop = head_crop(detection, photo.shape[:2], size=OVERLAY_SIZE) if detection is not None else _crop_from_points(fit, photo.shape[:2])
    img = crop.apply(photo)
    # camera of the crop: K' = A K with A the photo->crop affine
    cam = Camera(crop.photo_to_crop @ fit.camera.K, fit.camera.viewmat, OVERLAY_SIZE, OVERLAY_SIZE)
    buf = model.torch_buffers()
    with torch.no_grad():
        verts = model.deform(buf, torch.as_tensor(fit.identity), torch.as_tensor(fit.expression)).numpy()
    frags = render_mesh(verts, model.faces, cam, face_mask=model.region_face_mask(*MESH_REGIONS))
    shaded = shade(frags, verts, model.faces, cam)
    out = img.astype(np.float32) / 255.0
    m = frags.mask[..., None]
    out = np.where(m, (1 - MESH_ALPHA) * out + MESH_ALPHA * shaded, out)
    wire = draw_wireframe(out.copy(), project_vertices(verts, cam)[0], model.faces, WIRE_COLOR, model.region_face_mask("face"), visible=frags)
    out = (1 - WIRE_ALPHA) * out + WIRE_ALPHA * wire
    out = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    det = crop.landmarks_to_crop(fit.landmarks_detected)
    fitted = crop.landmarks_to_crop(fit.landmarks_fitted[fit.landmark_weights > 0])
    out = draw_points(out, det, DETECTED_COLOR, 2.0)
    out = draw_points(out, fitted, FITTED_COLOR, 1.2)
    return out


def _crop_from_points(fit: FitResult, image_shape):
    from .face import Detection

    pts = fit.landmarks_detected
    box = np.concatenate([pts.min(0), pts.max(0)])
    det = Detection(landmarks=np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], 1), box=box, score=float("nan"), num_faces=1, image_size=tuple(image_shape), notes=[])
    return head_crop(det, image_shape, size=OVERLAY_SIZE)

