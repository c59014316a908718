"""Fidelity on held-out frames (self-reenactment): build from one frame, drive with the others, compare.

``evaluate_frames`` builds the avatar from the source frame (or takes one), tracks every frame with
the avatar's own identity and camera held fixed (so renders line up with the frames), refines each
scored frame's expression and head pose photometrically, and scores every K-th other frame
(``sega.eval_frame``): the *driven* render (the frame's expression) and the *frozen* baseline (the
avatar's source expression at the same head pose), each against the target, with

* PSNR, SSIM and L1 inside the head mask, and PSNR / SSIM inside the target's mouth and eye regions;
* landmark measures on render and target: eye opening per eye, mouth opening and width, gaze, brow
  height (``sega.face_measures``), teeth shown or not; the landmark expression error and the head-pose
  error; the dlib identity distance (below 0.6: the same person) and cosine similarity, when the
  ``[eval]`` extra's model files are installed (otherwise the report says so). LPIPS is not
  reported: its weights are not available offline.

``summarise`` turns the per-frame scores into the report's ``overall`` (driven), ``frozen`` and
``gain`` figures, the teeth agreement and the frames whose eyes the render closed; the report's keys
are listed in the README. ``write_report`` writes ``report.json`` and ``contact_sheet.png``
(target | driven | frozen | error heat map).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .devices import DEFAULT_DEVICE, resolve_device
from .errors import FaceNotFoundError, SegaError
from .presets import DEFAULT_PRESET
from .landmarks import mediapipe_groups
from .eval_frame import REREAD, FrameScorer, yaw_change_deg
from .gaze import gaze_channels, look_from
from .track import ExpressionPoseSolver, TrackOptions, detect_video_landmarks, track_landmarks
from .video import Frames

MASK_ALPHA = 0.5  # render alpha above which the avatar covers a pixel
DLIB_EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"  # 128-d face embedding (CC0)
DLIB_SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"  # alignment for it (CC0; the 68-point model is non-commercial)
DLIB_UPSAMPLE = 1  # dlib's HOG detector upsamples the image once (faces from ~40 px)
LANDMARK_BOX_SCALE = 1.07  # dlib-style face box side / the face oval's width (median over 18 dev photos and frames)
LANDMARK_BOX_CENTRE = 0.52  # its centre this far down the face oval (top of the forehead = 0, chin = 1)
SAME_PERSON_DISTANCE = 0.6  # dlib / face_recognition convention: embeddings closer than this are the same person
CONTACT_FRAMES = 4  # frames shown on the contact sheet (``sheet_images``: those with the most for driving to do)
# Scores of every scored frame, for the driven render and the frozen baseline (sega.eval_frame); DRIVEN_ONLY for the driven one.
SCORES = ("psnr_db", "ssim", "l1", "mouth_psnr_db", "mouth_ssim", "eye_psnr_db", "eye_ssim", "eye_opening_error",
          "mouth_opening_error", "mouth_width_error", "gaze_error", "brow_height_error")  # fmt: skip
DRIVEN_ONLY = ("expression_error", "pose_error_deg", "identity_distance", "identity_similarity")
TURNED_FRACTION = 0.2  # the report's "turned" figures: this fraction of the scored frames, those whose head turned furthest
EYE_OPEN_PERCENTILE = 90  # a target eye's open gap: this percentile of its openings over the scored frames ...
EYE_OPEN_FRACTION = 0.5  # ... an eye is open above this fraction of it (closed below)
HEAT_MAX = 0.25  # |error| (mean over rgb) mapped to the top of the heat map
LOOK_DECIMALS = 3  # the report's looks (gaze channel weights)
REFINE_SIZE = 256  # px, side of the face crop the refinement renders and compares (default when not per preset)
REFINE_CROP_MARGIN = 1.1  # the crop's side over the grown face oval's larger side
REFINE_LR_EXPRESSION = 0.005  # Adam step, weight units
REFINE_LR_ROTATION = 0.003  # Adam step, radians
REFINE_LR_TRANSLATION = 0.0005  # Adam step, metres
REFINE_MASK_GROW = 1.5  # the face-oval polygon is scaled about its centre by this (forehead, hair line, ears) ...
REFINE_REFERENCE_ITERATIONS = 100  # the learning rates above are steps for this many iterations
REFINE_LR_FINAL = 0.1  # each phase's steps decay linearly to this fraction of their start
REFINE_TRANSLATION_PRIOR = 50.0  # weight of |translation change|^2 (metres) in the L1 loss: the photo fixes depth weakly
# The refinement renders only the Gaussians the crop can show: those projecting inside it (or within
# REFINE_CULL_MARGIN of its side) and no deeper than the first render's surface there plus REFINE_CULL_DEPTH.
# The head is opaque, so the back of the head and the hair behind it (about half of the splats) cannot
# reach a pixel; the pose moves a few degrees at most here, a few millimetres at the head's radius.
REFINE_CULL_MARGIN = 0.1  # fraction of the crop's side
REFINE_CULL_DEPTH = 0.06  # metres behind the rendered surface (its alpha-weighted depth; the skin is not
# quite opaque, so what lies just behind it still shows a little: 0.06 keeps the crop within ~40 dB of a full render)
REFINE_CULL_ALPHA = 0.5  # a pixel whose first render is less opaque than this has no surface to hide behind
# Nor does it render the Gaussians whose footprint (the rasteriser's own box: beyond it their alpha is under its
# threshold) misses the loss's mask grown by REFINE_CULL_REACH_PX: they cannot change a compared pixel, so this
# cull leaves the loss and its gradients as they are while the pose moves less than that (a few degrees: ~5 mm at
# the head's side, 3 px on the fast preset's 160 px crop). The crop's corners outside the grown face oval hold
# hair and shoulders: on echomimic_a's fast avatar (hair in a hood) 15.7k -> 12.0k Gaussians rendered a step, and
# bench.bench_eval's refine phase 94.0 -> 84.4 s (2 cores, one session), its PSNR and pose error the same to 1e-3.
REFINE_CULL_REACH_PX = 8
# Channels the refinement leaves as the tracker read them: the lids. Their gap is read directly from the lid
# landmarks, while the photo's lid skin, lashes and the eyeball behind them are what the avatar's source frame
# showed, not this one's: from a squinting source (xportrait_driving) the refinement half-closed eyes the
# tracker had open (lid gap 0.074 -> 0.054 IOD, the target's 0.086), and on a blink (retalking_5) it opened
# one eye while closing the other. Frozen, on 5 dev clips (--max-scored 12): xportrait's eye-opening error
# 0.0229 -> 0.0197 IOD and its wrongly closed frames 1 -> 0, echomimic_c's 0.0137 -> 0.0124, three others
# within 0.0007 (retalking_3 / _5, sadtalker_wda_aoc); eye-region PSNR 0.1-0.2 dB lower.
REFINE_FROZEN_CHANNELS = ("eyeBlink_L", "eyeBlink_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R")


# Photometric refinement per avatar preset: (iterations, crop side in px). An iteration costs ~0.07 s on 2
# cores whatever the crop (the rasteriser's per-Gaussian work dominates), so the fast preset takes 30
# larger steps (REFINE_REFERENCE_ITERATIONS) on a 160 px crop (its texels are ~6 mm apart, ~1.2 mm a
# pixel still resolves them): on the astronaut's own renders 36.1 dB against 41.5 with 100 at 256 px, and
# a 10 s clip's fast eval stays near 3 minutes (bench.bench_eval). Fewer steps do not settle: 20 gave the
# fast avatar's own renders 31.7 dB against 35.6 (tests/test_drive.py, the limit is 35). The finer presets
# get the full refinement.
REFINE_BY_PRESET = {"fast": (30, 160), "default": (100, REFINE_SIZE), "high": (100, REFINE_SIZE)}


@dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate_frames`` measures. Stored in the report (resolved: no None left)."""

    source_frame: int = 0  # frame the avatar is built from (never scored)
    every: int = 5  # score every K-th other frame
    preset: str = DEFAULT_PRESET  # avatar preset when the avatar is built here (the product default: fast is too coarse
    # for eyes and lips, ~6 mm between texels, and its blurred lids read as squints)
    max_scored: int = 60  # score at most this many frames
    refine_iterations: int | None = None  # photometric refinement of each frame's expression + pose (0: landmarks
    # only; None: REFINE_BY_PRESET for the avatar's preset)
    refine_size: int | None = None  # px, side of the refinement's face crop (None: REFINE_BY_PRESET)
    device: str = DEFAULT_DEVICE  # where the build, the renders and the refinement run ("auto", "cpu", "cuda"; resolved in the report)
    prior: str | None = None  # a trained prior file the avatar built here starts from (``sega build --prior``)

    def resolved(self, avatar_preset: str | None) -> "EvalOptions":
        """These options with the refinement filled in for an avatar of ``avatar_preset`` and the device resolved."""
        iterations, size = REFINE_BY_PRESET.get(avatar_preset or self.preset, REFINE_BY_PRESET[DEFAULT_PRESET])
        return replace(self, refine_iterations=iterations if self.refine_iterations is None else self.refine_iterations,
                       refine_size=size if self.refine_size is None else self.refine_size, device=resolve_device(self.device))  # fmt: skip


def _face_recognition_models_dir() -> Path | None:
    """The ``models/`` folder of the ``face_recognition_models`` package, found without importing it:
    its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(root) / "models"
        if all((folder / f).is_file() for f in (DLIB_EMBEDDING_MODEL, DLIB_SHAPE_MODEL)):
            return folder
    return None


def landmark_face_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) px of the square box dlib's HOG detector would give the face whose
    MediaPipe landmarks [478, >=2] are given: centred on the face oval, LANDMARK_BOX_SCALE of its width
    (HOG's boxes run from the brows to the chin, a little inside the cheeks)."""
    oval = landmarks[list(mediapipe_groups()["face_oval"]), :2].astype(np.float64)
    lo, hi = oval.min(0), oval.max(0)
    side = LANDMARK_BOX_SCALE * (hi[0] - lo[0])
    cx, cy = (lo[0] + hi[0]) / 2, lo[1] + LANDMARK_BOX_CENTRE * (hi[1] - lo[1])
    return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2))


def identity_embedder():
    """A function (image [H, W, 3] uint8, landmarks [478, 3] or None) -> 128-d dlib face embedding (None
    when dlib finds no face), or None when the model files are not installed (``face-recognition-models``,
    the ``[eval]`` extra). With landmarks, the face's box comes from them (``landmark_face_box``: the
    eval's frames all have MediaPipe landmarks, and dlib's HOG detector on an upsampled frame costs more
    than the embedding itself); without, dlib's detector finds it (a render whose face may be gone)."""
    folder = _face_recognition_models_dir()
    if folder is None:
        return None
    import dlib

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(folder / DLIB_SHAPE_MODEL))
    net = dlib.face_recognition_model_v1(str(folder / DLIB_EMBEDDING_MODEL))

    def embed(img: np.ndarray, landmarks: np.ndarray | None = None):
        if landmarks is not None:
            box = dlib.rectangle(*landmark_face_box(landmarks))
        else:
            boxes = detector(img, DLIB_UPSAMPLE)
            if not boxes:
                return None
            box = max(boxes, key=lambda b: b.width() * b.height())
        return np.asarray(net.compute_face_descriptor(img, shape(img, box)), dtype=np.float64)

    return embed


def refine_photometric(avatar, frame: np.ndarray, landmarks: np.ndarray, expression: np.ndarray, head_pose: np.ndarray,
                       iterations: int, person: np.ndarray | None = None, size: int = REFINE_SIZE) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Analysis by synthesis: adjust expression [E] and head pose [6] so the avatar's render matches
    ``frame`` inside the head (L1 in the target's grown face-oval polygon, ... and its person mask
    [H, W] when given), starting from the landmark fit.

    Only the driving signal moves; the avatar's appearance is untouched. Landmark tracking alone is
    off by a few degrees (MediaPipe's points shift with the view), which costs PSNR (figures: docs/figures.md).
    """
    from .head_crop import resample_square
    from .imaging import dilate, polygon_mask
    from .render import render as render_gaussians

    # Compare on a square crop around the grown face oval (not the whole frame): the pixels that matter,
    # at REFINE_SIZE px whatever the video's size.
    cam = avatar.camera
    oval = landmarks[list(mediapipe_groups()["face_oval"]), :2].astype(np.float64)
    centre = oval.mean(0)
    grown = centre + (oval - centre) * REFINE_MASK_GROW
    lo_xy, hi_xy = grown.min(0), grown.max(0)
    side = float(max(hi_xy - lo_xy)) * REFINE_CROP_MARGIN
    ox, oy = (lo_xy + hi_xy) / 2 - side / 2
    w = h = size
    s = size / side
    k = np.array([[s, 0.0, -ox * s], [0.0, s, -oy * s], [0.0, 0.0, 1.0]]) @ cam.K
    small = resample_square(frame, ox, oy, side, size).astype(np.float32) / 255.0
    mask = polygon_mask((grown - [ox, oy]) * s, h, w)
    if person is not None:
        mask &= resample_square(person.astype(np.float32), ox, oy, side, size, pad="constant", fill=0.0) > 0.5
    dev = avatar.device  # the refinement renders where the avatar lives

    def on(a) -> torch.Tensor:
        return torch.as_tensor(a, dtype=None if isinstance(a, np.ndarray) and a.dtype == bool else torch.float32, device=dev)

    reach = dilate(mask, REFINE_CULL_REACH_PX)
    mask = on(mask)
    trans0 = on(head_pose[3:])
    target = on(small)
    kt, vt = on(k), on(cam.viewmat)
    bg = on(avatar.options.background)
    expr = on(expression).clone().requires_grad_(True)
    rot = on(head_pose[:3]).clone().requires_grad_(True)
    trans = on(head_pose[3:]).clone().requires_grad_(True)
    # The steps are sized for REFINE_REFERENCE_ITERATIONS; fewer iterations take proportionally larger ones
    # (the same travel), and every phase decays them linearly to REFINE_LR_FINAL of its start so it settles.
    gain = max(1.0, REFINE_REFERENCE_ITERATIONS / max(iterations, 1))
    opt = torch.optim.Adam([{"params": [expr], "lr": REFINE_LR_EXPRESSION * gain}, {"params": [rot], "lr": REFINE_LR_ROTATION * gain},
                            {"params": [trans], "lr": REFINE_LR_TRANSLATION * gain}])  # fmt: skip
    start_lr = [group["lr"] for group in opt.param_groups]
    lo, hi = avatar.head_model.expression_range
    model = avatar.head_model
    frozen = [model.expression_index(n) for n in REFINE_FROZEN_CHANNELS if n in model.expression_names]
    pose_only = iterations // 2  # first half: pose only (the landmark fit is off mostly in pose) ...
    canonical = avatar.animate(expr.detach())  # ... so the frame is animated once for it and only moved
    keep = _visible_in_crop(avatar.posed(canonical, (rot.detach(), trans.detach())), kt, vt, w, h, bg, reach)
    canonical = canonical.subset(keep)
    for it in range(iterations):
        expr.requires_grad_(it >= pose_only)
        progress = it / pose_only if it < pose_only else (it - pose_only) / max(iterations - pose_only, 1)
        for group, lr in zip(opt.param_groups, start_lr):
            group["lr"] = lr * (1.0 + (REFINE_LR_FINAL - 1.0) * progress)
        opt.zero_grad()
        g = avatar.posed(canonical, (rot, trans)) if it < pose_only else avatar.animate(expr, (rot, trans), grad=True).subset(keep)
        out = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, kt, vt, w, h, bg)
        loss = (out.rgb - target).abs().sum(-1)[mask].mean() + REFINE_TRANSLATION_PRIOR * (trans - trans0).pow(2).sum()
        loss.backward()
        if expr.grad is not None and frozen:
            expr.grad[frozen] = 0.0  # Adam's moments stay 0 there: the channel does not move
        opt.step()
        with torch.no_grad():
            expr.clamp_(lo, hi)
    return expr.detach().cpu().numpy(), torch.cat([rot, trans]).detach().cpu().numpy()


def _visible_in_crop(g, K: torch.Tensor, viewmat: torch.Tensor, width: int, height: int, background: torch.Tensor,
                     reach: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """Indices [K] of the posed Gaussians g that the crop (K [3, 3], viewmat [4, 4], width x height) can
    show: centre within REFINE_CULL_MARGIN of the crop and at most REFINE_CULL_DEPTH behind the surface
    that a render of all of them finds at that pixel (anything in front of it, or where the render is
    not opaque, stays); with ``reach`` [H, W] bool, only those whose footprint box touches it."""
    from .camera import project_points
    from .render import render as render_gaussians
    from .render.projection import project_gaussians

    with torch.no_grad():
        out = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, K, viewmat, width, height, background)
        uv, z = project_points(g.means, K, viewmat)
        margin = REFINE_CULL_MARGIN * max(width, height)
        inside = (z > 0) & (uv[:, 0] > -margin) & (uv[:, 0] < width + margin) & (uv[:, 1] > -margin) & (uv[:, 1] < height + margin)
        px = uv[:, 0].floor().long().clamp(0, width - 1)
        py = uv[:, 1].floor().long().clamp(0, height - 1)
        surface = torch.where(out.alpha[py, px, 0] > REFINE_CULL_ALPHA, out.depth[py, px, 0], torch.full_like(z, float("inf")))
        keep = inside & (z <= surface + REFINE_CULL_DEPTH)
        if reach is not None:
            proj = project_gaussians(g.means, g.quats, g.scales, K, viewmat, width, height, opacities=g.opacities)
            # (culled rows have radii 0, which _boxes_touch rejects: no separate ``valid`` test)
            keep &= torch.as_tensor(_boxes_touch(reach, proj.means2d.cpu().numpy(), proj.radii.cpu().numpy()), device=keep.device)
        return torch.nonzero(keep).squeeze(1)


def _boxes_touch(mask: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """[N] bool: whether the pixel box of each centre [N, 2] (x, y px) +- radii [N, 2] (the rasteriser's
    per-Gaussian extent; 0: culled) holds a set pixel of mask [H, W] bool (a summed-area table: O(1) a box)."""
    h, w = mask.shape
    table = np.zeros((h + 1, w + 1), np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    x0 = np.clip(np.floor(centres[:, 0] - radii[:, 0]), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(centres[:, 0] + radii[:, 0]) + 1, 0, w).astype(np.int64)
    y0 = np.clip(np.floor(centres[:, 1] - radii[:, 1]), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(centres[:, 1] + radii[:, 1]) + 1, 0, h).astype(np.int64)
    count = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return (count > 0) & (radii > 0).all(1)


def _summary(values) -> dict | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "median": float(np.median(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))}


def _eyes_closed_wrongly(entries: list[dict]) -> list[int]:
    """Frames where a target eye is open (over ``EYE_OPEN_FRACTION`` of its open gap: the
    ``EYE_OPEN_PERCENTILE`` of its openings over the scored frames) and the driven render's is not."""
    gaps = {}
    for side in ("left", "right"):
        vals = [e["target_measures"][f"eye_opening_{side}"] for e in entries if e.get("target_measures")]
        gaps[side] = float(np.percentile(vals, EYE_OPEN_PERCENTILE)) if vals else None
    bad = []
    for e in entries:
        t, r = e.get("target_measures"), e.get("render_measures")
        if not t or not r:
            continue
        for side, gap in gaps.items():
            key = f"eye_opening_{side}"
            if gap and t[key] > EYE_OPEN_FRACTION * gap and r[key] < EYE_OPEN_FRACTION * gap:
                bad.append(int(e["frame"]))
                break
    return bad


def turned_frames(scored: list[dict]) -> dict | None:
    """PSNR on the frames whose head turned furthest from the source frame (the largest |yaw| change,
    ``TURNED_FRACTION`` of the scored frames, at least one): where the sides of the head the photo did not
    show come into view. None without tracked yaw."""
    with_yaw = sorted((e for e in scored if e.get("yaw_from_source_deg") is not None), key=lambda e: -abs(e["yaw_from_source_deg"]))
    if not with_yaw:
        return None
    top = with_yaw[: max(1, round(TURNED_FRACTION * len(with_yaw)))]
    return {"frames": [int(e["frame"]) for e in top], "min_abs_yaw_deg": round(min(abs(e["yaw_from_source_deg"]) for e in top), 2),
            "psnr_db": float(np.mean([e["psnr_db"] for e in top])), "frozen_psnr_db": float(np.mean([e["frozen"]["psnr_db"] for e in top]))}  # fmt: skip


def summarise(per_frame: list[dict]) -> dict:
    """The report's overall figures: mean / median / min / max of each score for the driven render
    (``overall``) and the frozen baseline (``frozen``), what driving gains (``gain``: driven minus frozen
    means; positive is better for PSNR / SSIM, negative for errors), teeth agreement and the frames
    whose eyes the render closed; ``target_reread``: the landmark errors between two readings of the
    target frames (``eval_frame.REREAD``)."""
    scored = [e for e in per_frame if "psnr_db" in e]
    frozen = [e["frozen"] for e in scored]
    overall = {k: _summary(e.get(k) for e in scored) for k in SCORES + DRIVEN_ONLY}
    base = {k: _summary(e.get(k) for e in frozen) for k in SCORES}
    gain = {k: overall[k]["mean"] - base[k]["mean"] for k in SCORES if overall[k] and base[k]}

    def agreement(entries) -> float | None:
        pairs = [(e.get("teeth_render"), t["teeth_target"]) for e, t in zip(entries, scored)]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        return float(np.mean([a == b for a, b in pairs])) if pairs else None

    closed = _eyes_closed_wrongly(scored)
    reread = {k: _summary(e["target_reread"].get(k) for e in scored if "target_reread" in e) for k in REREAD}
    return {"overall": overall, "frozen": base, "gain": gain, "turned": turned_frames(scored), "target_reread": reread,
            "teeth": {"target_frames_with_teeth": sum(bool(e["teeth_target"]) for e in scored),
                      "agreement": agreement(scored), "frozen_agreement": agreement(frozen)},
            "eyes_closed_wrongly": {"frames": closed, "count": len(closed)}}  # fmt: skip


def look_of(expression: np.ndarray, names) -> list[float] | None:
    """The look (h, v) that an expression [E] gives the subject's left eye (``sega.gaze``: h > 0 towards the subject's
    left, v > 0 up; both eyes share it), rounded for the report; None for a model without the gaze channels."""
    cols = gaze_channels(list(names)).get("left")
    return None if cols is None else [round(x, LOOK_DECIMALS) for x in look_from(expression, cols)]


def evaluate_frames(frames: Frames, model, detector, options: EvalOptions = EvalOptions(), avatar=None, progress=None) -> dict:
    """Self-reenactment report (a JSON-able dict; images under the private key ``_images``).

    avatar: an avatar built from ``frames[options.source_frame]`` (else one is built here).
    """
    from .avatar import Avatar, AvatarOptions

    t0 = time.perf_counter()
    timings: dict[str, float] = {}  # seconds per phase

    def lap(phase: str, since: float) -> float:
        now = time.perf_counter()
        timings[phase] = timings.get(phase, 0.0) + now - since
        return now

    n = len(frames)
    if n < 2:
        raise SegaError("evaluation needs at least two frames (one to build from, one to compare)")
    if not 0 <= options.source_frame < n:
        raise SegaError(f"--source-frame {options.source_frame} is outside the video's {n} frames")
    source = frames.frames[options.source_frame]
    device = resolve_device(options.device)
    if avatar is None:
        prior = None
        if options.prior is not None:
            from .nets.prior_file import load_prior

            prior = load_prior(options.prior, model)
        avatar = Avatar.build(source, model, AvatarOptions.preset(options.preset, device=device), detector=detector, prior=prior)
    avatar = avatar.to(device)  # a given avatar is rendered and refined on the device asked for
    options = options.resolved(avatar.options.preset_name)
    t = lap("build", t0)
    h, w = source.shape[:2]
    if (avatar.camera.height, avatar.camera.width) != (h, w):
        raise SegaError(f"the avatar was built from a {avatar.camera.width}x{avatar.camera.height} photo; the frames are {w}x{h}")
    landmarks, _ = detect_video_landmarks(frames.frames, detector)
    t = lap("landmarks", t)
    if all(lm is None for lm in landmarks):
        raise FaceNotFoundError(f"{frames.source}: no face found in any of its {n} frames")
    track = track_landmarks(model, landmarks, (h, w), TrackOptions(), avatar.identity, avatar.camera, frames.fps)
    t = lap("track", t)
    embed = identity_embedder()
    scorer = FrameScorer(avatar, detector, ExpressionPoseSolver(model, avatar.identity, avatar.camera), embed, MASK_ALPHA)
    scored = [i for i in range(0, n, max(1, options.every)) if i != options.source_frame][: options.max_scored]
    per_frame, images = [], []
    for k, i in enumerate(scored):
        entry: dict = {"frame": i, "yaw_from_source_deg": round(yaw_change_deg(track.head_poses[i][:3], track.head_poses[options.source_frame][:3]), 2)}
        if landmarks[i] is None:
            entry["skipped"] = "no face in the target frame"
        else:
            expr, pose = track.expressions[i], track.head_poses[i]
            person = detector.segment_person(frames.frames[i])
            tracked_look = look_of(expr, model.expression_names)
            if options.refine_iterations > 0:
                expr, pose = refine_photometric(avatar, frames.frames[i], landmarks[i], expr, pose, options.refine_iterations,
                                                person, options.refine_size)  # fmt: skip
            if tracked_look is not None:
                entry["look"] = {"tracked": tracked_look, "scored": look_of(expr, model.expression_names)}
            t = lap("refine", t)
            scores, pictures = scorer.score(frames.frames[i], person, landmarks[i], expr, pose)
            t = lap("score", t)
            entry.update(scores)
            if pictures:
                images.append((i, pictures))
        per_frame.append(entry)
        if progress is not None:
            progress(k + 1, len(scored))
    report = {
        "source": frames.source,
        "frames": n,
        "fps": frames.fps,
        "options": asdict(options),
        "avatar": {"gaussians": avatar.num_gaussians, "preset": avatar.options.preset_name, "seed": avatar.seed},
        "scored_frames": len([e for e in per_frame if "psnr_db" in e]),
        "frames_without_face": track.missing,
        **summarise(per_frame),
        "identity_note": None if embed is not None else
            "not measured: install the optional [eval] extra (face-recognition-models) for dlib face embeddings",
        "lpips_note": "not measured: LPIPS weights are not available offline",
        "per_frame": per_frame,
        "seconds": time.perf_counter() - t0,
        "seconds_by_phase": {k: round(v, 2) for k, v in timings.items()},
        "_images": images,
    }  # fmt: skip
    return report


def heat_map(err: np.ndarray) -> np.ndarray:
    """[H, W] error (0..HEAT_MAX) -> [H, W, 3] uint8, black -> red -> yellow -> white."""
    x = np.clip(err / HEAT_MAX, 0, 1)
    rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], -1)
    return (rgb * 255).astype(np.uint8)


def sheet_images(report: dict, count: int = CONTACT_FRAMES) -> list:
    """The ``count`` entries of ``report["_images"]`` whose frames differ most from the frozen baseline (lowest
    frozen head-mask PSNR: the largest expression and pose changes from the source), in frame order. Why: the
    first scored frames of a talking-head clip are often its calmest, and a sheet of them hides what the
    driving gets wrong (open mouths, teeth, gaze)."""
    images = report.get("_images", [])
    frozen_psnr = {e["frame"]: e["frozen"]["psnr_db"] for e in report.get("per_frame", []) if "frozen" in e}
    ranked = sorted(images, key=lambda item: frozen_psnr.get(item[0], math.inf))[:count]
    return sorted(ranked, key=lambda item: item[0])


def contact_sheet(images: list, tile: int = 256) -> np.ndarray:
    """Rows of target | driven | frozen | driven error heat map, each ``tile`` px tall.
    images: [(frame index, {"target", "driven", "frozen": [H, W, 3] uint8, "error": [H, W]})]."""
    rows = []
    for _, pic in images:
        h, w = pic["target"].shape[:2]
        size = (int(round(tile * w / h)), tile)
        parts = [pic["target"], pic["driven"], pic["frozen"], heat_map(pic["error"])]
        rows.append(np.concatenate([np.asarray(Image.fromarray(x).resize(size, Image.Resampling.BILINEAR)) for x in parts], 1))
    return np.concatenate(rows, 0) if rows else np.zeros((tile, tile, 3), np.uint8)


def write_report(report: dict, out_dir: str | Path) -> Path:
    """report.json, contact_sheet.png and report.html (``sega.eval_html``: curves + the sheet, offline)
    into ``out_dir`` (created); returns the JSON path."""
    from .eval_html import report_html
    from .io import save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "contact_sheet.png", contact_sheet(sheet_images(report)))
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    (out / "report.json").write_text(json.dumps(clean, indent=1), encoding="utf-8")
    (out / "report.html").write_text(report_html(clean, (out / "contact_sheet.png").read_bytes()), encoding="utf-8")
    return out / "report.json"
