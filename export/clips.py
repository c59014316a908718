"""Procedural expression animations ("clips") that drive an exported avatar, as small JSON files.

Why: the exported bundle should move out of the box, without a video or audio track. A few
hand-designed, deterministic clips ("talk", "smile", "blink", "look_around") exercise the
expression space and the head pose the viewer has to support, and double as smoke tests for
drivability. They are generated from the *names* of the model's expressions (ARKit names for
ICT), so they are independent of the avatar's internals.

File format (JSON, one clip per file)::

    {
      "format": "sega-clip", "version": 1, "name": "talk", "fps": 30,
      "expression_names": [E names, the model's order],
      "frames": [[E weights in [0, 1]], ... T frames],
      "head_pose": [[rx, ry, rz, tx, ty, tz], ... T frames]
    }

``head_pose`` is a rigid motion of the head about ``HeadModel.pivot`` (``sega.conventions``):
axis-angle rotation in radians (rotation first), then translation in metres, in SEGA world axes
(+X subject's left, +Y up, +Z out of the face). So a positive ``ry`` turns the face towards the
subject's left and a positive ``rx`` tilts it down. Frame ``i`` is shown at time ``i / fps`` s.
Weights are rounded to ``WEIGHT_DECIMALS`` and poses to ``POSE_DECIMALS`` decimals to keep files
small. Readers ignore unknown keys (forward compatibility) but refuse other versions.

Reading (``read_clip``) checks the file against one schema (``CLIP_SPEC``, ``sega.schema``) plus the
numeric rows (``_matrix``), with the size and the frame count bounded up front (``MAX_CLIP_BYTES``,
``MAX_CLIP_FRAMES``), so a hostile clip (``fps: 1e-9``, a million frames, ``10**400``) is refused
with one ``ClipError`` line instead of a traceback or a long stall; ``max_frames`` converts only the
frames a caller will play.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from sega.conventions import HEAD_POSE_SIZE
from sega.errors import SegaError
from sega.schema import Any_, Arr, Num, Obj, SchemaError, Str, load_json

CLIP_FORMAT = "sega-clip"
CLIP_VERSION = 1
CLIP_NAMES = ("talk", "smile", "blink", "look_around")
DEFAULT_FPS = 30
DEFAULT_SECONDS = {"talk": 4.0, "smile": 3.0, "blink": 4.0, "look_around": 6.0}
MIN_SECONDS = 0.5  # shorter clips cannot hold a full gesture
WEIGHT_DECIMALS = 4
POSE_DECIMALS = 5
CLIP_SUFFIX = ".json"
MIN_FPS, MAX_FPS = 1.0, 240.0  # a frame held over a second is no animation; above 240 no display or video keeps up
MAX_CLIP_FRAMES = 20_000  # sega.video.VideoLimits.max_frames: a clip driven from the longest readable video still plays
# 20,000 frames of 100 weights (4 decimals) and 6 pose values take ~15 MB as compact JSON; a clip of
# 1 M frames takes at least 18 MB even with one expression, so the byte cap refuses it before parsing.
MAX_CLIP_BYTES = 16 * 1024 * 1024
MAX_CLIP_EXPRESSIONS = 1024  # expression names (ICT has 53, FLAME 100)
MAX_NAME_CHARS = 128  # clip and expression names
MAX_POSE_ABS = 100.0  # |rotation| (rad) and |translation| (m) of a head pose; real clips stay below ~3
CLIP_SPEC = Obj(
    required={
        "format": Str(64, choices=(CLIP_FORMAT,)),
        "version": Num(CLIP_VERSION, CLIP_VERSION, integer=True),
        "name": Str(MAX_NAME_CHARS),
        "fps": Num(MIN_FPS, MAX_FPS),
        "expression_names": Arr(Str(MAX_NAME_CHARS), 0, MAX_CLIP_EXPRESSIONS),
        "frames": Arr(Any_(), 0, MAX_CLIP_FRAMES),  # rows of E weights in [0, 1]: ``_matrix`` (numpy, not per item)
        "head_pose": Arr(Any_(), 0, MAX_CLIP_FRAMES),  # rows of 6 numbers within +-MAX_POSE_ABS: ``_matrix``
    },
    optional={"source": Any_()},  # where the clip came from (``sega.drive.to_clip``), informative
)

# ---- talk: syllables with a raised-cosine jaw envelope, grouped into phrases separated by pauses
TALK_LEAD_IN_S = 0.15  # silence before the first syllable
TALK_TAIL_S = 0.2  # silence after the last syllable
TALK_SYLLABLE_S = (0.14, 0.30)  # syllable duration range
TALK_SYLLABLES_PER_PHRASE = (3, 8)  # inclusive range
TALK_PAUSE_S = (0.25, 0.5)  # pause between phrases
TALK_JAW_AMPLITUDE = (0.5, 0.95)  # jawOpen peak of a syllable (before the viseme's jaw factor)
TALK_VISEME_GAIN = (0.6, 1.0)  # random gain on a viseme's mouth shapes
TALK_NOD_RAD = 0.03  # head pitch amplitude while talking
TALK_NOD_HZ = 0.6
TALK_SWAY_RAD = 0.02  # head yaw amplitude while talking
TALK_SWAY_HZ = 0.25
# (jaw factor, {mouth shape: weight}) loosely after the main viseme classes.
TALK_VISEMES: tuple[tuple[float, dict[str, float]], ...] = (
    (1.0, {"mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3}),  # "a"
    (0.7, {"mouthFunnel": 0.5, "mouthPucker": 0.3}),  # "o"
    (0.4, {"mouthPucker": 0.7, "mouthFunnel": 0.2}),  # "u"
    (0.6, {"mouthStretch_L": 0.4, "mouthStretch_R": 0.4, "mouthSmile_L": 0.2, "mouthSmile_R": 0.2}),  # "e", "i"
    (0.15, {"mouthPress_L": 0.5, "mouthPress_R": 0.5, "mouthRollLower": 0.3, "mouthClose": 0.2}),  # "m", "b", "p"
    (0.3, {"mouthRollLower": 0.5, "mouthUpperUp_L": 0.3, "mouthUpperUp_R": 0.3}),  # "f", "v"
)

# ---- smile: ease in, hold, ease out (a Duchenne smile: the cheeks and eyes take part)
SMILE_START_S = 0.3
SMILE_RAMP_S = 0.6  # ease-in and ease-out duration (shortened for short clips)
SMILE_WEIGHTS = {
    "mouthSmile_L": 0.85,
    "mouthSmile_R": 0.85,
    "cheekSquint_L": 0.55,
    "cheekSquint_R": 0.55,
    "eyeSquint_L": 0.2,
    "eyeSquint_R": 0.2,
}

# ---- blink: fast close, short hold (at least BLINK_HOLD_FRAMES frames so a frame samples the peak), slower open
BLINK_FIRST_S = 0.4
BLINK_INTERVAL_S = (0.8, 1.8)
BLINK_CLOSE_S = 0.07
BLINK_HOLD_S = 0.03
BLINK_HOLD_FRAMES = 1.5
BLINK_OPEN_S = 0.13
BLINK_CHANNELS = ("eyeBlink_L", "eyeBlink_R")

# ---- look_around: gaze targets held for a while; eyes saccade, the head follows part of the way
LOOK_HOLD_S = (0.8, 1.4)  # time at each gaze target
LOOK_GAZE_YAW_RAD = 0.5  # gaze yaw at target +-1
LOOK_GAZE_PITCH_RAD = 0.3  # gaze pitch at target +-1
LOOK_PITCH_RANGE = (-0.6, 0.8)  # target pitch range (up positive), in units of LOOK_GAZE_PITCH_RAD
LOOK_HEAD_FOLLOW = 0.6  # fraction of the gaze angle the head turns
LOOK_SACCADE_S = 0.08
LOOK_HEAD_TURN_S = 0.5
LOOK_EYE_RANGE_RAD = 0.35  # eye-in-head angle that maps to weight 1 of an eyeLook* shape


class ClipError(SegaError, ValueError):
    """A clip could not be made, or a clip file/dict is malformed."""


# ---- shaping helpers ----------------------------------------------------------------------------


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _step_path(t: np.ndarray, times: Sequence[float], values: np.ndarray, transition: float) -> np.ndarray:
    """Piecewise-constant ``values`` [K, C] switching at ``times`` [K] (first ignored), each switch eased over ``transition`` s.

    returns: [T, C]
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.repeat(values[:1], t.shape[0], axis=0)
    for k in range(1, len(times)):
        out += (values[k] - values[k - 1]) * _smoothstep((t - times[k]) / transition)[:, None]
    return out


def _talk(t: np.ndarray, duration: float, fps: float, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    jaw = np.zeros_like(t)
    shapes: dict[str, np.ndarray] = {}
    cursor, end = TALK_LEAD_IN_S, duration - TALK_TAIL_S
    while cursor < end:
        for _ in range(int(rng.integers(TALK_SYLLABLES_PER_PHRASE[0], TALK_SYLLABLES_PER_PHRASE[1] + 1))):
            dur = float(rng.uniform(*TALK_SYLLABLE_S))
            if cursor + dur > end:
                break
            inside = (t >= cursor) & (t <= cursor + dur)
            env = np.where(inside, np.sin(np.pi * (t - cursor) / dur) ** 2, 0.0)
            jaw_factor, mouth = TALK_VISEMES[int(rng.integers(len(TALK_VISEMES)))]
            jaw += float(rng.uniform(*TALK_JAW_AMPLITUDE)) * jaw_factor * env
            gain = float(rng.uniform(*TALK_VISEME_GAIN))
            for shape, w in mouth.items():
                shapes[shape] = shapes.get(shape, np.zeros_like(t)) + gain * w * env
            cursor += dur
        cursor += float(rng.uniform(*TALK_PAUSE_S))
    channels = {"jawOpen": jaw, **shapes}
    pose = np.zeros((t.shape[0], HEAD_POSE_SIZE))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
    pose[:, 0] = TALK_NOD_RAD * np.sin(2 * np.pi * TALK_NOD_HZ * t + phase[0])
    pose[:, 1] = TALK_SWAY_RAD * np.sin(2 * np.pi * TALK_SWAY_HZ * t + phase[1])
    return channels, pose


def _smile(t: np.ndarray, duration: float, fps: float, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    ramp = min(SMILE_RAMP_S, duration / 4.0)
    start = min(SMILE_START_S, duration / 8.0)
    stop = duration - start - ramp  # ease-out starts here
    env = _smoothstep((t - start) / ramp) * (1.0 - _smoothstep((t - stop) / ramp))
    return {k: w * env for k, w in SMILE_WEIGHTS.items()}, np.zeros((t.shape[0], HEAD_POSE_SIZE))


def _blink(t: np.ndarray, duration: float, fps: float, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    hold = max(BLINK_HOLD_S, BLINK_HOLD_FRAMES / fps)
    length = BLINK_CLOSE_S + hold + BLINK_OPEN_S
    w = np.zeros_like(t)
    start = max(0.0, min(BLINK_FIRST_S, duration - length))
    first = True  # always at least one blink, even in a clip shorter than a blink
    while first or start + length <= duration:
        first = False
        closing = _smoothstep((t - start) / BLINK_CLOSE_S)
        opening = 1.0 - _smoothstep((t - start - BLINK_CLOSE_S - hold) / BLINK_OPEN_S)
        w = np.maximum(w, np.minimum(closing, opening))
        start += length + float(rng.uniform(*BLINK_INTERVAL_S))
    return {c: w for c in BLINK_CHANNELS}, np.zeros((t.shape[0], HEAD_POSE_SIZE))


def _look_around(t: np.ndarray, duration: float, fps: float, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    times, targets = [0.0], [(0.0, 0.0)]  # (yaw, pitch-up), in units of the gaze ranges
    cursor = float(rng.uniform(*LOOK_HOLD_S)) * 0.5
    while cursor < duration - LOOK_HOLD_S[0]:
        times.append(cursor)
        targets.append((float(rng.uniform(-1.0, 1.0)), float(rng.uniform(*LOOK_PITCH_RANGE))))
        cursor += float(rng.uniform(*LOOK_HOLD_S))
    times.append(max(cursor, duration - LOOK_HOLD_S[0]))  # look back at the camera at the end
    targets.append((0.0, 0.0))
    gaze_target = np.asarray(targets) * np.array([LOOK_GAZE_YAW_RAD, LOOK_GAZE_PITCH_RAD])
    gaze = _step_path(t, times, gaze_target, LOOK_SACCADE_S)  # [T, 2] fast
    head = LOOK_HEAD_FOLLOW * _step_path(t, times, gaze_target, LOOK_HEAD_TURN_S)  # [T, 2] slow
    eye = (gaze - head) / LOOK_EYE_RANGE_RAD  # eye-in-head, +yaw = towards the subject's left, +pitch = up
    left, up = eye[:, 0], eye[:, 1]
    channels = {
        "eyeLookOut_L": np.maximum(left, 0.0),
        "eyeLookIn_R": np.maximum(left, 0.0),
        "eyeLookIn_L": np.maximum(-left, 0.0),
        "eyeLookOut_R": np.maximum(-left, 0.0),
        "eyeLookUp_L": np.maximum(up, 0.0),
        "eyeLookUp_R": np.maximum(up, 0.0),
        "eyeLookDown_L": np.maximum(-up, 0.0),
        "eyeLookDown_R": np.maximum(-up, 0.0),
    }
    pose = np.zeros((t.shape[0], HEAD_POSE_SIZE))
    # Yaw about +Y turns the face to the subject's left; looking up is a negative rotation about +X.
    pose[:, :3] = Rotation.from_euler("YX", np.column_stack([head[:, 0], -head[:, 1]])).as_rotvec()
    return channels, pose


_GENERATORS = {"talk": _talk, "smile": _smile, "blink": _blink, "look_around": _look_around}


# ---- public API ----------------------------------------------------------------------------------


def make_clip(
    name: str,
    model_expression_names: Sequence[str],
    fps: float = DEFAULT_FPS,
    seconds: float | None = None,
    seed: int = 0,
) -> dict:
    """A procedural clip as a JSON-ready dict (format in the module docstring).

    name: one of ``CLIP_NAMES``
    model_expression_names: [E] the model's expression names (ARKit for ICT); the clip drives the
        names it knows and leaves the rest at 0. Raises ``ClipError`` if it knows none of them.
    fps: frames per second (> 0); seconds: duration (default ``DEFAULT_SECONDS[name]``, >= MIN_SECONDS)
    seed: random seed; the same arguments always give the same clip
    returns: {"format", "version", "name", "fps", "expression_names": [E],
              "frames": [T][E] weights in [0, 1], "head_pose": [T][6] (rad, m)}, T = round(seconds * fps)
    """
    if name not in _GENERATORS:
        raise ClipError(f"unknown clip {name!r}; choose from {CLIP_NAMES}")
    names = [str(n) for n in model_expression_names]
    if len(set(names)) != len(names) or not names:
        raise ClipError("model_expression_names must be a non-empty list of distinct names")
    seconds = DEFAULT_SECONDS[name] if seconds is None else float(seconds)
    if not (math.isfinite(float(fps)) and MIN_FPS <= fps <= MAX_FPS):
        raise ClipError(f"fps must be a number in [{MIN_FPS:g}, {MAX_FPS:g}], got {fps}")
    if not (math.isfinite(seconds) and seconds >= MIN_SECONDS and seconds * fps <= MAX_CLIP_FRAMES):
        raise ClipError(f"seconds must be >= {MIN_SECONDS} and give at most {MAX_CLIP_FRAMES} frames, got {seconds}")
    n_frames = max(1, int(round(seconds * fps)))
    t = np.arange(n_frames) / float(fps)
    channels, pose = _GENERATORS[name](t, seconds, float(fps), np.random.default_rng(seed))
    known = [c for c in channels if c in names]
    if not known:
        raise ClipError(
            f"clip {name!r} drives {sorted(channels)}, none of which the model has (it has e.g. {names[:5]}); "
            "clips need ARKit-named expressions (ICT-FaceKit)"
        )
    frames = np.zeros((n_frames, len(names)))
    for c in known:
        frames[:, names.index(c)] = channels[c]
    frames = np.round(np.clip(frames, 0.0, 1.0), WEIGHT_DECIMALS)
    return {
        "format": CLIP_FORMAT,
        "version": CLIP_VERSION,
        "name": name,
        "fps": fps,
        "expression_names": names,
        "frames": frames.tolist(),
        "head_pose": np.round(pose, POSE_DECIMALS).tolist(),
    }


def _matrix(rows: list, key: str, width: int, bounds: tuple[float, float], fail) -> np.ndarray:
    """rows: [T] lists of ``width`` numbers within ``bounds`` -> [T, width] float64 (``fail(msg)`` makes the error)."""
    if not rows:
        raise fail(f"'{key}' must be a non-empty list of frames")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise fail(f"'{key}' frame {i} must be a list of {width} numbers, got {got}")
        if not all(type(x) in (int, float) for x in row):
            raise fail(f"'{key}' frame {i} holds a non-number")
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except OverflowError as err:  # an integer beyond float range (10**400)
        raise fail(f"'{key}' holds a number out of range") from err
    if not np.isfinite(arr).all():
        raise fail(f"'{key}' contains NaN or infinite values (first at frame {int(np.argwhere(~np.isfinite(arr))[0, 0])})")
    lo, hi = bounds
    outside = (arr < lo) | (arr > hi)
    if outside.any():
        what = "weights" if key == "frames" else "values"
        raise fail(f"'{key}' {what} must lie in [{lo:g}, {hi:g}] (frame {int(np.argwhere(outside)[0, 0])} does not)")
    return arr


def validate_clip(clip, where: str = "clip", max_frames: int | None = None) -> dict:
    """Check a clip dict (as loaded from JSON) against ``CLIP_SPEC`` -> a normalised copy.

    max_frames: convert (and check the numbers of) only the first ``max_frames`` frames (None: all);
        the frame counts of the whole clip are still checked.
    returns: {"format", "version", "name", "fps": float, "expression_names": [E] str,
              "frames": [T, E] float32 ndarray, "head_pose": [T, 6] float32 ndarray}
    Raises ``ClipError`` naming the first problem (``where`` prefixes the message).
    """

    def fail(msg: str) -> ClipError:
        return ClipError(f"{where}: {msg}")

    if not isinstance(clip, dict):
        raise fail(f"expected a JSON object, got {type(clip).__name__}")
    if clip.get("format") != CLIP_FORMAT:
        raise fail(f"'format' must be {CLIP_FORMAT!r}, got {str(clip.get('format'))[:60]!r}")
    version = clip.get("version")
    if type(version) is not int or version != CLIP_VERSION:
        raise fail(f"unsupported clip version {str(version)[:60]} (this reader knows version {CLIP_VERSION})")
    try:
        # CLIP_SPEC.check, not validate(): no spec here recurses below the rows, and the rows are
        # checked by _matrix without recursion, so validate's depth walk over every number is not needed.
        CLIP_SPEC.check(clip, where)
    except SchemaError as err:
        raise ClipError(str(err)) from err
    names = clip["expression_names"]
    if not clip["name"]:
        raise fail("'name' must be a non-empty string")
    if not names:
        raise fail("'expression_names' must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise fail("'expression_names' contains duplicates")
    if len(clip["head_pose"]) != len(clip["frames"]):
        raise fail(f"'head_pose' has {len(clip['head_pose'])} frames but 'frames' has {len(clip['frames'])}")
    if max_frames is not None and (type(max_frames) is not int or max_frames < 1):
        raise ClipError(f"max_frames must be a whole number >= 1, got {max_frames!r}")
    n = len(clip["frames"]) if max_frames is None else min(max_frames, len(clip["frames"]))
    frames = _matrix(clip["frames"][:n], "frames", len(names), (0.0, 1.0), fail)
    pose = _matrix(clip["head_pose"][:n], "head_pose", HEAD_POSE_SIZE, (-MAX_POSE_ABS, MAX_POSE_ABS), fail)
    return {
        "format": CLIP_FORMAT,
        "version": CLIP_VERSION,
        "name": clip["name"],
        "fps": float(clip["fps"]),
        "expression_names": list(names),
        "frames": frames.astype(np.float32),
        "head_pose": pose.astype(np.float32),
    }


def write_clip(path: str | Path, clip: dict) -> Path:
    """Validate ``clip`` (a ``make_clip`` dict) and write it as compact JSON; returns the path."""
    validate_clip(clip, where=f"clip {clip.get('name')!r}" if isinstance(clip, dict) else "clip")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clip, separators=(",", ":"), allow_nan=False), encoding="utf-8")
    return path


def write_clips(
    directory: str | Path,
    names: Sequence[str],
    expression_names: Sequence[str],
    fps: float = DEFAULT_FPS,
    seed: int = 0,
) -> list[Path]:
    """Write ``<directory>/<name>.json`` for each clip name (see ``make_clip``); returns the paths in order.

    expression_names: [E] the model's expression names (e.g. ``model.expression_names``)
    """
    directory = Path(directory)
    return [write_clip(directory / f"{n}{CLIP_SUFFIX}", make_clip(n, expression_names, fps=fps, seed=seed)) for n in names]


def read_clip(path: str | Path, max_frames: int | None = None) -> dict:
    """Read and validate a clip file -> normalised dict (see ``validate_clip``) of at most ``max_frames``
    frames (None: all). The file's size is checked before it is read (``MAX_CLIP_BYTES``).

    Raises ``ClipError`` when the file is too large, not JSON or not a valid clip, ``FileNotFoundError`` when missing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"clip not found: {path}")
    try:
        data = load_json(path, MAX_CLIP_BYTES, str(path))
    except SchemaError as err:
        raise ClipError(f"not a readable JSON clip: {err}") from err
    return validate_clip(data, where=str(path), max_frames=max_frames)
