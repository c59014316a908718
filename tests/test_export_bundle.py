"""The astronaut avatar's bundle (fast preset): ONNX graphs vs the torch avatar, re-import fidelity,
static.ply layout, GLB validity, manifest, and the export / play commands.

Figures printed with ``-s`` (and recorded as junit properties) are the issue's Must-show numbers
for the fast preset; ``bench/bench_bundle.py`` measures the default preset and the per-frame time.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
from sega.testing.arkit_names import ARKIT_53
from plyfile import PlyData
from test_export_glb import _validate

from export.bundle import DYNAMIC_INDEX_PROPERTY, TEXEL_PROPERTY, write_bundle
from export.glb import read_glb
from export.graphs import DYNAMIC_OUTPUTS
from export.playback import load_bundle
from sega.avatar import psnr
from sega.cli import main

pytestmark = pytest.mark.slow

NUM_RANDOM_EXPRESSIONS = 100
ONNX_TOLERANCE = 1e-4  # max abs difference, every output (issue: <= 1e-4)
MIN_REIMPORT_PSNR_DB = 45.0
INRIA_PROPERTIES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip


@pytest.fixture(scope="module")
def avatar(fast_build):
    return fast_build[0]


@pytest.fixture(scope="module")
def bundle_zip(avatar, tmp_path_factory):
    return write_bundle(avatar, tmp_path_factory.mktemp("bundle") / "bundle.zip")


@pytest.fixture(scope="module")
def bundle(bundle_zip):
    with load_bundle(bundle_zip.path) as b:
        yield b


def random_frames(n: int, num_e: int, seed: int = 0):
    """Sparse random expressions in [0, 1] and head poses within +-0.4 rad, +-2 cm."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        expr = (rng.random(num_e) * (rng.random(num_e) < 0.3)).astype(np.float32)
        pose = np.concatenate([rng.uniform(-0.4, 0.4, 3), rng.uniform(-0.02, 0.02, 3)]).astype(np.float32)
        yield expr, pose


def test_onnx_outputs_equal_the_torch_avatar_on_100_random_expressions(avatar, bundle, record_property):
    """Every graph output against ``Avatar.animate`` / the avatar's own encoder (quaternions up to sign)."""
    num_static = len(avatar.rig.static)
    assert avatar.rig.lid_closing is not None  # the lids' closing colours are in the graph (random blinks exercise them)
    worst = dict.fromkeys(("expression_feature",) + DYNAMIC_OUTPUTS, 0.0)
    for expr, pose in random_frames(NUM_RANDOM_EXPRESSIONS, avatar.head_model.num_expressions):
        out = bundle.frame(expr, pose)
        ref = avatar.animate(expr)  # canonical pose: the graph's splats are canonical, the pose is head_matrix
        with torch.no_grad():
            feature = avatar.decoders.encoder(torch.from_numpy(expr)[None]).numpy()
        posed = avatar.animate(expr, (pose[:3], pose[3:]))
        m = out["head_matrix"]
        expected = {
            "expression_feature": feature,
            "dynamic_means": ref.means[num_static:].numpy(),
            "dynamic_scales": ref.scales[num_static:].numpy(),
            "dynamic_colors": ref.colors[num_static:].numpy(),
            "dynamic_opacities": ref.opacities[num_static:].numpy(),
        }
        for name, want in expected.items():
            worst[name] = max(worst[name], float(np.abs(out[name] - want).max()))
        q, want_q = out["dynamic_quats"], ref.quats[num_static:].numpy()
        worst["dynamic_quats"] = max(worst["dynamic_quats"], float(np.minimum(np.abs(q - want_q).max(1), np.abs(q + want_q).max(1)).max()))
        # head_matrix: the posed avatar equals the canonical one moved by it.
        moved = ref.means.numpy() @ m[:3, :3].T + m[:3, 3]
        worst["head_matrix"] = max(worst["head_matrix"], float(np.abs(moved - posed.means.numpy()).max()))
        assert np.allclose(m[3], [0, 0, 0, 1]) and np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-5)
    print("\nmax |ONNX - torch| over", NUM_RANDOM_EXPRESSIONS, "random expressions:", {k: f"{v:.2e}" for k, v in worst.items()})
    for k, v in worst.items():
        record_property(f"onnx_max_abs_{k}", v)
    assert max(worst.values()) <= ONNX_TOLERANCE, worst


def test_reimported_bundle_renders_like_the_torch_avatar(avatar, bundle, record_property):
    frames = list(random_frames(3, avatar.head_model.num_expressions, seed=7))
    frames[0] = (bundle.expression_with(jawOpen=1.0), np.zeros(6, np.float32))
    worst = np.inf
    for expr, pose in frames:
        cam = bundle.camera(256, 256)
        a = avatar.render(expr, (pose[:3], pose[3:]), camera=cam, background=(1.0, 1.0, 1.0)).rgb.numpy()
        b = bundle.render(expr, pose, camera=cam, background=(1.0, 1.0, 1.0)).rgb.numpy()
        worst = min(worst, psnr(a, b, np.ones(a.shape[:2], bool)))
        assert np.abs(a - 1.0).mean() > 0.05, "the head is in view"
    print(f"\nre-imported bundle vs torch avatar: worst PSNR {worst:.1f} dB over {len(frames)} frames")
    record_property("reimport_psnr_db", worst)
    assert worst >= MIN_REIMPORT_PSNR_DB


def test_static_ply_has_exactly_the_inria_fields_and_the_neutral_frame(bundle_zip, bundle, avatar):
    ply = PlyData.read(str(bundle.root / "static.ply"))
    names = [p.name for p in ply["vertex"].properties]
    assert names == INRIA_PROPERTIES + [DYNAMIC_INDEX_PROPERTY, TEXEL_PROPERTY]
    assert all(p.val_dtype in ("f4", "float32") for p in ply["vertex"].properties[:17])
    assert len(ply["vertex"].data) == avatar.num_gaussians == bundle.num_splats
    # The dynamic splats in static.ply are the graph outputs at the neutral expression: the viewer's
    # first frame and the file agree before any graph has run.
    out = bundle.frame()
    assert np.allclose(bundle.splats["means"][bundle.dynamic_rows], out["dynamic_means"], atol=1e-6)
    texel = np.asarray(bundle.splats["extra"][TEXEL_PROPERTY])
    assert int((texel == -1).sum()) == avatar.num_hair  # hair splats belong to no texel
    assert np.array_equal(np.sort(texel[texel >= 0]), np.arange(len(avatar.maps)))


def test_glb_is_validator_clean_with_arkit_morph_targets(bundle, record_property):
    report = _validate(bundle.root / "avatar.glb")
    record_property("glb_validator_errors", report["issues"]["numErrors"])
    assert report["issues"]["numErrors"] == 0
    doc, _ = read_glb(bundle.root / "avatar.glb")
    assert doc["meshes"][0]["extras"]["targetNames"] == list(ARKIT_53)
    assert len(doc["images"]) == 1, "the avatar's colours are baked into a texture"


def test_manifest_records_hashes_options_and_licences(bundle_zip, bundle, avatar):
    m = bundle.manifest
    for rel, digest in m["files"].items():
        assert hashlib.sha256((bundle.root / rel).read_bytes()).hexdigest() == digest
    assert set(m["files"]) >= {"static.ply", "displacement_vae.onnx", "dynamic_decoder.onnx", "avatar.glb"}
    assert m["provenance"]["avatar_options"] == avatar.options.to_dict() and m["provenance"]["seed"] == avatar.seed
    assert any("ICT-FaceKit" in lic["notice"] for lic in m["licences"])
    assert m["expressions"]["names"] == list(avatar.head_model.expression_names)
    with zipfile.ZipFile(bundle_zip.path) as zf:
        assert "manifest.json" in zf.namelist()
    print(f"\nbundle (fast preset): {bundle_zip}")


def test_cli_export_then_play_a_clip(avatar, tmp_path):
    import imageio.v2 as imageio

    avatar.save(tmp_path / "avatar.npz")
    assert main(["export", str(tmp_path / "avatar.npz"), "-o", str(tmp_path / "b.zip"), "--no-download", "--no-glb"]) == 0
    assert main(["play", str(tmp_path / "b.zip"), "--clip", "talk", "-o", str(tmp_path / "talk.mp4"),
                 "--size", "96", "--max-frames", "20", "--quiet"]) == 0  # fmt: skip
    frames = np.stack(imageio.mimread(tmp_path / "talk.mp4"))
    assert frames.shape == (20, 96, 96, 3)
    assert np.abs(frames[1:].astype(float) - frames[:1]).max() > 20, "the mouth moves during the clip"
