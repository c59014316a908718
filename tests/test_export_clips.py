"""Procedural expression clips: shapes, ranges, motion, determinism, file round trip, malformed files."""

import json

import numpy as np
import pytest

from export.clips import (
    BLINK_CHANNELS,
    CLIP_NAMES,
    DEFAULT_SECONDS,
    SMILE_WEIGHTS,
    TALK_VISEMES,
    ClipError,
    make_clip,
    read_clip,
    validate_clip,
    write_clips,
)

from sega.testing.arkit_names import ARKIT_53

LOOK_CHANNELS = tuple(f"eyeLook{d}_{s}" for d in ("Up", "Down", "In", "Out") for s in ("L", "R"))


def _col(clip: dict, name: str) -> np.ndarray:
    return np.asarray(clip["frames"])[:, clip["expression_names"].index(name)]


def test_channel_names_are_arkit():
    used = set(SMILE_WEIGHTS) | set(BLINK_CHANNELS) | set(LOOK_CHANNELS) | {"jawOpen"}
    for _, shapes in TALK_VISEMES:
        used |= set(shapes)
    assert used <= set(ARKIT_53), used - set(ARKIT_53)


def test_clip_names_match_ict(ict_model):
    assert tuple(ict_model.expression_names) == ARKIT_53


@pytest.mark.parametrize("name", CLIP_NAMES)
@pytest.mark.parametrize("fps", [24, 30])
def test_shapes_and_ranges(name, fps):
    clip = make_clip(name, ARKIT_53, fps=fps)
    n = round(DEFAULT_SECONDS[name] * fps)
    assert clip["format"] == "sega-clip" and clip["version"] == 1 and clip["name"] == name and clip["fps"] == fps
    assert clip["expression_names"] == list(ARKIT_53)
    frames, pose = np.asarray(clip["frames"]), np.asarray(clip["head_pose"])
    assert frames.shape == (n, 53) and pose.shape == (n, 6)
    assert frames.min() >= 0.0 and frames.max() <= 1.0 and np.isfinite(pose).all()
    assert frames.max() > 0.5  # every clip does something visible
    assert np.abs(pose[:, 3:]).max() == 0.0  # no translation in these clips
    assert np.abs(pose[:, :3]).max() < 0.5  # head rotations stay small (< ~30 degrees)
    json.dumps(clip, allow_nan=False)  # JSON-ready
    validate_clip(clip)


def test_talk_moves_jaw_and_mouth():
    clip = make_clip("talk", ARKIT_53)
    jaw = _col(clip, "jawOpen")
    assert jaw.std() > 0.1 and jaw.max() > 0.5
    assert jaw[0] == 0.0 and jaw[-1] == 0.0  # starts and ends with the mouth closed
    rises = np.sum((jaw[1:] > 0.2) & (jaw[:-1] <= 0.2))
    assert rises >= 5  # syllable rhythm, not one long opening
    moving = [n for n in ARKIT_53 if _col(clip, n).max() > 0.05]
    assert {"mouthFunnel", "mouthPucker"} & set(moving) and len(moving) >= 6
    assert np.abs(np.asarray(clip["head_pose"])[:, :2]).max() > 0.01  # a little head motion


def test_smile_eases_in_holds_and_out():
    clip = make_clip("smile", ARKIT_53)
    for name in ("mouthSmile_L", "mouthSmile_R", "cheekSquint_L", "cheekSquint_R"):
        w = _col(clip, name)
        assert w[0] < 0.01 and w[-1] < 0.01 and w.max() >= 0.5
        held = w >= w.max() - 1e-6
        assert held.sum() >= 10 and np.all(np.diff(np.flatnonzero(held)) == 1)  # one contiguous hold
    np.testing.assert_array_equal(_col(clip, "mouthSmile_L"), _col(clip, "mouthSmile_R"))


@pytest.mark.parametrize("fps", [10, 24, 30, 60])
def test_blink_closes_fully_and_briefly(fps):
    clip = make_clip("blink", ARKIT_53, fps=fps)
    for name in BLINK_CHANNELS:
        w = _col(clip, name)
        assert w.max() >= 0.95
        closed = w > 0.5
        assert 0 < closed.mean() < 0.25  # short blinks, eyes mostly open
        assert np.sum(closed[1:] & ~closed[:-1]) >= 2  # at least two separate blinks in 4 s
    others = [n for n in ARKIT_53 if n not in BLINK_CHANNELS]
    assert max(_col(clip, n).max() for n in others) == 0.0


def test_look_around_moves_eyes_and_head():
    clip = make_clip("look_around", ARKIT_53)
    for name in LOOK_CHANNELS:
        assert _col(clip, name).max() > 0.05, name
    pose = np.asarray(clip["head_pose"])
    assert np.abs(pose[:, 1]).max() > 0.1  # yaw
    assert np.abs(pose[:, 0]).max() > 0.02  # pitch
    assert np.abs(pose[0]).max() == 0.0 and np.abs(pose[-1]).max() < 1e-3  # starts and ends facing the camera
    # opposite eyeLook shapes of one eye are never active together
    assert np.minimum(_col(clip, "eyeLookIn_L"), _col(clip, "eyeLookOut_L")).max() == 0.0


def test_deterministic_and_seeded():
    for name in CLIP_NAMES:
        assert make_clip(name, ARKIT_53, seed=3) == make_clip(name, ARKIT_53, seed=3)
    assert make_clip("talk", ARKIT_53, seed=0)["frames"] != make_clip("talk", ARKIT_53, seed=1)["frames"]


def test_other_orders_and_missing_names():
    """The clip follows the model's order; names it does not drive stay zero; unknown-only models are refused."""
    names = list(reversed(ARKIT_53)) + ["tongueOut"]
    clip = make_clip("blink", names)
    assert clip["expression_names"] == names
    np.testing.assert_array_equal(_col(clip, "eyeBlink_L"), _col(make_clip("blink", ARKIT_53), "eyeBlink_L"))
    assert _col(clip, "tongueOut").max() == 0.0
    with pytest.raises(ClipError, match="ARKit"):
        make_clip("talk", [f"exp{i}" for i in range(50)])
    with pytest.raises(ClipError, match="unknown clip"):
        make_clip("dance", ARKIT_53)
    with pytest.raises(ClipError, match="seconds"):
        make_clip("talk", ARKIT_53, seconds=0.1)
    with pytest.raises(ClipError, match="fps"):
        make_clip("talk", ARKIT_53, fps=0)


def test_write_and_read(tmp_path):
    paths = write_clips(tmp_path / "clips", CLIP_NAMES, ARKIT_53)
    assert [p.name for p in paths] == [f"{n}.json" for n in CLIP_NAMES]
    for name, path in zip(CLIP_NAMES, paths):
        clip = read_clip(path)
        ref = make_clip(name, ARKIT_53)
        assert clip["name"] == name and clip["expression_names"] == list(ARKIT_53)
        assert clip["frames"].dtype == np.float32 and clip["frames"].shape == (len(ref["frames"]), 53)
        np.testing.assert_allclose(clip["frames"], ref["frames"], atol=1e-6)
        np.testing.assert_allclose(clip["head_pose"], ref["head_pose"], atol=1e-6)
    assert max(p.stat().st_size for p in paths) < 200_000  # small files


def _mutate(clip: dict, how: str) -> dict:
    c = json.loads(json.dumps(clip))
    if how == "short_row":
        c["frames"][3] = c["frames"][3][:-1]
    elif how == "pose_count":
        c["head_pose"] = c["head_pose"][:-1]
    elif how == "pose_width":
        c["head_pose"][0] = [0.0] * 5
    elif how == "above_one":
        c["frames"][2][0] = 1.5
    elif how == "negative":
        c["frames"][2][0] = -0.1
    elif how == "version":
        c["version"] = 2
    elif how == "format":
        c["format"] = "something-else"
    elif how == "no_frames":
        del c["frames"]
    elif how == "empty_frames":
        c["frames"], c["head_pose"] = [], []
    elif how == "string_weight":
        c["frames"][0][0] = "0.5"
    elif how == "bool_fps":
        c["fps"] = True
    elif how == "duplicate_names":
        c["expression_names"][1] = c["expression_names"][0]
    return c


@pytest.mark.parametrize(
    "how, message",
    [
        ("short_row", "frame 3 must be a list of 53"),
        ("pose_count", "'head_pose' has"),
        ("pose_width", "list of 6"),
        ("above_one", r"\[0, 1\]"),
        ("negative", r"\[0, 1\]"),
        ("version", "unsupported clip version 2"),
        ("format", "format"),
        ("no_frames", "'frames'"),
        ("empty_frames", "'frames'"),
        ("string_weight", "non-number"),
        ("bool_fps", "fps"),
        ("duplicate_names", "duplicates"),
    ],
)
def test_malformed_clips(tmp_path, how, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_mutate(make_clip("blink", ARKIT_53), how)))
    with pytest.raises(ClipError, match=message):
        read_clip(path)


def test_malformed_files(tmp_path):
    clip = make_clip("smile", ARKIT_53)
    text = json.dumps(clip).replace("0.0,", "NaN,", 1)  # Python's json writes/reads the NaN literal
    (tmp_path / "nan.json").write_text(text)
    with pytest.raises(ClipError, match="NaN"):
        read_clip(tmp_path / "nan.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ClipError, match="not a readable JSON clip"):
        read_clip(tmp_path / "junk.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ClipError, match="JSON object"):
        read_clip(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError):
        read_clip(tmp_path / "missing.json")


# ---- hostile clips: one ClipError line, bounded time and memory --------------------------------------

MAX_HUGE_CLIP_S = 2.0  # refusing a 1 M-frame clip must not parse it
MAX_HUGE_CLIP_PEAK_BYTES = 1024 * 1024  # ... nor hold it in memory (tracemalloc peak)


@pytest.mark.parametrize("fps, message", [(1e-9, r"fps: must be a number in \[1, 240\], got 1e-09"), (0, r"fps: must be a number in \[1, 240\], got 0"),
                                          (-30, "fps: must be a number"), (1e9, "fps: must be a number"), (True, "fps: must be a number")])  # fmt: skip
def test_clip_fps_out_of_range_is_refused(tmp_path, fps, message):
    path = tmp_path / "fps.json"
    path.write_text(json.dumps({**make_clip("blink", ARKIT_53), "fps": fps}))
    with pytest.raises(ClipError, match=message) as err:
        read_clip(path)
    assert len(str(err.value).splitlines()) == 1


def test_clip_fps_nan_is_refused(tmp_path):
    path = tmp_path / "nan_fps.json"
    path.write_text(json.dumps(make_clip("blink", ARKIT_53)).replace('"fps": 30', '"fps": NaN'))
    with pytest.raises(ClipError, match="NaN is not valid JSON"):
        read_clip(path)
    with pytest.raises(ClipError, match="fps: must be a number"):
        validate_clip({**make_clip("blink", ARKIT_53), "fps": float("nan")})
    with pytest.raises(ClipError, match="fps must be a number in"):
        make_clip("blink", ARKIT_53, fps=1e-9)


def test_million_frame_clip_is_refused_fast_and_without_reading_it(tmp_path):
    import time
    import tracemalloc

    from export.clips import MAX_CLIP_BYTES

    path = tmp_path / "long.json"
    rows = ",".join(["[0]"] * 1_000_000)  # the smallest possible frames: one expression
    poses = ",".join(["[0,0,0,0,0,0]"] * 1_000_000)
    path.write_text(f'{{"format":"sega-clip","version":1,"name":"long","fps":30,"expression_names":["jawOpen"],"frames":[{rows}],"head_pose":[{poses}]}}')
    del rows, poses
    assert path.stat().st_size > MAX_CLIP_BYTES
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ClipError, match="over the 16777216-byte limit"):
            read_clip(path, max_frames=1)
        elapsed, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < MAX_HUGE_CLIP_S and peak < MAX_HUGE_CLIP_PEAK_BYTES, (elapsed, peak)


def test_frame_count_is_capped_and_max_frames_converts_only_the_first(tmp_path):
    from export.clips import MAX_CLIP_FRAMES

    clip = make_clip("blink", ARKIT_53[:3] + ("eyeBlink_L",))
    many = {**clip, "frames": [clip["frames"][0]] * (MAX_CLIP_FRAMES + 1), "head_pose": [clip["head_pose"][0]] * (MAX_CLIP_FRAMES + 1)}
    with pytest.raises(ClipError, match=f"frames: must be a list of 0 to {MAX_CLIP_FRAMES} items"):
        validate_clip(many)
    bad_tail = {**clip, "frames": clip["frames"][:-1] + [["x"] * 4]}  # a broken last frame
    path = tmp_path / "tail.json"
    path.write_text(json.dumps(bad_tail))
    first = read_clip(path, max_frames=2)
    assert first["frames"].shape == (2, 4) and first["head_pose"].shape == (2, 6)
    with pytest.raises(ClipError, match="non-number"):
        read_clip(path)
    with pytest.raises(ClipError, match="max_frames must be a whole number >= 1"):
        read_clip(path, max_frames=0)


@pytest.mark.parametrize("value, message", [(10**400, "out of range"), ([[0.0]], "non-number"), (None, "non-number"), (1e308, r"\[0, 1\]")])
def test_hostile_numbers_in_frames_are_refused(tmp_path, value, message):
    clip = make_clip("smile", ARKIT_53)
    clip["frames"][1][2] = value
    path = tmp_path / "n.json"
    path.write_text(json.dumps(clip))
    with pytest.raises(ClipError, match=message):
        read_clip(path)
