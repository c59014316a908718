"""Scoring one frame of a self-reenactment: the driven render and the frozen baseline against the target.

``FrameScorer.score`` renders the avatar twice at the frame's head pose: *driven* (with the frame's
tracked expression) and *frozen* (at the avatar's own source expression: what an avatar that ignores
expressions would show), then measures both against the target frame:

* head-mask PSNR / SSIM / L1 (the target's person mask where the driven render draws);
* PSNR / SSIM inside the mouth and eye regions of the target's landmarks (``sega.face_measures``);
* landmark measures on each image (MediaPipe, static mode for all three): eye openings, mouth
  opening and width, gaze, brow height (errors in IOD, gaze in eye widths), teeth shown or not;
* the landmark expression error and the head-pose error (driven only), and the dlib identity
  distance / cosine similarity between the driven render and the target (when the models are there).

Per-frame entries are flat dicts of numbers (``None`` where a measure could not be taken); the
frozen baseline's are under ``"frozen"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .errors import FaceNotFoundError
from .face_measures import MEASURES, landmark_measures, region_masks, teeth_shown
from .landmarks import mediapipe_groups
from .metrics import psnr, ssim_map_within

EXPRESSION_GROUPS = ("lips", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow")
POSE_REFIT_ITERATIONS = 10  # solver steps when fitting the render's head pose
MIN_REGION_PX = 50  # a mouth / eye region of fewer pixels is not scored
# Errors taken between two MediaPipe readings of each target frame (the static detection the scores use and the
# tracker's video landmarks): the report's ``target_reread``, a floor under what the landmark errors can resolve.
REREAD = ("eye_opening_error", "mouth_opening_error", "mouth_width_error", "gaze_error", "brow_height_error")


@dataclass
class Measured:
    """What one image's landmarks say (``None`` fields where no face was found on it)."""

    landmarks: np.ndarray | None  # [478, 3] image px
    measures: dict[str, float] | None  # sega.face_measures.MEASURES
    teeth: bool | None


def measure_image(image: np.ndarray, detector) -> Measured:
    """Landmarks (static-mode FaceMesh through ``detector.detect``), their measures and teeth on one image [H, W, 3] uint8."""
    try:
        lm = detector.detect(image).landmarks
    except FaceNotFoundError:
        return Measured(None, None, None)
    return Measured(lm, landmark_measures(lm), teeth_shown(image, lm))


def group_error(a: np.ndarray, b: np.ndarray, iod: float) -> float:
    """Mean distance between the mouth, eye and brow landmarks of two faces / ``iod``."""
    groups = mediapipe_groups()
    idx = sorted({i for g in EXPRESSION_GROUPS for i in groups[g]})
    return float(np.linalg.norm(a[idx, :2] - b[idx, :2], axis=1).mean() / iod)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two axis-angle rotations [3] (degrees)."""
    from .geometry import axis_angle_to_matrix

    ra = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64))
    rb = axis_angle_to_matrix(torch.as_tensor(b, dtype=torch.float64))
    cos = ((ra @ rb.T).trace() - 1) / 2
    return math.degrees(math.acos(float(cos.clamp(-1, 1))))


def yaw_change_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Yaw (rotation about the head's vertical axis, y) of axis-angle rotation a [3] relative to b [3], degrees."""
    from .geometry import axis_angle_to_matrix

    rel = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64)) @ axis_angle_to_matrix(torch.as_tensor(b, dtype=torch.float64)).T
    return math.degrees(math.atan2(float(rel[0, 2]), float(rel[2, 2])))


def measure_errors(render: Measured, target: Measured) -> dict:
    """Absolute differences of the landmark measures (IOD; gaze in eye widths) and the teeth flag."""
    out: dict = {"teeth_render": render.teeth}
    if render.measures is None or target.measures is None:
        return out | {k: None for k in ("eye_opening_error", "mouth_opening_error", "mouth_width_error", "gaze_error", "brow_height_error")}
    r, t = render.measures, target.measures
    out["eye_opening_error"] = float(np.mean([abs(r[f"eye_opening_{s}"] - t[f"eye_opening_{s}"]) for s in ("left", "right")]))
    out["mouth_opening_error"] = abs(r["mouth_opening"] - t["mouth_opening"])
    out["mouth_width_error"] = abs(r["mouth_width"] - t["mouth_width"])
    out["gaze_error"] = float(math.hypot(r["gaze_x"] - t["gaze_x"], r["gaze_y"] - t["gaze_y"]))
    out["brow_height_error"] = abs(r["brow_height"] - t["brow_height"])
    return out


def photo_scores(rgb: np.ndarray, target: np.ndarray, mask: np.ndarray, also: tuple[np.ndarray, ...] = ()) -> tuple[dict, np.ndarray]:
    """rgb, target [H, W, 3] float in [0, 1], mask [H, W] bool -> ({psnr_db, ssim, l1} inside the mask, the SSIM
    map [H, W]): the head-mask scores of every eval frame (and of ``sega train``'s validation). The map is
    computed over the box of the mask and of the regions ``also`` ([H, W] bool each) and is NaN elsewhere."""
    where = np.logical_or.reduce((mask, *also)) if also else mask
    ssim = ssim_map_within(rgb, target, where)
    return {"psnr_db": psnr(rgb, target, mask), "ssim": float(ssim[mask].mean()), "l1": float(np.abs(rgb - target)[mask].mean())}, ssim


def _region_scores(rgb: np.ndarray, target: np.ndarray, ssim: np.ndarray, regions: dict[str, np.ndarray]) -> dict:
    out = {}
    for name, key in (("mouth", "mouth"), ("eyes", "eye")):
        m = regions.get(name)
        ok = m is not None and m.sum() >= MIN_REGION_PX
        out[f"{key}_psnr_db"] = psnr(rgb, target, m) if ok else None
        out[f"{key}_ssim"] = float(ssim[m].mean()) if ok else None
    return out


class FrameScorer:
    """Scores frames of one evaluation (holds the detector, the pose solver and the identity embedder)."""

    def __init__(self, avatar, detector, solver, embed=None, mask_alpha: float = 0.5):
        self.avatar, self.detector, self.solver, self.embed, self.mask_alpha = avatar, detector, solver, embed, mask_alpha

    def _render(self, expression: np.ndarray, pose: np.ndarray):
        out = self.avatar.render(expression, (pose[:3], pose[3:]), camera=self.avatar.camera)
        rgb = out.rgb.cpu().numpy().clip(0, 1)
        return rgb, out.alpha.cpu().numpy()[..., 0], (rgb * 255 + 0.5).astype(np.uint8)

    def score(self, frame: np.ndarray, person: np.ndarray, video_landmarks: np.ndarray, expression: np.ndarray,
              pose: np.ndarray) -> tuple[dict, dict]:  # fmt: skip
        """frame [H, W, 3] uint8, person [H, W] in [0, 1], video_landmarks [478, 3] (the tracker's),
        expression [E], pose [6] -> (entry, images {"target", "driven", "frozen", "error"}); an entry
        with "skipped" when the avatar and the person do not overlap."""
        target = frame.astype(np.float32) / 255.0
        rgb, alpha, render8 = self._render(expression, pose)
        frozen_rgb, _, frozen8 = self._render(np.asarray(self.avatar.expression, np.float32), pose)
        mask = (person > 0.5) & (alpha > self.mask_alpha)
        if mask.sum() < 100:
            return {"skipped": "the avatar and the person do not overlap"}, {}
        tgt = measure_image(frame, self.detector)
        video = Measured(video_landmarks, landmark_measures(video_landmarks), None)  # teeth only where it is the target
        entry: dict = {}
        if tgt.landmarks is None:  # the static detector missed what the tracker found: its landmarks, its measures
            tgt = replace(video, teeth=teeth_shown(frame, video_landmarks))
        else:  # two readings of one frame: how finely the landmark errors can resolve anything
            entry["target_reread"] = {k: v for k, v in measure_errors(video, tgt).items() if k in REREAD}
        regions = region_masks(tgt.landmarks, *frame.shape[:2])
        entry |= {"teeth_target": tgt.teeth, "target_measures": tgt.measures}
        frozen: dict = {}
        for name, img, img8, dest in (("driven", rgb, render8, entry), ("frozen", frozen_rgb, frozen8, frozen)):
            scores, ssim = photo_scores(img, target, mask, tuple(m for m in regions.values() if m is not None))
            dest.update(scores)
            dest.update(_region_scores(img, target, ssim, regions))
            measured = measure_image(img8, self.detector)
            dest.update(measure_errors(measured, tgt))
            dest["render_measures"] = measured.measures
            if name == "driven":
                self._landmark_scores(dest, measured, tgt, expression, pose)
                self._identity(dest, img8, measured.landmarks, frame, tgt.landmarks)
        entry["frozen"] = frozen
        images = {"target": frame, "driven": render8, "frozen": frozen8, "error": np.abs(rgb - target).mean(-1) * mask}
        return entry, images

    def _landmark_scores(self, entry: dict, render, target, expression, pose) -> None:
        from .face_measures import interocular

        if render.landmarks is None:
            entry.update(expression_error=None, pose_error_deg=None, note="no face detected on the render")
            return
        entry["expression_error"] = group_error(render.landmarks, target.landmarks, interocular(target.landmarks))
        start = np.concatenate([expression, pose])
        p_render, _ = self.solver.solve(render.landmarks, start, POSE_REFIT_ITERATIONS)
        p_target, _ = self.solver.solve(target.landmarks, start, POSE_REFIT_ITERATIONS)
        entry["pose_error_deg"] = rotation_angle_deg(p_render[-6:-3], p_target[-6:-3])

    def _identity(self, entry: dict, render8: np.ndarray, render_landmarks, frame: np.ndarray, frame_landmarks) -> None:
        """dlib identity distance / similarity of render and frame, each face boxed from its own
        MediaPipe landmarks (dlib's detector where MediaPipe found none on the render)."""
        if self.embed is None:
            return
        a, b = self.embed(render8, render_landmarks), self.embed(frame, frame_landmarks)
        if a is None or b is None:
            entry["identity_distance"] = entry["identity_similarity"] = None
            return
        entry["identity_distance"] = float(np.linalg.norm(a - b))
        entry["identity_similarity"] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


__all__ = ["MEASURES", "FrameScorer", "Measured", "group_error", "measure_errors", "measure_image", "photo_scores", "rotation_angle_deg"]
