"""The UV-space attribute decoders: neutral initialisation, shapes, gradients, UV sampling, persistence, ONNX."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sega.nets.decoders import (
    NUM_ATTRIBUTES,
    AvatarDecoders,
    DynamicDecoder,
    DynamicDecoderOptions,
    ExpressionEncoder,
    StaticDecoder,
    StaticDecoderOptions,
    residual_to_maps,
)
from sega.nets.vae import DisplacementVAEOptions

ONNX_ATOL = 1e-5
N_TEXELS = 500


def texel_uvs(n: int = N_TEXELS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 2)).astype(np.float32)


def perturb_head(decoder, std: float = 0.1, seed: int = 0) -> None:
    """Give the zero-initialised last conv random weights (as a fitted decoder would have)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in decoder.trunk.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def test_untrained_decoders_output_exactly_zero():
    dyn = DynamicDecoder().set_texel_uv(texel_uvs())
    z = torch.randn(3, dyn.config.latent_dim)
    out = dyn(z)
    assert out.shape == (3, N_TEXELS, NUM_ATTRIBUTES)
    assert torch.count_nonzero(out) == 0
    assert dyn.residual_map(z).shape == (3, NUM_ATTRIBUTES, 64, 64)
    sta = StaticDecoder().set_texel_uv(texel_uvs(700))
    assert sta().shape == (700, NUM_ATTRIBUTES) and torch.count_nonzero(sta()) == 0
    maps = residual_to_maps(out[0])
    assert len(maps) == N_TEXELS and maps.rotation.shape == (N_TEXELS, 4) and maps.opacity_logit.shape == (N_TEXELS,)
    assert all(torch.count_nonzero(t) == 0 for t in maps.tensors().values())


def test_initialisation_is_seeded_and_independent_of_the_global_rng():
    torch.manual_seed(123)
    a = DynamicDecoder()
    torch.manual_seed(456)
    b = DynamicDecoder()
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    c = DynamicDecoder(DynamicDecoderOptions(seed=5))
    assert not torch.equal(a.from_latent.weight, c.from_latent.weight)


def test_config_checks_and_round_trip():
    with pytest.raises(ValueError):
        DynamicDecoderOptions(feature_resolution=16, channels=(8, 8), map_resolution=64)
    cfg = DynamicDecoderOptions(channels=(16, 8, 8), identity_channels=4)
    assert DynamicDecoderOptions.from_dict(cfg.to_dict()) == cfg
    assert StaticDecoderOptions.from_dict(StaticDecoderOptions().to_dict()) == StaticDecoderOptions()
    with pytest.raises(ValueError):
        DynamicDecoderOptions.from_dict({**cfg.to_dict(), "bogus": 1})


def test_gradients_reach_the_identity_feature_map():
    dyn = DynamicDecoder().set_texel_uv(texel_uvs())
    opt = torch.optim.Adam(dyn.parameters(), lr=1e-2)
    z = torch.randn(2, dyn.config.latent_dim)
    target = torch.randn(2, N_TEXELS, NUM_ATTRIBUTES) * 0.01
    # Step 1: with the last conv at zero only it gets a gradient ...
    loss = (dyn(z) - target).pow(2).mean()
    loss.backward()
    assert dyn.trunk.head.weight.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    # ... step 2: the gradient reaches the identity map and the Linear(z) of the expression feature.
    (dyn(z) - target).pow(2).mean().backward()
    assert dyn.identity.grad is not None and dyn.identity.grad.abs().sum() > 0
    assert dyn.from_latent.weight.grad.abs().sum() > 0
    sta = StaticDecoder().set_texel_uv(texel_uvs())
    perturb_head(sta)
    sta().pow(2).mean().backward()
    assert sta.features.grad.abs().sum() > 0


def test_residual_map_is_sampled_at_texel_centres():
    """A texel at the centre of map pixel (row r, col c) reads exactly that pixel (UV convention of sega.nets.vae)."""
    dyn = DynamicDecoder()
    res = dyn.config.map_resolution
    rows, cols = np.array([0, 5, 63, 31]), np.array([0, 60, 2, 31])
    uv = np.stack([(cols + 0.5) / res, 1.0 - (rows + 0.5) / res], 1)
    dyn.set_texel_uv(uv)
    maps = torch.randn(1, NUM_ATTRIBUTES, res, res)
    got = dyn.sample(maps)[0]  # [4, A]
    assert torch.allclose(got, maps[0][:, rows, cols].T, atol=1e-6)


def test_avatar_decoders_persist_exactly_and_fall_back_without_a_checkpoint(tmp_path):
    model = SimpleNamespace(num_expressions=53)
    with pytest.warns(UserWarning, match="untrained"):
        dec = AvatarDecoders.create(model, checkpoint=tmp_path / "missing.pt")
    assert dec.vae_provenance["trained"] is False and dec.vae_provenance["checkpoint_sha256"] is None
    assert all(not p.requires_grad for p in dec.encoder.parameters())
    perturb_head(dec.dynamic)
    dec.dynamic.set_texel_uv(texel_uvs())
    again = AvatarDecoders.from_saved(dec.header(), dec.arrays()).dynamic.set_texel_uv(texel_uvs())
    expr = torch.rand(2, 53)
    with torch.no_grad():
        a = dec.dynamic(dec.encoder(expr))
        b = again(AvatarDecoders.from_saved(dec.header(), dec.arrays()).encoder(expr))
    assert torch.equal(a, b) and a.abs().max() > 0


class _Branch(torch.nn.Module):
    """expr [B, E] -> residuals [B, N, A]: the whole per-frame dynamic branch."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, expr):
        return self.decoder(self.encoder(expr))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (dynamo=False) is deprecated upstream
@pytest.mark.parametrize("what", ["decoder", "branch"])
def test_onnx_export_matches_torch(tmp_path, what):
    ort = pytest.importorskip("onnxruntime")
    dyn = DynamicDecoder().set_texel_uv(texel_uvs()).eval()
    perturb_head(dyn)
    with torch.no_grad():
        dyn.identity.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    if what == "decoder":
        module, x, name = dyn, torch.randn(2, dyn.config.latent_dim), "z"
    else:
        torch.manual_seed(0)
        module, x, name = _Branch(ExpressionEncoder(DisplacementVAEOptions()).eval(), dyn).eval(), torch.rand(2, 53), "expression"
    path = tmp_path / f"{what}.onnx"
    torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=[name], output_names=["residuals"],
                      dynamic_axes={name: {0: "batch"}, "residuals": {0: "batch"}}, external_data=False)
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".onnx"]  # no external data files
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        xb = x[:1].repeat(batch, 1) + 0.1 * torch.arange(batch, dtype=torch.float32)[:, None]
        with torch.no_grad():
            want = module(xb).numpy()
        got = sess.run(None, {name: xb.numpy()})[0]
        assert got.shape == (batch, N_TEXELS, NUM_ATTRIBUTES)
        assert np.abs(got - want).max() <= ONNX_ATOL
        assert np.abs(want).max() > 1e-3  # a non-trivial output was compared


def test_encoder_comes_from_the_displacement_vae_checkpoint(ict_model, tmp_path):
    """With a checkpoint the encoder is the VAE's posterior mean and the provenance names the file's sha256."""
    from sega.nets.decoders import file_sha256
    from sega.nets.vae import (
        build_displacement_vae,
        expression_basis_sha256,
        save_displacement_vae,
    )

    torch.manual_seed(0)
    vae = build_displacement_vae(ict_model, DisplacementVAEOptions())
    path = save_displacement_vae(vae, tmp_path / "vae.pt", {"expression_basis_sha256": expression_basis_sha256(ict_model)}, half=False)
    dec = AvatarDecoders.create(ict_model, checkpoint=path)
    prov = dec.vae_provenance
    assert prov["trained"] is True and prov["checkpoint_sha256"] == file_sha256(path) and prov["checkpoint"] == "vae.pt"
    expr = torch.rand(4, ict_model.num_expressions)
    with torch.no_grad():
        assert torch.allclose(dec.encoder(expr), vae.encode(expr)[0], atol=1e-6)
    assert dec.dynamic.config.latent_dim == vae.config.latent_dim


def test_bilinear_taps_equal_grid_sample_forward_and_backward():
    """The fixed 4-tap gather (fast path, also in the exported graph) against F.grid_sample (slow twin),
    at random UVs including the border band where grid_sample clamps."""
    import torch.nn.functional as F

    from sega.nets.decoders import uv_to_grid

    gen = torch.Generator().manual_seed(0)
    dyn = DynamicDecoder()
    res = dyn.config.map_resolution
    uv = torch.rand(500, 2, generator=gen) * 1.04 - 0.02  # a little outside [0, 1] too
    dyn.set_texel_uv(uv.numpy())
    maps = torch.randn(2, NUM_ATTRIBUTES, res, res, generator=gen, requires_grad=True)
    fast = dyn.sample_rows(maps).transpose(1, 2)
    grid = uv_to_grid(uv)[None, None].expand(2, 1, -1, -1)
    slow = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0].transpose(1, 2)
    assert torch.allclose(fast, slow, atol=1e-5)
    w = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), maps)
    (g_slow,) = torch.autograd.grad((slow * w).sum(), maps)
    assert torch.allclose(g_fast, g_slow, atol=1e-5)


@pytest.mark.parametrize("atlas_res, factor", [(256, 4), (128, 2), (64, 1), (200, 0)])
def test_upsampled_row_taps_equal_grid_sample_at_atlas_texel_centres(atlas_res, factor):
    """The exported graph's sampling (x-upsample + two row taps) against F.grid_sample, forward and
    backward, at every texel centre of an atlas (edges included); 200 is not a multiple of the 64 map:
    the 4-tap fallback is used."""
    import torch.nn.functional as F

    from sega.nets.decoders import uv_to_grid

    gen = torch.Generator().manual_seed(1)
    dyn = DynamicDecoder()
    rows, cols = np.meshgrid(np.arange(atlas_res), np.arange(atlas_res), indexing="ij")
    uv = np.stack([(cols.ravel() + 0.5) / atlas_res, 1.0 - (rows.ravel() + 0.5) / atlas_res], 1)
    dyn.set_texel_uv(uv)
    assert dyn.row_factor == factor
    res = dyn.config.map_resolution
    maps = torch.randn(1, NUM_ATTRIBUTES, res, res, generator=gen, requires_grad=True)
    fast = dyn.sample_rows_upsampled(maps)
    grid = uv_to_grid(torch.as_tensor(uv, dtype=torch.float32))[None, None]
    slow = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
    assert torch.allclose(fast, slow, atol=1e-5)
    w = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), maps)
    (g_slow,) = torch.autograd.grad((slow * w).sum(), maps)
    assert torch.allclose(g_fast, g_slow, atol=1e-4)
