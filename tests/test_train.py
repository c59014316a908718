"""``python -m sega train`` (``sega.train.loop``), its DDP run under torchrun, exact resume, builds from the prior it
writes (``sega.nets.prior``, ``sega.nets.prior_file``), and bad data, on a tiny set made here from a few frames of
three dev clips (48 px crops, a 64² UV atlas) and a clip with no face."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

DEV = Path(__file__).resolve().parents[2] / "shared" / "dev-media"
CLIPS = ("retalking_1.mp4", "tpsmm_driving.mp4", "echomimic_b.mp4")
TINY = dict(size=48, every=20, max_frames=4, source_frames=2, atlas_resolution=64)
QUICK = dict(steps=4, static_steps=2, batch=2, lr=3e-3, val_every=0, checkpoint_every=0, val_frames=2)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from sega.train.prepare import PrepareOptions, prepare

    base = tmp_path_factory.mktemp("train")
    blank = base / "blank"  # a clip with no face: recorded as failed, the rest trains
    blank.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 100 + i, np.uint8)).save(blank / f"{i:04d}.png")
    manifest = prepare([DEV / "videos" / c for c in CLIPS] + [blank], base / "set", PrepareOptions(**TINY))
    assert sorted(manifest["clips"]) == ["echomimic_b", "retalking_1", "tpsmm_driving"] and "blank" in manifest["failed"]
    return base / "set"


def _options(**kw):
    from sega.train.options import TrainOptions

    return TrainOptions(**{**QUICK, **kw})


def _weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "header_json"}


def test_ddp_two_processes_gloo(tiny_set, tmp_path):
    """torchrun, 2 processes on gloo: the loss on a fixed batch goes down and both ranks end with equal weights."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sega", "train", str(tiny_set),
           "-o", str(out), "--steps", "6", "--static-steps", "3", "--batch", "2", "--lr", "3e-3", "--val-every", "0", "--checkpoint-every", "3",
           "--val-frames", "2", "--quiet"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["ranks_equal"] and len(summary["rank_digests"]) == 2
    assert summary["fixed_batch_loss"]["end"] < summary["fixed_batch_loss"]["start"]
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6  # only rank 0 writes: one row per step
    assert [r.split(",")[1] for r in rows[1:]] == ["static"] * 3 + ["dynamic"] * 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003.npz", "step-000006.npz"]
    assert summary["val_clips"] == ["tpsmm_driving"] and "validation: tpsmm_driving" in run.stdout
    val = summary["validation"][0]
    assert val["frames"] == 2 and 5 < val["psnr_db"] < 60 and 5 < val["psnr_db_zero"] < 60


def test_resume_continues_exactly(tiny_set, tmp_path):
    from sega.train.loop import LAST_CHECKPOINT, TrainError, train

    whole = train(tiny_set, tmp_path / "whole", _options(), show_progress=False)
    train(tiny_set, tmp_path / "parts", _options(steps=2), show_progress=False)
    resumed = train(tiny_set, tmp_path / "parts", _options(), resume=True, show_progress=False)
    assert whole["steps"] == resumed["steps"] == 4 and resumed["steps_this_run"] == 2
    a, b = _weights(tmp_path / "whole" / LAST_CHECKPOINT), _weights(tmp_path / "parts" / LAST_CHECKPOINT)
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)  # weights and Adam's state
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert len((tmp_path / "parts" / "log.csv").read_text().strip().splitlines()) == 1 + 4
    with pytest.raises(TrainError, match="lr differ"):
        train(tiny_set, tmp_path / "parts", _options(lr=1e-2, steps=5), resume=True, show_progress=False)
    with pytest.raises(TrainError, match="--resume"):
        train(tiny_set, tmp_path / "parts", _options(), show_progress=False)
    with pytest.raises(TrainError, match="nothing to resume"):
        train(tiny_set, tmp_path / "fresh", _options(), resume=True, show_progress=False)


def test_bad_data_leaves_the_rest_usable(tiny_set, tmp_path):
    """A truncated shard takes its clip out (with the reason); a clip with no face was never in; the rest trains."""
    from sega.train.dataset import DatasetError
    from sega.train.loop import Trainer

    damaged = tmp_path / "set"
    shutil.copytree(tiny_set, damaged)
    shard = damaged / "clips" / "echomimic_b" / "shard-00000.npz"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    trainer = Trainer(damaged, tmp_path / "run", _options(steps=1), show_progress=False)
    try:
        assert trainer.data.skipped.keys() == {"blank", "echomimic_b"}
        assert "no face" in trainer.data.skipped["blank"] and "damaged" in trainer.data.skipped["echomimic_b"]
        assert trainer.train_clips == ["retalking_1"] and trainer.val_clips == ["tpsmm_driving"]
        summary = trainer.run()
        assert summary["steps"] == 1
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert set(config["skipped_clips"]) == {"blank", "echomimic_b"}
    finally:
        trainer.close()
    for cid in ("retalking_1", "tpsmm_driving"):
        (damaged / "clips" / cid / "unwrap.npz").unlink()
    with pytest.raises(DatasetError, match="no usable clip"):
        Trainer(damaged, tmp_path / "run2", _options(steps=1), show_progress=False)


@pytest.fixture(scope="module")
def prior_file(tiny_set, tmp_path_factory):
    from sega.train.loop import FINAL_PRIOR, train

    out = tmp_path_factory.mktemp("prior")
    train(tiny_set, out, _options(), show_progress=False)
    return out / FINAL_PRIOR


def test_build_from_prior(prior_file, ict_model):
    """The build's decoders start from the prior's prediction for the photo; the avatar records the prior."""
    from sega.avatar import AvatarOptions, build_avatar
    from sega.io import file_sha256, load_photo
    from sega.nets.prior import uv_input
    from sega.nets.prior_file import decoders_from_prior, load_prior

    prior = load_prior(prior_file, ict_model)
    assert prior.header["train"]["step"] == 4 and prior.atlas_resolution == 64 and not prior.optimiser
    photo = load_photo(DEV / "photos" / "tpsmm_source.png")
    options = AvatarOptions.preset("fast", iterations=6)
    avatar, _ = build_avatar(photo, ict_model, options, prior=prior)
    assert avatar.provenance["prior"]["sha256"] == file_sha256(prior_file) and avatar.provenance["prior"]["file"] == "prior.npz"
    rgb = avatar.render(camera=avatar.orbit_camera(0.0, size=96)).rgb
    assert torch.isfinite(rgb).all() and float(rgb.std()) > 0.05
    # the prediction itself: the encoder's maps in the decoders, the prior's trunk weights
    from sega.avatar.build import dynamic_decoder_options

    uv = torch.rand(6, 64, 64)
    dec = decoders_from_prior(prior, ict_model, dynamic_decoder_options(options), uv)
    feats, ident = prior.net.identity_encoder(uv[None])
    torch.testing.assert_close(dec.static.features, feats[0].detach())
    torch.testing.assert_close(dec.dynamic.identity, ident[0].detach())
    torch.testing.assert_close(dec.dynamic.trunk.head.weight, prior.net.dynamic.trunk.head.weight)
    assert float(prior.net.static.trunk.head.weight.detach().abs().max()) > 0  # trained: no longer the zero initialisation
    # without a prior nothing changes: zero-initialised heads
    plain, _ = build_avatar(photo, ict_model, replace(options, iterations=1))
    assert plain.provenance["prior"] is None


def _rewrite(src: Path, dst: Path, header_change=None, drop=None) -> Path:
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header_json"].tobytes())
    if header_change:
        header_change(header)
    arrays["header_json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    if drop:
        arrays.pop(drop)
    np.savez(dst, **arrays)
    return dst


def test_prior_refusals(prior_file, ict_model, tmp_path):
    from sega.avatar import AvatarOptions, build_avatar
    from sega.nets.prior_file import PriorFileError, load_prior

    def other_model(h):
        h["head_model"]["name"] = "flame"

    def other_basis(h):
        h["head_model"]["expression_basis_sha256"] = "0" * 64

    def other_version(h):
        h["format_version"] = 99

    def huge(h):
        h["configs"]["identity_encoder"]["stem_channels"] = 1 << 20

    cases = [(_rewrite(prior_file, tmp_path / "a.npz", other_model), "head model 'flame'"),
             (_rewrite(prior_file, tmp_path / "b.npz", other_basis), "another version of this head model's expression basis"),
             (_rewrite(prior_file, tmp_path / "c.npz", other_version), "prior format version 99"),
             (_rewrite(prior_file, tmp_path / "d.npz", huge), "out of range"),
             (_rewrite(prior_file, tmp_path / "e.npz", drop="prior.static.trunk.head.weight"), "do not match")]  # fmt: skip
    truncated = tmp_path / "f.npz"
    truncated.write_bytes(prior_file.read_bytes()[:4000])
    cases.append((truncated, "not a readable prior file"))
    pickled = tmp_path / "g.npz"
    np.savez(pickled, header_json=np.array([{"format": "sega-prior"}], dtype=object))
    cases.append((pickled, "holds Python objects"))
    not_prior = tmp_path / "h.npz"
    np.savez(not_prior, header_json=np.frombuffer(b'{"format": "x"}', np.uint8))
    cases.append((not_prior, "not a sega prior"))
    cases.append((tmp_path / "missing.npz", "not found"))
    for path, message in cases:
        with pytest.raises(PriorFileError, match=message) as err:
            load_prior(path, ict_model)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    prior = load_prior(prior_file, ict_model)
    with pytest.raises(PriorFileError, match="this preset asks for 64"):  # the high preset's dynamic decoder is twice as fine
        build_avatar(load_photo_small(), ict_model, AvatarOptions.preset("high", iterations=1), prior=prior)


def load_photo_small():
    from sega.io import load_photo

    return load_photo(DEV / "photos" / "tpsmm_source.png")


def test_train_cli_errors(tmp_path, capsys):
    from sega.cli import main

    assert main(["train", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a prepared set" in err and len(err.splitlines()) == 1
    assert main(["build", "--example", "-o", str(tmp_path / "b"), "--prior", str(tmp_path / "none.npz")]) == 2
    assert "prior file not found" in capsys.readouterr().err


def test_app_takes_a_prior_and_refuses_a_bad_one(tmp_path, capsys, monkeypatch):
    """The app reads its prior from --prior or SEGA_PRIOR and refuses a bad one at start, before it serves."""
    from sega.app.options import AppOptions
    from sega.app.server import main

    monkeypatch.setenv("SEGA_PRIOR", str(tmp_path / "p.npz"))
    assert AppOptions.from_env().prior == tmp_path / "p.npz"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["--prior", str(bad), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npz" in err and "not a readable prior file" in err and len(err.splitlines()) == 1
