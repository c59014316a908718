"""SEGA's two Gaussian-attribute branches in UV space: a per-frame *dynamic* decoder and a once-per-avatar
*static* decoder, plus the expression encoder that feeds the dynamic one.

Why this shape (issue "UV-space Gaussian avatar", following SEGA):

* The avatar's Gaussians live on the texels of a UV atlas (``sega.uv``), so their attributes are
  images and 2D convolutions can produce them. Both decoders output a low-resolution residual
  attribute map ``[B, A, R, R]`` (A = ``NUM_ATTRIBUTES``: offset xyz in the texel's local frame,
  log-scale delta, opacity-logit delta, colour delta) that is bilinearly sampled at the texels' atlas
  UVs (``grid_sample``, same UV convention as ``sega.nets.vae``: ``grid = (2u - 1, 1 - 2v)``). The
  samples are added to the avatar's per-texel maps before binding (``sega.gaussians.bind_frames``).
* **Dynamic branch** (per frame): expression weights ``expr [B, E]`` -> the displacement VAE's
  encoder mean, the *expression feature* ``z [B, Z]`` (``ExpressionEncoder``) -> ``DynamicDecoder``:
  ``Linear(z)`` gives a position-specific expression map at ``feature_resolution``, concatenated with
  a learned per-avatar *identity feature map* ``[C, r, r]``; a few conv + bilinear-upsample levels
  turn that into the residual map, sampled at the *dynamic* texels only.
* **Static branch** (once per avatar, at ``Avatar.precompute``): ``StaticDecoder``: a learned
  per-avatar feature map -> the same conv trunk -> residuals of the *static* texels, baked into the
  static Gaussians, so it costs nothing per frame.
* **Neutral initialisation.** Without a trained prior both decoders start from a zero-initialised
  last conv: an untrained decoder outputs exactly zero residuals and the avatar starts as its maps
  say; the personalisation step (``sega.avatar.optimise_maps``) fits them on the photo.
* Everything in the forward passes is a standard op (Linear, Conv2d, LeakyReLU, bilinear Resize,
  GridSample, Concat, Mul) with no Python control flow depending on data and no caches, so the
  dynamic branch exports to ONNX (opset >= 16 for GridSample; we use 17).

Shapes: B batch, E expression weights, Z expression-feature size, C feature channels, r feature
resolution, R residual-map resolution, N sampled texels, A = ``NUM_ATTRIBUTES``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HeadModelError
from ..gaussians import GaussianMaps
from ..headmodel.base import HeadModel
from ..io import file_sha256
from .options import options_from_dict, options_to_dict
from .vae import (
    DisplacementVAE,
    DisplacementVAEOptions,
    default_checkpoint_path,
    load_displacement_vae,
)

# Residual attributes, in channel order: (GaussianMaps field, channels). Rotation gets no residual.
ATTRIBUTES = (("offset", 3), ("log_scale", 3), ("opacity_logit", 1), ("color", 3))
NUM_ATTRIBUTES = sum(c for _, c in ATTRIBUTES)  # A = 10


@dataclass(frozen=True)
class UVDecoderOptions:
    """What both decoders share: a conv trunk from an r x r feature map up to the R x R residual map,
    and the units of the raw outputs. Configs are stored in every avatar file that has decoders."""

    feature_resolution: int = 16  # r: side of the input feature map(s)
    channels: tuple[int, ...] = (32, 16, 8)  # conv channels at r, 2r, 4r, ... (one 3x3 conv + LeakyReLU per level)
    map_resolution: int = 64  # R: side of the residual map = r * 2^(len(channels) - 1)
    leaky_slope: float = 0.2  # negative slope of the LeakyReLUs
    offset_unit_m: float = 1e-3  # one unit of raw output = this many metres of offset
    log_scale_unit: float = 0.1  # ... = this much log-scale
    opacity_unit: float = 1.0  # ... = this much opacity logit
    color_unit: float = 0.05  # ... = this much rgb
    seed: int = 0  # seeds the weight initialisation (independent of torch's global RNG)

    def __post_init__(self) -> None:
        produced = self.feature_resolution * 2 ** (len(self.channels) - 1)
        if produced != self.map_resolution:
            raise ValueError(f"decoder makes {self.feature_resolution} * 2^{len(self.channels) - 1} = {produced} texels per side, "
                             f"map_resolution is {self.map_resolution}")

    def to_dict(self) -> dict:
        return options_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Rebuild from ``to_dict`` output; unknown keys are an error (a newer layout)."""
        return options_from_dict(cls, d)


@dataclass(frozen=True)
class DynamicDecoderOptions(UVDecoderOptions):
    """Architecture of a ``DynamicDecoder`` (shared trunk fields in ``UVDecoderOptions``)."""

    latent_dim: int = 64  # Z: size of the expression feature (the displacement VAE's latent_dim)
    identity_channels: int = 8  # C: channels of the per-avatar identity feature map
    expression_channels: int = 8  # channels of the position-specific expression map Linear(z) -> [Ce, r, r]
    identity_init_std: float = 0.0  # std-dev of the identity feature map at init (0: zeros)
    # Saturation of the per-frame residuals, in raw units per ``ATTRIBUTES`` group (offset, log_scale,
    # opacity, colour): residual = b tanh(raw / b). The decoder is fitted at one expression; at others it
    # extrapolates, and an unbounded log-scale residual grew splats to the size of the head (floaters).
    # 4 mm, x1.65 scale, 3 opacity logits, 0.25 rgb. None: unbounded (avatar files written before the bound).
    residual_bounds: tuple[float, float, float, float] | None = (4.0, 5.0, 3.0, 5.0)

    @classmethod
    def from_dict(cls, d: dict):
        """``UVDecoderOptions.from_dict``; a config saved before ``residual_bounds`` existed keeps its unbounded residuals."""
        return options_from_dict(cls, {"residual_bounds": None, **d})


@dataclass(frozen=True)
class StaticDecoderOptions(UVDecoderOptions):
    """Architecture of a ``StaticDecoder`` (shared trunk fields in ``UVDecoderOptions``)."""

    feature_channels: int = 8  # C: channels of the per-avatar feature map
    channels: tuple[int, ...] = (16, 8, 8)  # lighter trunk than the dynamic one: its output is low-frequency
    feature_init_std: float = 0.1  # std-dev of the feature map at init (non-zero: gives the trunk something to shape)
    seed: int = 1  # seeds the weight initialisation (independent of torch's global RNG)


def _units(cfg) -> Tensor:
    """[A] raw output -> attribute units, in ``ATTRIBUTES`` channel order."""
    per = {"offset": cfg.offset_unit_m, "log_scale": cfg.log_scale_unit, "opacity_logit": cfg.opacity_unit, "color": cfg.color_unit}
    return torch.tensor([per[name] for name, c in ATTRIBUTES for _ in range(c)], dtype=torch.float32)


def residual_bound_units(cfg) -> Tensor | None:
    """[A] the saturation bound of each residual channel in attribute units (``ATTRIBUTES`` order), or None."""
    bounds = getattr(cfg, "residual_bounds", None)
    if bounds is None:
        return None
    per = dict(zip([n for n, _ in ATTRIBUTES], bounds))
    return torch.tensor([per[name] for name, c in ATTRIBUTES for _ in range(c)], dtype=torch.float32) * _units(cfg)


def saturate(residual: Tensor, bound: Tensor | None) -> Tensor:
    """residual: Tensor  # [B, A, ...] attribute units; bound: Tensor  # [A] -> b tanh(residual / b) per channel
    (the identity near zero, never beyond +-b); ``bound`` None: unchanged."""
    if bound is None:
        return residual
    b = bound.reshape(1, -1, *([1] * (residual.dim() - 2)))
    return b * torch.tanh(residual / b)


def uv_to_grid(uv: Tensor) -> Tensor:
    """Atlas UVs (u right, v up, origin bottom-left) -> ``grid_sample`` coordinates (align_corners=False).

    uv: [N, 2] -> [N, 2] (x, y) in [-1, 1], y down (see ``sega.nets.vae``)."""
    return torch.stack([2.0 * uv[:, 0] - 1.0, 1.0 - 2.0 * uv[:, 1]], dim=-1)


class _UVTrunk(nn.Module):
    """Conv levels (3x3 conv + LeakyReLU; bilinear x2 upsample between levels) -> zero-initialised 3x3 conv to A channels.

    [B, c_in, r, r] -> [B, A, R, R] raw (unit-scale) outputs."""

    def __init__(self, c_in: int, channels: tuple[int, ...], slope: float):
        super().__init__()
        self.levels = nn.ModuleList()
        for c_out in channels:
            self.levels.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            c_in = c_out
        self.head = nn.Conv2d(c_in, NUM_ATTRIBUTES, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # neutral initialisation: exactly zero residuals until fitted
        nn.init.zeros_(self.head.bias)
        self.slope = float(slope)

    def forward(self, h: Tensor) -> Tensor:
        for level, conv in enumerate(self.levels):
            if level > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), self.slope)
        return self.head(h)


def bilinear_taps(grid: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The four pixels and weights ``F.grid_sample`` (bilinear, border padding, align_corners=False)
    reads at each grid point of a ``size`` x ``size`` map.

    grid: Tensor  # [N, 2] (x, y) in [-1, 1], y down (``uv_to_grid``)
    returns index: Tensor  # [4, N] int64 into the flattened map (row * size + col),
            weight: Tensor  # [4, N] (each column sums to 1)
    Why: the texel positions are fixed per avatar, so the sampling is a fixed 4-tap gather. It is
    several times faster than ``grid_sample`` in onnxruntime (3 ms -> well under 1 ms at 18k texels)
    and in torch; ``tests/test_decoders.py`` checks it against ``grid_sample``, forward and backward.
    """
    pix = ((grid + 1.0) * size - 1.0) / 2.0  # pixel coordinates, pixel centres at integers
    pix = pix.clamp(0.0, size - 1.0)  # border padding = clamped coordinates
    lo = pix.floor().clamp(max=size - 1.0)
    frac = pix - lo
    x0, y0 = lo[:, 0].long(), lo[:, 1].long()
    x1, y1 = (x0 + 1).clamp(max=size - 1), (y0 + 1).clamp(max=size - 1)
    fx, fy = frac[:, 0], frac[:, 1]
    index = torch.stack([y0 * size + x0, y0 * size + x1, y1 * size + x0, y1 * size + x1])
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return index, weight


def upsampled_row_taps(grid: Tensor, size: int, max_factor: int = 8) -> tuple[int, Tensor, Tensor] | None:
    """``bilinear_taps`` as two taps of the map upsampled in x, when the grid points sit on pixel centres
    of a ``size * k`` wide grid (texels of an atlas k times the map's resolution, k <= ``max_factor``).

    grid: Tensor  # [N, 2] (x, y) in [-1, 1], y down (``uv_to_grid``)
    returns None when no such k exists, else (k,
             index: Tensor  # [2, N] int64 into the flattened x-upsampled map (row * size * k + col): rows y0, y1
             weight: Tensor  # [N] weight of the y1 row (the y0 row gets 1 - weight))
    The x-upsampled map is ``F.interpolate(maps, scale_factor=(1, k), mode="bilinear",
    align_corners=False)`` (ONNX Resize, half_pixel): its column X holds the map interpolated at
    x = (X + 0.5) / k - 0.5, clamped to the map like ``grid_sample``'s border padding, so reading it
    at the texel's column and interpolating between two rows equals ``grid_sample``. Why: in
    onnxruntime (native and wasm) the small Resize plus a 2-tap gather costs about half of the 4-tap
    gather, and the gathered volume is halved.
    """
    for k in range(1, max_factor + 1):
        col = (grid[:, 0] + 1.0) * (size * k) / 2.0 - 0.5  # column in the x-upsampled map
        near = col.round()
        if (col - near).abs().max() <= 1e-3 and near.min() >= 0 and near.max() <= size * k - 1:
            break
    else:
        return None
    col = near.long()
    py = (((grid[:, 1] + 1.0) * size - 1.0) / 2.0).clamp(0.0, size - 1.0)
    lo = py.floor().clamp(max=size - 1.0)
    fy = py - lo
    y0 = lo.long()
    y1 = (y0 + 1).clamp(max=size - 1)
    return k, torch.stack([y0 * (size * k) + col, y1 * (size * k) + col]), fy


class _SampledDecoder(nn.Module):
    """Shared plumbing: the texel UVs the residual map is sampled at, and the output units."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        # Non-persistent: derived from the avatar's atlas (``set_texel_uv``), not part of the state dict.
        self.register_buffer("texel_grid", torch.zeros(0, 2), persistent=False)  # [N, 2] grid_sample coords
        self.register_buffer("tap_index", torch.zeros(4, 0, dtype=torch.int64), persistent=False)  # [4, N] bilinear_taps
        self.register_buffer("tap_weight", torch.zeros(4, 0), persistent=False)  # [4, N]
        self.register_buffer("row_tap_index", torch.zeros(2, 0, dtype=torch.int64), persistent=False)  # [2, N] upsampled_row_taps
        self.register_buffer("row_tap_weight", torch.zeros(0), persistent=False)  # [N]
        self.row_factor = 0  # k of upsampled_row_taps (0: the texels are not on such a grid)
        self.register_buffer("units", _units(cfg), persistent=False)  # [A] raw -> attribute units

    @property
    def num_texels(self) -> int:
        return int(self.texel_grid.shape[0])

    def set_texel_uv(self, uv) -> _SampledDecoder:
        """Where the residual map is sampled: uv [N, 2] atlas UVs of the texels (``Atlas.texel_uv`` rows), on the
        module's device. Returns self."""
        dev = self.units.device
        self.texel_grid = uv_to_grid(torch.as_tensor(np.asarray(uv), dtype=torch.float32, device=dev))
        self.tap_index, self.tap_weight = bilinear_taps(self.texel_grid, self.config.map_resolution)
        rows = upsampled_row_taps(self.texel_grid, self.config.map_resolution)
        if rows is None:
            self.row_factor, self.row_tap_index = 0, torch.zeros(2, 0, dtype=torch.int64, device=dev)
            self.row_tap_weight = torch.zeros(0, device=dev)
        else:
            self.row_factor, self.row_tap_index, self.row_tap_weight = rows
        return self

    def sample_rows(self, maps: Tensor) -> Tensor:
        """maps: [B, A, R, R] -> [B, A, N] bilinear samples at the texel UVs (= ``grid_sample``, border padding).

        One GatherElements for all four taps (onnxruntime gathers that way several times faster than
        with Gather along the last axis; see ``export.graphs.gather_columns``)."""
        n = self.num_texels
        flat = maps.flatten(2)  # [B, A, R*R]
        taps = torch.gather(flat, 2, self.tap_index.reshape(1, 1, -1).expand(flat.shape[0], flat.shape[1], -1))  # [B, A, 4N]
        out = taps[:, :, 0:n] * self.tap_weight[0]
        for k in range(1, 4):
            out = out + taps[:, :, k * n : (k + 1) * n] * self.tap_weight[k]
        return out

    def sample_rows_upsampled(self, maps: Tensor) -> Tensor:
        """``sample_rows`` through ``upsampled_row_taps`` (x-upsample, then two rows): the form the exported
        graph uses. Falls back to ``sample_rows`` when the texels are not on such a grid."""
        if not self.row_factor:
            return self.sample_rows(maps)
        if self.row_factor > 1:
            maps = F.interpolate(maps, scale_factor=(1.0, float(self.row_factor)), mode="bilinear", align_corners=False)
        flat = maps.flatten(2)  # [B, A, R * R * k]
        # One gather per row tap (one of both, split afterwards, copies the result once more).
        top, bottom = (torch.gather(flat, 2, index.reshape(1, 1, -1).expand(flat.shape[0], flat.shape[1], -1)) for index in self.row_tap_index)
        return top + (bottom - top) * self.row_tap_weight

    def sample(self, maps: Tensor) -> Tensor:
        """maps: [B, A, R, R] -> [B, N, A] bilinear samples at the texel UVs (border padding).

        ``F.grid_sample``: the fastest form in torch (forward and backward, ~2x the gather forms), so
        fitting and ``Avatar.animate`` use it; the exported graph uses its gather twins
        (``sample_rows_upsampled`` / ``sample_rows``), which tests hold equal to it."""
        grid = self.texel_grid[None, None].expand(maps.shape[0], 1, -1, -1)  # [B, 1, N, 2]
        out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [B, A, 1, N]
        return out[:, :, 0].transpose(1, 2)


class DynamicDecoder(_SampledDecoder):
    """Expression feature -> per-frame residual attributes of the dynamic texels.

    Parameters: ``identity [C, r, r]`` (per-avatar identity feature map), ``from_latent`` (Linear z ->
    expression map), the conv trunk (last conv zero-initialised). Buffer ``texel_grid [N, 2]`` (set with
    ``set_texel_uv``: the dynamic texels' atlas UVs).
    """

    def __init__(self, config: DynamicDecoderOptions = DynamicDecoderOptions()):
        super().__init__(config)
        c = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.identity = nn.Parameter(torch.randn(c.identity_channels, c.feature_resolution, c.feature_resolution) * c.identity_init_std)
            self.from_latent = nn.Linear(c.latent_dim, c.expression_channels * c.feature_resolution**2)
            self.trunk = _UVTrunk(c.identity_channels + c.expression_channels, c.channels, c.leaky_slope)
        bound = residual_bound_units(c)  # derived from the config, so not part of the state dict
        self.saturated = bound is not None  # a Python flag (not a tensor test): traced graphs stay branch-free
        self.register_buffer("residual_bound", bound if bound is not None else torch.zeros(0), persistent=False)  # [A] or [0]

    @property
    def bound(self) -> Tensor | None:
        """[A] saturation bound of the residuals in attribute units (``residual_bound_units``), None: unbounded."""
        return self.residual_bound if self.saturated else None

    def residual_map(self, z: Tensor, identity: Tensor | None = None) -> Tensor:
        """z: Tensor  # [B, Z] -> raw residual map: Tensor  # [B, A, R, R] in attribute units (channels ``ATTRIBUTES``).

        identity: Tensor  # [B, C, r, r] per-frame identity feature maps in place of the avatar's own (a prior's
        identity encoder predicts them per person, ``sega.nets.prior``); None: ``self.identity``."""
        c = self.config
        r = c.feature_resolution
        expr_map = F.leaky_relu(self.from_latent(z).reshape(z.shape[0], c.expression_channels, r, r), c.leaky_slope)
        ident = self.identity[None].expand(z.shape[0], -1, -1, -1) if identity is None else identity
        return saturate(self.trunk(torch.cat([ident, expr_map], dim=1)) * self.units[None, :, None, None], self.bound)

    def forward(self, z: Tensor, identity: Tensor | None = None) -> Tensor:
        """z: Tensor  # [B, Z] expression features -> Tensor  # [B, N, A] residuals at the dynamic texels
        (identity: see ``residual_map``)."""
        return self.sample(self.residual_map(z, identity))


class StaticDecoder(_SampledDecoder):
    """Per-avatar feature map -> residual attributes of the static texels (run once per avatar).

    Parameters: ``features [C, r, r]`` and the conv trunk (last conv zero-initialised). Buffer
    ``texel_grid [N, 2]`` (the static texels' atlas UVs, ``set_texel_uv``).
    """

    def __init__(self, config: StaticDecoderOptions = StaticDecoderOptions()):
        super().__init__(config)
        c = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.features = nn.Parameter(torch.randn(c.feature_channels, c.feature_resolution, c.feature_resolution) * c.feature_init_std)
            self.trunk = _UVTrunk(c.feature_channels, c.channels, c.leaky_slope)

    def residual_map(self, features: Tensor | None = None) -> Tensor:
        """-> Tensor  # [B, A, R, R] residual map in attribute units: B = 1 from the avatar's own feature map, or
        one per map of ``features``: Tensor  # [B, C, r, r] (a prior's prediction, ``sega.nets.prior``)."""
        return self.trunk(self.features[None] if features is None else features) * self.units[None, :, None, None]

    def forward(self, features: Tensor | None = None) -> Tensor:
        """-> Tensor  # [N, A] residuals at the static texels; [B, N, A] for ``features`` [B, C, r, r]."""
        out = self.sample(self.residual_map(features))
        return out[0] if features is None else out


class ExpressionEncoder(nn.Module):
    """The displacement VAE's encoder mean: expr [B, E] -> expression feature z [B, Z].

    Same module names as ``DisplacementVAE`` (``encoder``, ``to_posterior``), so its state dict is the
    VAE's restricted to those keys. The avatar carries its own copy (the dynamic decoder was fitted to
    exactly these features; a later retrained VAE would change its input).
    """

    def __init__(self, config: DisplacementVAEOptions):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.num_expressions
        for hidden in config.encoder_hidden:
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.encoder = nn.Sequential(*layers)
        self.to_posterior = nn.Linear(width, 2 * config.latent_dim)

    @classmethod
    def from_vae(cls, vae: DisplacementVAE) -> ExpressionEncoder:
        enc = cls(vae.config)
        state = {k: v for k, v in vae.state_dict().items() if k.split(".")[0] in ("encoder", "to_posterior")}
        enc.load_state_dict(state)
        return enc.eval()

    def forward(self, expr: Tensor) -> Tensor:
        """expr: Tensor  # [B, E] -> z: Tensor  # [B, Z] (posterior mean)."""
        return self.to_posterior(self.encoder(expr))[:, : self.config.latent_dim]


# ---------------------------------------------------------------------------------------------
# residual samples <-> GaussianMaps, the bundle an avatar carries, persistence
# ---------------------------------------------------------------------------------------------


def residual_to_maps(attrs: Tensor) -> GaussianMaps:
    """attrs: [..., N, A] (channels ``ATTRIBUTES``) -> residual ``GaussianMaps`` (zero rotation residual) with
    the same leading axes (one frame's [N, A], or a batch of frames' [F, N, A])."""
    parts = dict(zip([n for n, _ in ATTRIBUTES], attrs.split([c for _, c in ATTRIBUTES], dim=-1)))
    return GaussianMaps(
        offset=parts["offset"],
        rotation=attrs.new_zeros(*attrs.shape[:-1], 4),
        log_scale=parts["log_scale"],
        opacity_logit=parts["opacity_logit"][..., 0],
        color=parts["color"],
    )


def raw_residual(decoder: _SampledDecoder, attrs: Tensor) -> Tensor:
    """Residuals in the decoder's raw (unit-scale) output units: attrs [..., A] / units (for regularisers)."""
    return attrs / decoder.units


@dataclass(eq=False)
class AvatarDecoders:
    """The learned branches an avatar carries (all three modules on one device, ``to``; eval mode). They are
    always created and loaded on the CPU (a seeded initialisation gives the same weights on every machine)."""

    encoder: ExpressionEncoder  # expr -> expression feature (the displacement VAE's encoder, frozen)
    dynamic: DynamicDecoder  # per frame: expression feature -> dynamic texels' residuals
    static: StaticDecoder  # once per avatar: static texels' residuals
    vae_provenance: dict = field(default_factory=dict)  # which displacement VAE the encoder came from (checkpoint sha256 ...)

    @classmethod
    def create(cls, model: HeadModel, checkpoint: str | Path | None = None, dynamic: DynamicDecoderOptions | None = None,
               static: StaticDecoderOptions | None = None, device: torch.device | str | None = None) -> AvatarDecoders:
        """Untrained (neutral) decoders and the encoder of the displacement VAE checkpoint (default: the shipped one),
        initialised on the CPU (seeded) and then moved to ``device`` (None: left where torch made them).

        If the checkpoint is missing or was trained on another expression basis, an *untrained* encoder
        (the VAE config's defaults for this model, seeded) stands in and a warning says so; its provenance
        records ``"trained": false``. The plumbing works the same; expression features are then random
        (but fixed) projections of the weights.
        """
        try:
            vae = load_displacement_vae(model, checkpoint)
            path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
            encoder = ExpressionEncoder.from_vae(vae)
            prov = {"trained": True, "checkpoint": path.name, "checkpoint_sha256": file_sha256(path),
                    "expression_basis_sha256": vae.provenance.get("expression_basis_sha256")}
        except HeadModelError as err:
            warnings.warn(f"{err}; the avatar's dynamic decoder uses an untrained expression encoder", stacklevel=2)
            config = DisplacementVAEOptions(num_expressions=model.num_expressions)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                encoder = ExpressionEncoder(config).eval()
            prov = {"trained": False, "checkpoint": None, "checkpoint_sha256": None, "reason": str(err)}
        dyn_cfg = dynamic or DynamicDecoderOptions(latent_dim=encoder.config.latent_dim)
        if dyn_cfg.latent_dim != encoder.config.latent_dim:
            raise ValueError(f"dynamic decoder takes {dyn_cfg.latent_dim}-d features, the encoder makes {encoder.config.latent_dim}")
        for p in encoder.parameters():
            p.requires_grad_(False)
        return cls(encoder, DynamicDecoder(dyn_cfg).eval(), StaticDecoder(static or StaticDecoderOptions()).eval(), prov)._moved(device)

    def _moved(self, device: torch.device | str | None) -> AvatarDecoders:
        """self with its (new, unshared) modules moved in place to ``device`` (None: unchanged)."""
        if device is not None:
            for module in (self.encoder, self.dynamic, self.static):
                module.to(device)
        return self

    def header(self) -> dict:
        """JSON-able: the three configs and the VAE provenance (for the avatar file's header)."""
        return {"encoder": self.encoder.config.to_dict(), "dynamic": self.dynamic.config.to_dict(),
                "static": self.static.config.to_dict(), "displacement_vae": self.vae_provenance}

    def arrays(self) -> dict[str, np.ndarray]:
        """float32 state-dict arrays keyed ``encoder.* / dynamic.* / static.*`` (persistent entries only)."""
        out = {}
        for name, module in (("encoder", self.encoder), ("dynamic", self.dynamic), ("static", self.static)):
            for k, v in module.state_dict().items():
                out[f"{name}.{k}"] = v.detach().cpu().numpy().astype(np.float32)
        return out

    @classmethod
    def from_saved(cls, header: dict, arrays: dict[str, np.ndarray], device: torch.device | str | None = None) -> AvatarDecoders:
        """Inverse of ``header`` + ``arrays`` (exact float32 weights), on ``device`` (None: where torch makes them)."""
        encoder = ExpressionEncoder(DisplacementVAEOptions.from_dict(header["encoder"]))
        dynamic = DynamicDecoder(DynamicDecoderOptions.from_dict(header["dynamic"]))
        static = StaticDecoder(StaticDecoderOptions.from_dict(header["static"]))
        for name, module in (("encoder", encoder), ("dynamic", dynamic), ("static", static)):
            prefix = name + "."
            state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
            module.load_state_dict(state)
            module.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        return cls(encoder, dynamic, static, dict(header.get("displacement_vae", {})))._moved(device)

    @property
    def device(self) -> torch.device:
        return self.dynamic.units.device

    def to(self, device: torch.device | str) -> AvatarDecoders:
        """Copies of the three modules on ``device`` (self when they are there already; ``nn.Module.to`` would
        move them in place, under any avatar that shares them)."""
        if torch.device(device) == self.device:
            return self
        return AvatarDecoders(*(copy.deepcopy(m).to(device) for m in (self.encoder, self.dynamic, self.static)), dict(self.vae_provenance))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What personalisation fits: both decoders' parameters (the encoder stays frozen)."""
        return list(self.dynamic.parameters()) + list(self.static.parameters())


__all__ = [
    "ATTRIBUTES",
    "NUM_ATTRIBUTES",
    "AvatarDecoders",
    "DynamicDecoder",
    "DynamicDecoderOptions",
    "ExpressionEncoder",
    "StaticDecoder",
    "StaticDecoderOptions",
    "file_sha256",
    "raw_residual",
    "residual_to_maps",
    "uv_to_grid",
]
