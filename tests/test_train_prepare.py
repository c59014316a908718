"""``python -m sega prepare`` (``sega.train.prepare``, ``sega.train.dataset``): a tiny training set made from
a few frames of two dev clips (tiny crops), in a pool of two processes, with a clip that has no face and
an image sequence with a missing frame beside them."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DEV_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "videos"
CLIPS = ("retalking_1.mp4", "tpsmm_driving.mp4")
TINY = dict(size=48, every=20, max_frames=4, source_frames=2, atlas_resolution=64)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from sega.train.prepare import PrepareOptions, prepare

    base = tmp_path_factory.mktemp("prepare")
    blank = base / "blank"  # frames with no face
    blank.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 120 + i, np.uint8)).save(blank / f"{i:04d}.png")
    gap = base / "gap"  # an image sequence missing its frame 2
    gap.mkdir()
    for i in (0, 1, 3):
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(gap / f"frame_{i:04d}.png")
    options = PrepareOptions(workers=2, **TINY)
    sources = [DEV_VIDEOS / c for c in CLIPS] + [blank, gap]
    calls = []
    manifest = prepare(sources, base / "set", options, lambda done, total, cid: calls.append((done, total, cid)))
    return base / "set", manifest, options, sources, calls


def test_clips_are_tracked_cropped_and_unwrapped(prepared):
    from sega.train.dataset import load_shard, load_unwrap, read_manifest

    root, manifest, options, _, calls = prepared
    assert read_manifest(root) == manifest
    assert sorted(manifest["clips"]) == ["retalking_1", "tpsmm_driving"]
    assert manifest["options"]["size"] == 48 and manifest["head_model"]["num_expressions"] == 53
    assert calls[-1][:2] == (4, 4)
    for cid, entry in manifest["clips"].items():
        assert entry["frames"] == 4 and entry["frames_with_face"] == 4
        shard = load_shard(root, cid, 0, manifest)
        assert shard["images"].shape == (4, 48, 48, 3) and shard["masks"].shape == (4, 48, 48)
        assert list(shard["frame_index"]) == [0, 20, 40, 60]
        assert np.isfinite(shard["expressions"]).all() and np.isfinite(shard["head_poses"]).all()
        assert 0.2 < (shard["masks"] > 127).mean() < 0.9  # a head and shoulders in the crop
        assert shard["images"].std() > 10  # a picture, not padding
        assert np.asarray(entry["camera"]["K"]).shape == (3, 3) and entry["camera"]["width"] == 48
        unwrap = load_unwrap(root, cid, manifest)
        assert unwrap["colors"].shape[:2] == unwrap["confidence"].shape == (2, unwrap["colors"].shape[1])
        seen = unwrap["confidence"] > 128
        assert 0.1 < seen.mean() < 0.6  # the front of the face, not the back of the head
        assert unwrap["colors"][seen].std() > 5


def test_a_bad_clip_is_recorded_and_the_rest_is_kept(prepared):
    _, manifest, *_ = prepared
    assert manifest["failed"]["blank"].endswith("blank: no face found in its 1 frame read")  # every 20th of 3
    assert "frame 2 is missing" in manifest["failed"]["gap"]


def test_a_prepared_set_resumes_and_refuses_other_options(prepared, tmp_path):
    from sega.train.dataset import DatasetError
    from sega.train.prepare import prepare

    root, manifest, options, sources, _ = prepared
    copy = tmp_path / "set"
    shutil.copytree(root, copy)
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*.npz")}
    again = prepare(sources[:2], copy, replace(options, workers=1))
    assert again["clips"] == manifest["clips"]
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*.npz")} == stamps  # nothing redone
    with pytest.raises(DatasetError, match="other options"):
        prepare(sources[:2], copy, replace(options, size=64))


def test_a_truncated_shard_takes_out_its_clip_only_and_is_prepared_again(prepared, tmp_path):
    from sega.train.dataset import DatasetError, load_shard, usable_clips
    from sega.train.prepare import prepare

    root, manifest, options, sources, _ = prepared
    copy = tmp_path / "set"
    shutil.copytree(root, copy)
    shard = copy / "clips" / "tpsmm_driving" / "shard-00000.npz"
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)
    good, bad = usable_clips(copy)
    assert good == ["retalking_1"] and "tpsmm_driving" in bad and "blank" in bad
    with pytest.raises(DatasetError, match="damaged"):
        load_shard(copy, "tpsmm_driving", 0)
    assert load_shard(copy, "retalking_1", 0)["images"].shape[0] == 4
    prepare(sources[:2], copy, replace(options, workers=1))  # resume: the damaged clip is prepared again
    assert usable_clips(copy)[0] == ["retalking_1", "tpsmm_driving"]


def test_hostile_or_foreign_sets_are_refused(prepared, tmp_path):
    import json

    from sega.train.dataset import DatasetError, load_npz, read_manifest

    root, manifest, *_ = prepared
    with pytest.raises(DatasetError, match="not a prepared set"):
        read_manifest(tmp_path)
    bad = dict(manifest, version=99)
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="format version 99"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(dict(manifest, clips={"../etc": {}})))
    with pytest.raises(DatasetError, match="not a plain name"):
        read_manifest(tmp_path)
    pickled = tmp_path / "p.npz"  # an object array needs a pickle to load: refused, not run
    np.savez(pickled, images=np.array([{"a": 1}], dtype=object))
    entry = {"file": pickled.name, "bytes": pickled.stat().st_size, "sha256": __import__("sega.train.dataset", fromlist=["x"]).sha256_file(pickled)}
    with pytest.raises(DatasetError, match="not a readable array file"):
        load_npz(pickled, entry, {"images": np.uint8})


def test_cli_prepare_reports_failures_in_one_line(tmp_path, capsys):
    from sega.cli import main

    blank = tmp_path / "blank"
    blank.mkdir()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(blank / "0000.png")
    code = main(["prepare", str(blank), "-o", str(tmp_path / "set"), "--size", "48", "--quiet"])
    out = capsys.readouterr()
    assert code == 2 and "failed: blank:" in out.out and "no face found" in out.out
    assert main(["prepare", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "set2")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "set2")
