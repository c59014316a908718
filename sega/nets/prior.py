"""SEGA's trained prior: an identity encoder from the unwrapped photo to the decoders' per-person feature maps,
plus the static and dynamic decoders' shared weights (trained by ``sega train``, ``sega.train``).

Without a prior every avatar's decoders start at zero and only personalisation on the one photo shapes them.
With one, ``sega build --prior PATH`` reads the photo's UV unwrap (``sega.avatar.build.unwrap``), predicts
the static decoder's feature map and the dynamic decoder's identity map from it, takes the trunks (and the
dynamic decoder's expression layer) from the prior, and fine-tunes all of it on the photo as before.

The identity encoder reads a UV image (``uv_input``) of ``UV_INPUT_CHANNELS`` channels at the atlas
resolution the training set was unwrapped at (``IdentityEncoderOptions.uv_resolution``):
rgb x confidence (3), confidence (1), and the texel's (u, v) (2, so that convolutions know where on the head
they are). A stem conv, stride-2 convs down to the static decoder's feature resolution, then one head per
decoder (the dynamic one after average pooling to its coarser resolution).

Shapes: B batch, U UV input side, T atlas texels, Cs / rs static features and their side, Cd / rd dynamic
identity channels and side, Z expression-feature size, Ts / Td static / dynamic texels, A = ``NUM_ATTRIBUTES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoders import DynamicDecoder, DynamicDecoderOptions, StaticDecoder, StaticDecoderOptions
from .options import options_from_dict, options_to_dict

UV_INPUT_CHANNELS = 6  # rgb x confidence, confidence, u, v
CONFIDENCE_SCALE = 255.0  # unwrap confidences are stored as uint8 x this (``sega.avatar.build.unwrap.MASK_SCALE``)


@dataclass(frozen=True)
class IdentityEncoderOptions:
    """Architecture of the ``IdentityEncoder`` (stored in every prior file)."""

    uv_resolution: int = 128  # U: side of the UV input = the atlas resolution the photos are unwrapped at
    stem_channels: int = 16  # the full-resolution conv before the first downsampling
    channels: tuple[int, ...] = (32, 32, 32)  # per stride-2 level (the last repeats if more levels are needed)
    head_init_std: float = 0.1  # std-dev of the two output heads' weights (features start small, not zero)
    leaky_slope: float = 0.2
    seed: int = 2  # seeds the weight initialisation (independent of torch's global RNG)

    def to_dict(self) -> dict:
        return options_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return options_from_dict(cls, d)


def uv_input(atlas, colors: np.ndarray, confidence: np.ndarray) -> Tensor:
    """One unwrap (``unwrap_frame``: colors [T, 3] uint8, confidence [T] uint8 x 255, at ``atlas``'s texels) ->
    Tensor  # [UV_INPUT_CHANNELS, U, U] float32, U = atlas.resolution; empty atlas cells are 0."""
    conf = np.asarray(confidence, np.float32) / CONFIDENCE_SCALE
    rgb = np.asarray(colors, np.float32) / 255.0
    uv = np.asarray(atlas.texel_uv, np.float32)
    values = np.concatenate([rgb * conf[:, None], conf[:, None], uv], 1)  # [T, 6]
    return torch.from_numpy(np.ascontiguousarray(atlas.to_image(values).transpose(2, 0, 1)))


class IdentityEncoder(nn.Module):
    """UV image [B, 6, U, U] -> (static feature maps [B, Cs, rs, rs], dynamic identity maps [B, Cd, rd, rd])."""

    def __init__(self, config: IdentityEncoderOptions, static: StaticDecoderOptions, dynamic: DynamicDecoderOptions):
        super().__init__()
        self.config = config
        levels = math.log2(config.uv_resolution / static.feature_resolution)
        if levels < 0 or levels != int(levels):
            raise ValueError(f"the UV input side {config.uv_resolution} must be the static features' side {static.feature_resolution} "
                             "times a power of two")  # fmt: skip
        if dynamic.feature_resolution > static.feature_resolution:
            raise ValueError(f"the dynamic identity map ({dynamic.feature_resolution}) must not be finer than the static features "
                             f"({static.feature_resolution})")  # fmt: skip
        self.static_side, self.dynamic_side = static.feature_resolution, dynamic.feature_resolution
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.stem = nn.Conv2d(UV_INPUT_CHANNELS, config.stem_channels, 3, padding=1)
            self.down = nn.ModuleList()
            c_in = config.stem_channels
            for level in range(int(levels)):
                c_out = config.channels[min(level, len(config.channels) - 1)]
                self.down.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1))
                c_in = c_out
            self.to_static = nn.Conv2d(c_in, static.feature_channels, 3, padding=1)
            self.to_dynamic = nn.Conv2d(c_in, dynamic.identity_channels, 3, padding=1)
            for head in (self.to_static, self.to_dynamic):
                nn.init.normal_(head.weight, std=config.head_init_std / math.sqrt(c_in * 9))
                nn.init.zeros_(head.bias)

    def forward(self, uv: Tensor) -> tuple[Tensor, Tensor]:
        """uv: Tensor  # [B, 6, U, U] -> (Tensor  # [B, Cs, rs, rs], Tensor  # [B, Cd, rd, rd])."""
        slope = self.config.leaky_slope
        h = F.leaky_relu(self.stem(uv), slope)
        for conv in self.down:
            h = F.leaky_relu(conv(h), slope)
        dyn = h if self.dynamic_side == self.static_side else F.adaptive_avg_pool2d(h, self.dynamic_side)
        return self.to_static(h), self.to_dynamic(dyn)


class SegaPrior(nn.Module):
    """The prior: ``identity_encoder`` + a ``static`` and a ``dynamic`` decoder whose per-avatar maps (``features``,
    ``identity``) are unused and frozen: the encoder predicts them per person. Texel UVs (``set_texel_uv``) are
    those of whatever atlas the residuals are wanted at (the decoders' maps are in UV space, so a prior trained
    at one atlas resolution serves builds at any)."""

    def __init__(self, encoder: IdentityEncoderOptions, static: StaticDecoderOptions, dynamic: DynamicDecoderOptions):
        super().__init__()
        self.identity_encoder = IdentityEncoder(encoder, static, dynamic)
        self.static = StaticDecoder(static)
        self.dynamic = DynamicDecoder(dynamic)
        self.static.features.requires_grad_(False)
        self.dynamic.identity.requires_grad_(False)

    def set_texel_uv(self, static_uv, dynamic_uv) -> SegaPrior:
        """static_uv [Ts, 2], dynamic_uv [Td, 2]: atlas UVs of the texels the residuals are sampled at. Returns self."""
        self.static.set_texel_uv(static_uv)
        self.dynamic.set_texel_uv(dynamic_uv)
        return self

    def configs(self) -> dict:
        return {"identity_encoder": self.identity_encoder.config.to_dict(), "static": self.static.config.to_dict(),
                "dynamic": self.dynamic.config.to_dict()}  # fmt: skip

    def forward(self, uv: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """uv: Tensor  # [B, 6, U, U] unwraps; z: Tensor  # [B, Z] expression features of the frames to render, or
        None (static branch only) -> (Tensor  # [B, Ts, A], Tensor  # [B, Td, A] or None), attribute units."""
        static_features, identity = self.identity_encoder(uv)
        res_static = self.static(static_features)
        return res_static, None if z is None else self.dynamic(z, identity)


def prior_state_for_decoders(prior: SegaPrior, uv: Tensor) -> tuple[dict, dict]:
    """The static and dynamic decoders' state dicts for one person: the prior's weights with the maps its
    identity encoder predicts from uv: Tensor  # [6, U, U] (``uv_input``) in place of the per-avatar ones."""
    with torch.no_grad():
        static_features, identity = prior.identity_encoder(uv[None].to(prior.static.units.device))
    static = {k: v.detach().clone() for k, v in prior.static.state_dict().items()}
    dynamic = {k: v.detach().clone() for k, v in prior.dynamic.state_dict().items()}
    static["features"], dynamic["identity"] = static_features[0], identity[0]
    return static, dynamic


__all__ = ["CONFIDENCE_SCALE", "UV_INPUT_CHANNELS", "IdentityEncoder", "IdentityEncoderOptions", "SegaPrior", "prior_state_for_decoders",
           "uv_input"]  # fmt: skip
