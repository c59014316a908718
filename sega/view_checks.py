"""How an avatar holds up away from the photo's view: identity around the head, painted faces on its
sides, and the input view's silhouette against the photo's person (head and hair, not shoulders).

``view_report(avatar, data, photo, detector, embed)`` -> (report dict, renders by yaw); used by
``bench.bench_views`` and the tests. ``sega.person_regions.head_window`` is the photo's person above the shoulders.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import psnr, ssim_map
from .person_regions import MASK_THRESHOLD, head_window

VIEW_YAWS_DEG = (0, 30, -30, 45, -45, 90, -90, 180)  # orbit yaws scored (0 = frontal, canonical pose)
PROFILE_YAWS_DEG = (90, -90)  # where a detected face means one painted on the side of the head


def face_landmarks_found(detector, img: np.ndarray) -> bool:
    """Whether MediaPipe finds a face *with its landmarks* in img [H, W, 3] uint8 (``FaceDetector.detect``,
    what the product itself calls a face). Its box detectors alone are not the test: they fire on real
    profiles too (every ±90 render of the dev photos gets a box), while the face mesh finds no face there,
    and would find one painted on the side of the head."""
    from .errors import FaceNotFoundError

    try:
        detector.detect(img)
    except FaceNotFoundError:
        return False
    return True


def silhouette_iou(alpha: np.ndarray, person: np.ndarray, window: np.ndarray) -> float:
    """IoU of alpha >= 0.5 and person >= 0.5 inside window (all [S, S])."""
    a, p = (alpha >= MASK_THRESHOLD) & window, (person >= MASK_THRESHOLD) & window
    union = int((a | p).sum())
    return float((a & p).sum() / union) if union else 1.0


def _uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.cpu().numpy().clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scored_window(data) -> np.ndarray:
    """[S, S] bool: where the input view's silhouette is scored: the photo's person above the shoulders
    (``head_window``), and only where the crop lies inside the photo. A head crop often runs past the
    photo's edge (a portrait cut at the chest); the padding there says nothing about the person, so
    the avatar's neck drawn into it is neither right nor wrong. data: the build's ``BuildData``."""
    lms = data.crop.landmarks_to_crop(data.detection.landmarks[:, :2])
    return head_window(data.person_mask, lms) & (data.crop.valid_mask() >= MASK_THRESHOLD)


def input_view_scores(avatar, data) -> tuple[dict, np.ndarray]:
    """The avatar at its own photo's crop view against the photo: silhouette IoU above the shoulders
    (``scored_window``), PSNR / SSIM in the face mask. data: the build's ``BuildData``.
    -> (scores, render [S, S, 3] uint8)."""
    out = avatar.render(avatar.expression, camera=avatar.crop_camera)
    rgb, alpha = out.rgb.cpu().numpy().clip(0.0, 1.0), out.alpha.cpu().numpy()[..., 0]
    window = scored_window(data)
    person, drawn = (data.person_mask >= MASK_THRESHOLD) & window, (alpha >= MASK_THRESHOLD) & window
    ssim = ssim_map(torch.as_tensor(rgb, dtype=torch.float32), torch.as_tensor(data.target, dtype=torch.float32)).numpy()
    scores = {
        "input_iou": round(silhouette_iou(alpha, data.person_mask, window), 4),
        "input_missing_person_fraction": round(float((person & ~drawn).sum() / max(1, person.sum())), 4),
        "input_excess_fraction": round(float((drawn & ~person).sum() / max(1, drawn.sum())), 4),  # drawn over the backdrop
        "input_face_psnr_db": round(psnr(rgb, data.target, data.face_mask), 3),
        "input_face_ssim": round(float(ssim[data.face_mask].mean()), 4),
    }  # fmt: skip
    return scores, _uint8(out.rgb)


def view_report(avatar, data, photo: np.ndarray, detector, embed, size: int = 384) -> tuple[dict, dict]:
    """Scores of ``avatar`` around the head (``VIEW_YAWS_DEG``) and at the input view.

    photo: [H, W, 3] uint8 the source; detector: a ``sega.face.FaceDetector``; embed: image -> dlib
    embedding or None (``sega.evaluate.identity_embedder``). -> (report, {yaw: render [size, size, 3] uint8})."""
    source = embed(photo)
    views, renders = {}, {}
    batch = avatar.render_views([avatar.orbit_camera(yaw, size=size) for yaw in VIEW_YAWS_DEG], avatar.expression).rgb
    for yaw, rgb in zip(VIEW_YAWS_DEG, batch):
        img = _uint8(rgb)
        renders[yaw] = img
        e = embed(img)
        entry = {"face_found": e is not None,
                 "identity_distance": None if e is None or source is None else round(float(np.linalg.norm(e - source)), 4)}  # fmt: skip
        if yaw in PROFILE_YAWS_DEG:
            entry["mediapipe_face"] = face_landmarks_found(detector, img)
            entry["mediapipe_boxes"] = len(detector.face_boxes(img))  # for reference: fires on profiles
        views[str(yaw)] = entry
    scores, input_render = input_view_scores(avatar, data)
    renders["input"] = input_render
    return {"views": views, **scores}, renders


def view_row(target: np.ndarray, renders: dict, size: int) -> np.ndarray:
    """One gallery row [size, size * (2 + len(VIEW_YAWS_DEG)), 3] uint8: the source crop, the input-view
    render, then the orbit renders in ``VIEW_YAWS_DEG`` order."""
    from PIL import Image

    def fit(img: np.ndarray) -> np.ndarray:
        img = img if img.dtype == np.uint8 else (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))

    return np.concatenate([fit(target), fit(renders["input"])] + [renders[y] for y in VIEW_YAWS_DEG], 1)


__all__ = ["VIEW_YAWS_DEG", "face_landmarks_found", "input_view_scores", "scored_window", "silhouette_iou", "view_report", "view_row"]
