"""Driving an avatar from a video (reenactment): track -> smooth -> remove the driver's rest face -> clip -> video.

``drive_frames`` turns a driving video's frames into per-frame expression weights and head poses:
landmarks per frame (``FaceDetector.track``, MediaPipe's video mode; full re-detection on loss),
the driver's identity and camera fitted once on the first frame with a face, expression + pose per
frame (``sega.track``), a One-Euro filter over time (``sega.smoothing``; off for a single image),
and, for cross-identity driving, the driver's *neutral offset* removed: the weights of the calmest
frames (least total expression) are taken as the driver's resting face and subtracted, so a driver
with a resting smile does not give the avatar a permanent smile. Frames without a face hold the
last good fit and are reported.

The result converts to a clip in the bundle's clip format (``export.clips``: fps + per-frame weights
+ head pose) and renders, beside the driving frames, to an MP4 (``render_side_by_side``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import FaceNotFoundError
from .headmodel.base import HeadModel
from .smoothing import OneEuroOptions, one_euro
from .gaze import gaze_channels
from .track import Track, TrackOptions, detect_video_landmarks, track_landmarks
from .video import Frames

RENDER_BATCH_FRAMES = 8  # frames animated and rendered as one batch (one gsplat call on a GPU; on the CPU the
# batched animate pays its ops once per batch; 8 frames of ~40k Gaussians are ~20 MB)


@dataclass(frozen=True)
class DriveOptions:
    """How a video drives an avatar. Stored in the clip's ``source`` entry."""

    track: TrackOptions = TrackOptions()  # per-frame solver
    smooth: bool = True  # One-Euro filter over time (never for a single image)
    one_euro: OneEuroOptions = OneEuroOptions()  # filter settings of the expression weights
    pose_one_euro: OneEuroOptions = OneEuroOptions(beta=30.0)  # of the head pose (radians, metres): with the weights'
    # beta a 25-degree turn in 0.2 s fell 6 degrees behind, with 30 it falls 1.1 behind, and a still head's pose jitter
    # is still about halved (the astronaut with 1 px landmark noise: 0.23 -> 0.11 degrees std)
    gaze_one_euro: OneEuroOptions = OneEuroOptions(min_cutoff=0.3, beta=0.3)  # of the gaze channels (eyeLook*): read
    # from five iris points an eye (``sega.gaze``), they carry 1 px of landmark noise (astronaut, 1 px noise: max weight
    # std 0.025 with beta 1, 0.019 at 0.5, 0.017 at 0.3, where the mouth's channels are the noisiest again). A saccade's
    # speed still lifts the cut-off to ~3 Hz (a 0.3 look in a frame at 30 fps), and eyes settle between looks
    remove_neutral: bool = True  # subtract the driver's resting face (cross-identity driving)
    neutral_calm_fraction: float = 0.25  # the driver's rest: per-channel median over this fraction of the frames, those
    # with the least total expression (a per-channel low percentile undercut the rest where one channel dips while
    # another acts: the smile weight drops on jaw-open frames)
    render_size: int = 384  # side (px) of the avatar renders in the output video

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DriveResult:
    """Per-frame driving signal."""

    expressions: np.ndarray  # [T, E] weights for the avatar (smoothed, neutral removed), in [0, 1]
    head_poses: np.ndarray  # [T, 6] axis-angle radians + metres, relative to the driver's first face frame
    track: Track  # the raw per-frame fit
    neutral: np.ndarray | None  # [E] the driver's resting weights that were removed (None: not removed)
    fps: float
    landmarks: list  # T x ([478, 3] pixels or None)
    seconds: dict = field(default_factory=dict)  # "landmarks", "solve", "total"

    @property
    def missing(self) -> list[int]:
        return self.track.missing


def driver_neutral(expressions: np.ndarray, calm_fraction: float) -> np.ndarray:
    """[T, E] weights -> [E] the driver's resting face: the per-channel median over the calmest
    ``calm_fraction`` of the frames (least summed weight; at least one frame)."""
    activity = expressions.sum(axis=1)  # [T]
    calm = np.argsort(activity, kind="stable")[: max(1, int(round(calm_fraction * len(expressions))))]
    return np.median(expressions[calm], axis=0).astype(np.float32)


def retarget(track: Track, fps: float, options: DriveOptions, single_image: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Smoothing and neutral removal of a track -> (expressions [T, E], head poses [T, 6], neutral [E] | None)."""
    expr, pose = track.expressions.astype(np.float32), track.head_poses.astype(np.float32)
    if options.smooth and not single_image and len(expr) > 1:
        gaze = sorted(i for cols in gaze_channels(list(track.expression_names)).values() for i in cols)
        raw_gaze = expr[:, gaze]
        expr = one_euro(expr, fps, options.one_euro)
        if gaze:
            expr[:, gaze] = one_euro(raw_gaze, fps, options.gaze_one_euro)
        pose = one_euro(pose, fps, options.pose_one_euro)
    neutral = None
    if options.remove_neutral and not single_image and len(expr) > 1:
        neutral = driver_neutral(expr, options.neutral_calm_fraction)
        expr = expr - neutral
    return np.clip(expr, 0.0, 1.0), pose, neutral


def drive_frames(frames: Frames, model: HeadModel, detector, options: DriveOptions = DriveOptions(), identity=None, camera=None) -> DriveResult:
    """Frames -> ``DriveResult``. identity / camera: hold these fixed instead of fitting the first frame.

    Raises ``FaceNotFoundError`` when no frame has a face.
    """
    t0 = time.perf_counter()
    landmarks, t_lmk = detect_video_landmarks(frames.frames, detector)
    if all(lm is None for lm in landmarks):
        raise FaceNotFoundError(f"{frames.source}: no face found in any of its {len(frames)} frames")
    h, w = frames.frames[0].shape[:2]
    fps = frames.fps or 1.0
    track = track_landmarks(model, landmarks, (h, w), options.track, identity, camera, fps)
    expr, pose, neutral = retarget(track, fps, options, frames.kind == "image")
    secs = {"landmarks": t_lmk, "solve": track.seconds["solve"], "total": time.perf_counter() - t0}
    return DriveResult(expr, pose, track, neutral, fps, landmarks, secs)


def to_clip(result: DriveResult, name: str, source: str = "", options: DriveOptions | None = None) -> dict:
    """The driving signal as a clip dict (``export.clips`` format)."""
    from export.clips import (  # the format's owner
        CLIP_FORMAT,
        CLIP_VERSION,
        POSE_DECIMALS,
        WEIGHT_DECIMALS,
    )

    clip = {
        "format": CLIP_FORMAT,
        "version": CLIP_VERSION,
        "name": name,
        "fps": float(result.fps),
        "expression_names": list(result.track.expression_names),
        "frames": np.round(result.expressions, WEIGHT_DECIMALS).tolist(),
        "head_pose": np.round(result.head_poses, POSE_DECIMALS).tolist(),
        "source": {"video": source, "missing_frames": result.missing,
                   "neutral_removed": None if result.neutral is None else np.round(result.neutral, WEIGHT_DECIMALS).tolist()},
    }  # fmt: skip
    if options is not None:
        clip["source"]["options"] = options.to_dict()
    return clip


def face_square(landmarks: list, image_shape: tuple[int, int], margin: float = 1.8) -> tuple[int, int, int]:
    """(x0, y0, side) of a square around the first face's landmarks, ``margin`` x its size, inside the frame."""
    lm = next(lm for lm in landmarks if lm is not None)
    x0, y0 = lm[:, :2].min(0)
    x1, y1 = lm[:, :2].max(0)
    h, w = image_shape
    side = int(min(max(x1 - x0, y1 - y0) * margin, h, w))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return int(np.clip(cx - side / 2, 0, w - side)), int(np.clip(cy - side / 2, 0, h - side)), side


def render_side_by_side(avatar, frames: Frames, result: DriveResult, size: int, progress=None):
    """Yield [size, 2 * size, 3] uint8 frames: the driving frame (square face crop) | the driven avatar."""
    from PIL import Image

    from .avatar.frames import animate_frames, render_frames

    x0, y0, side = face_square(result.landmarks, frames.frames[0].shape[:2])
    cam = avatar.orbit_camera(0.0, size=size)
    n = len(frames.frames)
    for start in range(0, n, RENDER_BATCH_FRAMES):
        idx = slice(start, min(n, start + RENDER_BATCH_FRAMES))
        poses = np.asarray(result.head_poses[idx], dtype=np.float32)
        batch = animate_frames(avatar, np.asarray(result.expressions[idx], dtype=np.float32), poses[:, :3], poses[:, 3:])
        rgbs = render_frames(avatar, batch, cam).rgb.cpu().numpy()
        for i, rgb in enumerate(rgbs, start):
            frame = frames.frames[i]
            crop = Image.fromarray(frame[y0 : y0 + side, x0 : x0 + side]).resize((size, size), Image.Resampling.BILINEAR)
            render = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
            if progress is not None:
                progress(i)
            yield np.concatenate([np.asarray(crop), render], axis=1)
