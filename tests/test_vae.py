"""The displacement VAE: UV sampling convention, reproducible training, and the shipped ICT checkpoint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sega.errors import HeadModelError
from sega.headmodel.base import HeadModel
from sega.nets.vae import (
    DisplacementVAE,
    DisplacementVAEOptions,
    default_checkpoint_path,
    evaluate_displacement_vae,
    expression_basis_sha256,
    heldout_expressions,
    load_displacement_vae,
    read_displacement_vae_checkpoint,
    sample_expressions,
    train_displacement_vae,
    vertex_atlas_uv,
)

MAX_CHECKPOINT_BYTES = 3_000_000
HELDOUT_TEST_COUNT = 100  # the first 100 of the script's fixed held-out set
MAX_HELDOUT_MEAN_MM = 1.0  # target: mean vertex error vs the linear blendshapes
MIN_JAW_DROP_M = 0.02  # jawOpen = 1 must move the chin at least 2 cm down
MAX_NEUTRAL_MEAN_MM = 0.5  # zero expression decodes to ~0
CHIN_IBUG68 = 8  # 0-based iBUG-68 index of the chin tip

# A tiny config for the synthetic model and the reproducibility test (map 32 = 8 * 2 * 2).
TINY = DisplacementVAEOptions(
    num_expressions=3, latent_dim=4, map_resolution=32, encoder_hidden=(16,), decoder_base_resolution=8,
    decoder_channels=(4, 4), output_upscale=2, atlas_resolution=32, steps=4, batch_size=4, warmup_steps=2,
    eval_count=8,
)


def synthetic_model(n: int = 9) -> HeadModel:
    """An n x n vertex sheet (10 cm) with UVs = (x, y) scaled to [0.1, 0.9] and 3 smooth blendshapes."""
    s = np.linspace(-0.05, 0.05, n)
    x, y = np.meshgrid(s, s)
    verts = np.stack([x, y, np.zeros_like(x)], -1).reshape(-1, 3).astype(np.float32)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, b, e], [a, e, d]]
    faces = np.array(faces, dtype=np.int64)
    uv = 0.1 + 0.8 * (verts[:, :2] + 0.05) / 0.1
    basis = np.stack([
        np.stack([np.zeros(n * n), np.full(n * n, -0.01), np.zeros(n * n)], -1),  # drop 1 cm
        np.stack([np.zeros(n * n), np.zeros(n * n), 0.2 * verts[:, 0] + 0.01], -1),  # tilt in z
        np.stack([0.1 * verts[:, 1], np.zeros(n * n), np.zeros(n * n)], -1),  # shear
    ]).astype(np.float32)
    return HeadModel(
        name="sheet", vertices=verts, faces=faces, face_uvs=uv[faces].astype(np.float32),
        face_regions=np.zeros(faces.shape[0], dtype=np.int16), region_names=("face",),
        identity_basis=np.zeros((1, n * n, 3), dtype=np.float32), expression_basis=basis,
        expression_names=("drop", "tilt", "shear"), symmetry=np.arange(n * n), pivot=np.zeros(3, dtype=np.float32),
    )


# ---- pure unit tests (no head-model data) ----------------------------------------------------


def test_config_roundtrip_and_validation():
    cfg = DisplacementVAEOptions()
    assert DisplacementVAEOptions.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        DisplacementVAEOptions(map_resolution=100)


def test_uv_convention_hits_texel_centres():
    """Texel (row r, col c) is at u = (c + .5) / R, v = 1 - (r + .5) / R (sega.conventions)."""
    cfg = TINY
    r_res = cfg.map_resolution
    rows, cols = np.meshgrid(np.arange(r_res), np.arange(r_res), indexing="ij")
    uv = np.stack([(cols.ravel() + 0.5) / r_res, 1.0 - (rows.ravel() + 0.5) / r_res], 1)
    vae = DisplacementVAE(cfg, torch.as_tensor(uv, dtype=torch.float32))
    disp_map = torch.randn(2, 3, r_res, r_res)
    got = vae.vertex_displacements(disp_map)  # [2, R*R, 3]
    want = disp_map.permute(0, 2, 3, 1).reshape(2, -1, 3)  # row-major texels
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # v = 1 - 0.5/R is row 0 (the top), u = 0.5/R column 0.
    corner = vae.vertex_displacements(disp_map, torch.tensor([[0.5 / r_res, 1.0 - 0.5 / r_res]]))
    torch.testing.assert_close(corner[:, 0], disp_map[:, :, 0, 0])


def test_shapes_and_vertex_mask():
    model = synthetic_model()
    uv, in_atlas = vertex_atlas_uv(model, TINY)
    assert uv.shape == (model.num_vertices, 2) and in_atlas.all()
    assert (uv > 0).all() and (uv < 1).all()
    mask = torch.ones(model.num_vertices)
    mask[0] = 0.0
    vae = DisplacementVAE(TINY, torch.from_numpy(uv), mask)
    expr = torch.rand(5, 3)
    mu, logvar = vae.encode(expr)
    assert mu.shape == logvar.shape == (5, TINY.latent_dim)
    assert vae.decode(mu).shape == (5, 3, TINY.map_resolution, TINY.map_resolution)
    out = vae(expr)
    assert out.shape == (5, model.num_vertices, 3)
    assert (out[:, 0] == 0).all()


def test_expression_sampler_covers_kinds():
    cfg = DisplacementVAEOptions()
    expr = sample_expressions(2000, cfg, torch.Generator().manual_seed(0))
    active = (expr > 0).sum(1)
    assert expr.min() >= 0 and expr.max() <= 1
    assert (active == 0).any() and (active == 1).any() and (active == cfg.num_expressions).any()
    sparse = active[(active > 1) & (active < cfg.num_expressions)]
    assert sparse.max() <= cfg.max_active
    torch.testing.assert_close(heldout_expressions(cfg, 10), heldout_expressions(cfg, 20)[:10])


def test_short_training_is_bit_identical():
    model = synthetic_model()
    a = train_displacement_vae(model, TINY)
    b = train_displacement_vae(model, TINY)
    for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(ta, tb), ka
    c = train_displacement_vae(model, dataclasses.replace(TINY, seed=TINY.seed + 1))
    assert not torch.equal(a.from_latent.weight, c.from_latent.weight)


def test_save_load_roundtrip_and_basis_check(tmp_path):
    from sega.nets.vae import save_displacement_vae

    model = synthetic_model()
    vae = train_displacement_vae(model, TINY)
    path = save_displacement_vae(vae, tmp_path / "vae.pt", {"expression_basis_sha256": expression_basis_sha256(model)})
    back = load_displacement_vae(model, path)
    assert back.config == TINY
    expr = torch.rand(3, 3)
    torch.testing.assert_close(back(expr), vae(expr), atol=2e-5, rtol=1e-2)  # float16 weights
    other = dataclasses.replace(model, expression_basis=model.expression_basis * 1.5)
    with pytest.raises(HeadModelError, match="another expression basis"):
        load_displacement_vae(other, path)


# ---- the shipped ICT-FaceKit checkpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def ict(ict_model):
    return ict_model  # the session's ICT model (root conftest; fails clearly when the data is missing)


@pytest.fixture(scope="module")
def shipped(ict):
    return load_displacement_vae(ict)


def test_checkpoint_is_small_and_plain():
    path = default_checkpoint_path()
    assert path.is_file(), "train it: python scripts/train_displacement_vae.py"
    assert path.stat().st_size < MAX_CHECKPOINT_BYTES
    payload = read_displacement_vae_checkpoint(path)  # weights_only=True
    prov = payload["provenance"]
    for key in ("script", "seed", "training_steps", "expression_basis_sha256", "torch_version", "heldout"):
        assert key in prov, key
    assert prov["heldout"]["mean_mm_active"] <= MAX_HELDOUT_MEAN_MM
    DisplacementVAEOptions.from_dict(payload["config"])


def test_shipped_heldout_error(ict, shipped):
    expr = heldout_expressions(shipped.config, HELDOUT_TEST_COUNT)
    errors = evaluate_displacement_vae(shipped, ict, expr)
    assert errors["mean_mm_active"] <= MAX_HELDOUT_MEAN_MM, errors
    assert errors["mean_mm_all"] <= MAX_HELDOUT_MEAN_MM, errors


def test_shipped_jaw_open_and_neutral(ict, shipped):
    emb = ict.landmarks["ibug68"]
    chin = int(ict.faces[emb.face_ids[CHIN_IBUG68]][np.argmax(emb.barycentrics[CHIN_IBUG68])])
    with torch.no_grad():
        disp = shipped(torch.from_numpy(np.stack([ict.expression_vector(jawOpen=1.0), ict.expression_vector()])))
    assert disp[0, chin, 1] <= -MIN_JAW_DROP_M, disp[0, chin]
    assert disp[1].norm(dim=-1).mean() * 1000 < MAX_NEUTRAL_MEAN_MM


def test_shipped_uv_layout_matches_current_atlas(ict, shipped):
    """The checkpoint's per-vertex UVs are those of today's sega.uv atlas (else: retrain)."""
    uv, in_atlas = vertex_atlas_uv(ict, shipped.config)
    np.testing.assert_allclose(shipped.vertex_uv.numpy(), uv, atol=1e-6)
    np.testing.assert_array_equal(shipped.vertex_mask.numpy() > 0, in_atlas)


def test_shipped_is_exportable(shipped):
    """No hidden state in forward: torch.export traces it (ONNX export goes through the same graph)."""
    expr = torch.zeros(2, shipped.config.num_expressions)
    exported = torch.export.export(shipped, (expr,))
    torch.testing.assert_close(exported.module()(expr), shipped(expr))
