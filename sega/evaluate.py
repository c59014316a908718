"""Fidelity on held-out frames (self-reenactment): build from one frame, drive with the others, compare.

``evaluate_frames`` builds the avatar from the source frame (or takes one), tracks every frame with
the avatar's own identity and camera held fixed (so renders line up with the frames), renders every
K-th other frame with its fitted expression and head pose at the avatar's photo camera, and reports
per frame and overall:

* PSNR, SSIM and L1 inside the head mask: the target frame's person mask (selfie segmentation)
  where the avatar also draws (render alpha > ``MASK_ALPHA``);
* expression error: mean distance between mouth, eye and brow landmarks detected on the render and
  on the target, over the target's inter-ocular distance; pose error: the angle (degrees) between
  the head rotation fitted on the render and on the target;
* identity similarity: cosine similarity of dlib ResNet face embeddings of render and target, only
  when the optional ``[eval]`` extra (``dlib-bin``, ``face-recognition-models``) is installed;
  otherwise the report says so. LPIPS is not reported: its weights are not available offline.

``write_report`` writes ``report.json`` and ``contact_sheet.png`` (target | render | error heat map).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import FaceNotFoundError, SegaError
from .landmarks import mediapipe_groups
from .track import ExpressionPoseSolver, TrackOptions, detect_video_landmarks, track_landmarks
from .video import Frames

MASK_ALPHA = 0.5  # render alpha above which the avatar covers a pixel
EXPRESSION_GROUPS = ("lips", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow")
CONTACT_FRAMES = 4  # frames shown on the contact sheet
HEAT_MAX = 0.25  # |error| (mean over rgb) mapped to the top of the heat map
POSE_REFIT_ITERATIONS = 10  # solver steps when fitting the render's head pose
REFINE_SIZE = 512  # px, longer side of the renders the refinement compares (192 px: ~28 dB on exact renders, 512: ~40)
REFINE_LR_EXPRESSION = 0.005  # Adam step, weight units
REFINE_LR_ROTATION = 0.003  # Adam step, radians
REFINE_LR_TRANSLATION = 0.0005  # Adam step, metres
REFINE_MASK_GROW = 1.5  # the face-oval polygon is scaled about its centre by this (forehead, hair line, ears) ...
REFINE_TRANSLATION_PRIOR = 50.0  # weight of |translation change|^2 (metres) in the L1 loss: the photo fixes depth weakly


@dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate_frames`` measures. Stored in the report."""

    source_frame: int = 0  # frame the avatar is built from (never scored)
    every: int = 5  # score every K-th other frame
    preset: str = "fast"  # avatar preset when the avatar is built here
    max_scored: int = 60  # score at most this many frames
    refine_iterations: int = 100  # photometric refinement of each frame's expression + pose (0: landmarks only)


def identity_embedder():
    """A function image [H, W, 3] uint8 -> 128-d dlib face embedding (or None), or None when the
    optional ``[eval]`` extra is not installed."""
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError:
        return None
    import dlib

    import face_recognition_models as frm

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(frm.pose_predictor_model_location())
    net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def embed(img: np.ndarray):
        boxes = detector(img, 1)
        if not boxes:
            return None
        return np.asarray(net.compute_face_descriptor(img, shape(img, boxes[0])), dtype=np.float64)

    return embed


def refine_photometric(avatar, frame: np.ndarray, landmarks: np.ndarray, expression: np.ndarray, head_pose: np.ndarray,
                       iterations: int, person: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Analysis by synthesis: adjust expression [E] and head pose [6] so the avatar's render matches
    ``frame`` inside the head (L1 in the target's grown face-oval polygon, ... and its person mask
    [H, W] when given), starting from the landmark fit.

    Only the driving signal moves; the avatar's appearance is untouched. Landmark tracking alone is
    off by a few degrees (MediaPipe's points shift with the view), which costs ~15 dB of PSNR.
    """
    from .avatar import polygon_mask
    from .render import render as render_gaussians

    cam = avatar.camera
    scale = REFINE_SIZE / max(cam.width, cam.height)
    w, h = max(1, round(cam.width * scale)), max(1, round(cam.height * scale))
    k = cam.K.copy()
    k[0] *= w / cam.width
    k[1] *= h / cam.height
    small = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    oval = landmarks[list(mediapipe_groups()["face_oval"]), :2] * [w / cam.width, h / cam.height]
    centre = oval.mean(0)
    mask = polygon_mask(centre + (oval - centre) * REFINE_MASK_GROW, h, w)
    if person is not None:
        mask &= np.asarray(Image.fromarray((person * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)) > 127
    mask = torch.from_numpy(mask)
    trans0 = torch.as_tensor(head_pose[3:], dtype=torch.float32)
    target = torch.from_numpy(small)
    kt, vt = torch.as_tensor(k, dtype=torch.float32), torch.as_tensor(cam.viewmat, dtype=torch.float32)
    bg = torch.tensor(avatar.options.background, dtype=torch.float32)
    expr = torch.as_tensor(expression, dtype=torch.float32).clone().requires_grad_(True)
    rot = torch.as_tensor(head_pose[:3], dtype=torch.float32).clone().requires_grad_(True)
    trans = torch.as_tensor(head_pose[3:], dtype=torch.float32).clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [expr], "lr": REFINE_LR_EXPRESSION}, {"params": [rot], "lr": REFINE_LR_ROTATION},
                            {"params": [trans], "lr": REFINE_LR_TRANSLATION}])  # fmt: skip
    lo, hi = avatar.head_model.expression_range
    for it in range(iterations):
        expr.requires_grad_(it >= iterations // 2)  # first half: pose only (the landmark fit is off mostly in pose)
        opt.zero_grad()
        g = avatar.animate(expr, (rot, trans), grad=True)
        out = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, kt, vt, w, h, bg)
        loss = (out.rgb - target).abs().sum(-1)[mask].mean() + REFINE_TRANSLATION_PRIOR * (trans - trans0).pow(2).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            expr.clamp_(lo, hi)
    return expr.detach().numpy(), torch.cat([rot, trans]).detach().numpy()


def _group_error(a: np.ndarray, b: np.ndarray, iod: float) -> float:
    groups = mediapipe_groups()
    idx = sorted({i for g in EXPRESSION_GROUPS for i in groups[g]})
    return float(np.linalg.norm(a[idx, :2] - b[idx, :2], axis=1).mean() / iod)


def _rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    from .geometry import axis_angle_to_matrix

    ra = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64))
    rb = axis_angle_to_matrix(torch.as_tensor(b, dtype=torch.float64))
    cos = ((ra @ rb.T).trace() - 1) / 2
    return math.degrees(math.acos(float(cos.clamp(-1, 1))))


def evaluate_frames(frames: Frames, model, detector, options: EvalOptions = EvalOptions(), avatar=None, progress=None) -> dict:
    """Self-reenactment report (a JSON-able dict; images under the private key ``_images``).

    avatar: an avatar built from ``frames[options.source_frame]`` (else one is built here).
    """
    from .avatar import Avatar, AvatarOptions, psnr, ssim_map
    from .fit import interocular

    t0 = time.perf_counter()
    n = len(frames)
    if n < 2:
        raise SegaError("evaluation needs at least two frames (one to build from, one to compare)")
    if not 0 <= options.source_frame < n:
        raise SegaError(f"--source-frame {options.source_frame} is outside the video's {n} frames")
    source = frames.frames[options.source_frame]
    if avatar is None:
        avatar = Avatar.build(source, model, AvatarOptions.preset(options.preset), detector=detector)
    h, w = source.shape[:2]
    if (avatar.camera.height, avatar.camera.width) != (h, w):
        raise SegaError(f"the avatar was built from a {avatar.camera.width}x{avatar.camera.height} photo; the frames are {w}x{h}")
    landmarks, _ = detect_video_landmarks(frames.frames, detector)
    if all(lm is None for lm in landmarks):
        raise FaceNotFoundError(f"{frames.source}: no face found in any of its {n} frames")
    track = track_landmarks(model, landmarks, (h, w), TrackOptions(), avatar.identity, avatar.camera, frames.fps)
    solver = ExpressionPoseSolver(model, avatar.identity, avatar.camera)
    scored = [i for i in range(0, n, max(1, options.every)) if i != options.source_frame][: options.max_scored]
    embed = identity_embedder()
    per_frame, images = [], []
    for k, i in enumerate(scored):
        entry: dict = {"frame": i}
        if landmarks[i] is None:
            entry["skipped"] = "no face in the target frame"
            per_frame.append(entry)
            continue
        target = frames.frames[i].astype(np.float32) / 255.0
        expr, pose = track.expressions[i], track.head_poses[i]
        person = detector.segment_person(frames.frames[i])
        if options.refine_iterations > 0:
            expr, pose = refine_photometric(avatar, frames.frames[i], landmarks[i], expr, pose, options.refine_iterations, person)
        out = avatar.render(expr, (pose[:3], pose[3:]), camera=avatar.camera)
        rgb = out.rgb.numpy().clip(0, 1)
        mask = (person > 0.5) & (out.alpha.numpy()[..., 0] > MASK_ALPHA)
        if mask.sum() < 100:
            entry["skipped"] = "the avatar and the person do not overlap"
            per_frame.append(entry)
            continue
        entry["psnr_db"] = psnr(rgb, target, mask)
        entry["ssim"] = float(ssim_map(torch.from_numpy(rgb), torch.from_numpy(target)).numpy()[mask].mean())
        entry["l1"] = float(np.abs(rgb - target)[mask].mean())
        render8 = (rgb * 255 + 0.5).astype(np.uint8)
        try:
            lm_render = detector.detect(render8).landmarks
            iod = max(interocular(landmarks[i]), 1.0)
            entry["expression_error"] = _group_error(lm_render, landmarks[i], iod)
            p_render, _ = solver.solve(lm_render, np.concatenate([expr, pose]), POSE_REFIT_ITERATIONS)
            p_target, _ = solver.solve(landmarks[i], np.concatenate([expr, pose]), POSE_REFIT_ITERATIONS)
            entry["pose_error_deg"] = _rotation_angle_deg(p_render[-6:-3], p_target[-6:-3])
        except FaceNotFoundError:
            entry["expression_error"] = None
            entry["pose_error_deg"] = None
            entry["note"] = "no face detected on the render"
        if embed is not None:
            a, b = embed(render8), embed(frames.frames[i])
            entry["identity_similarity"] = None if a is None or b is None else float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        per_frame.append(entry)
        images.append((i, frames.frames[i], render8, np.abs(rgb - target).mean(-1) * mask))
        if progress is not None:
            progress(k + 1, len(scored))

    def summary(key: str) -> dict | None:
        vals = [e[key] for e in per_frame if e.get(key) is not None]
        if not vals:
            return None
        return {"mean": float(np.mean(vals)), "median": float(np.median(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))}

    report = {
        "source": frames.source,
        "frames": n,
        "fps": frames.fps,
        "options": asdict(options),
        "avatar": {"gaussians": avatar.num_gaussians, "preset": avatar.options.preset_name, "seed": avatar.seed},
        "scored_frames": len([e for e in per_frame if "psnr_db" in e]),
        "frames_without_face": track.missing,
        "overall": {k: summary(k) for k in ("psnr_db", "ssim", "l1", "expression_error", "pose_error_deg", "identity_similarity")},
        "identity_similarity_note": None if embed is not None else
            "not measured: install the optional [eval] extra (dlib-bin, face-recognition-models) for dlib face embeddings",
        "lpips_note": "not measured: LPIPS weights are not available offline",
        "per_frame": per_frame,
        "seconds": time.perf_counter() - t0,
        "_images": images,
    }  # fmt: skip
    return report


def heat_map(err: np.ndarray) -> np.ndarray:
    """[H, W] error (0..HEAT_MAX) -> [H, W, 3] uint8, black -> red -> yellow -> white."""
    x = np.clip(err / HEAT_MAX, 0, 1)
    rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], -1)
    return (rgb * 255).astype(np.uint8)


def contact_sheet(images: list, tile: int = 256) -> np.ndarray:
    """Rows of target | render | error heat map, each ``tile`` px tall."""
    from PIL import Image

    rows = []
    for _, target, render, err in images:
        h, w = target.shape[:2]
        size = (int(round(tile * w / h)), tile)
        parts = [np.asarray(Image.fromarray(x).resize(size, Image.Resampling.BILINEAR)) for x in (target, render, heat_map(err))]
        rows.append(np.concatenate(parts, 1))
    return np.concatenate(rows, 0) if rows else np.zeros((tile, tile, 3), np.uint8)


def write_report(report: dict, out_dir: str | Path) -> Path:
    """report.json + contact_sheet.png into ``out_dir`` (created); returns the JSON path."""
    from .io import save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = report.get("_images", [])
    save_png(out / "contact_sheet.png", contact_sheet(images[:CONTACT_FRAMES]))
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    (out / "report.json").write_text(json.dumps(clean, indent=1), encoding="utf-8")
    return out / "report.json"
