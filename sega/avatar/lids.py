"""Lid skin as the eyes close: the colour the eyelids' texels take, blended in with the blink.

Why: a photo of open eyes sees the lids' margins as the lash line, the dark eye corners and slivers of
sclera; the blink stretches those few texels over the whole closed eye (``sega.gaussians.stretch_log_scale``
grows their splats with it), so a closed eye showed a dark smudged band where the lid skin should be
(retalking_4: the bottom third of the closed lid at lash colour). Each lid texel therefore also has a
*closed* colour: the lid's skin colour (the median of its texels that the blink moves least: lid skin
above and below the opening, seen squarely in any photo of open eyes) plus the texel's own deviation
from it clamped to ``LID_SKIN_SHADE`` per channel (shading kept, lashes and sclera not); the margin,
where the closed lids meet, takes the photo's lash colour (``LASH_TRAVEL_FRACTION``). The blend
weight of each eye is how far its blink has gone past the fitted one (``LidClosing.eye_weights``); the
fitted expression renders exactly as fitted.

Shapes: T texels, Td dynamic texels, E expressions, F frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..headmodel.base import HeadModel
from ..uv import Atlas
from .texels import BLINK_EXPRESSIONS, blink_travel

LID_MOVE_M = 0.002  # texels moving more than this under a blink are lid texels
# The lid's skin colour is the median of its texels that the blink moves less than this fraction of the
# most-moved one on that eye (the lid skin near the brow and below the eye; the margin, which the photo sees
# as the lash line, moves most).
LID_SKIN_TRAVEL_FRACTION = 0.5
# The closed lids meet at a lash line, where a closed eye's landmarks sit (MediaPipe read retalking_4's closed eyes
# as 0.070 / 0.090 IOD open without it, 0.042 / 0.075 with it): the texels the blink moves at least this fraction of the
# most-moved one (the upper lid's margin, which the closing lid carries down to the lower one) take the lash colour,
# the median of the eye's darkest LASH_DARKEST_PERCENT lid texels (the photo's lash line and eye corners).
LASH_TRAVEL_FRACTION = 0.75
LASH_DARKEST_PERCENT = 15.0
MIN_SKIN_TEXELS = 8  # fewer skin texels than this on an eye: that eye's lids keep their colours
LID_SKIN_SHADE = 0.05  # a closed lid texel keeps its deviation from the lid's skin colour up to this per channel
OPEN_FITTED_MAX = 0.95  # a fitted blink above this leaves no closing to blend in (the eye is shut already)


@dataclass(frozen=True, eq=False)
class LidClosing:
    """The lid texels' colour change at a fully closed eye, and how far each eye has closed.

    color: Tensor  # [Td, 3] closed colour minus the fitted colour (zero off the lids)
    eye: Tensor  # [Td] int64, which of the two blink channels closes the texel's eye (0 where no change)
    columns: Tensor  # [2] int64 expression columns of ``BLINK_EXPRESSIONS``
    fitted: Tensor  # [2] their fitted weights
    """

    color: Tensor
    eye: Tensor
    columns: Tensor
    fitted: Tensor

    def eye_weights(self, expression: Tensor) -> Tensor:
        """expression: Tensor  # [..., E] -> [..., 2] in [0, 1]: how far each blink has gone from the fitted
        weight towards 1."""
        blinks = expression[..., self.columns]
        return ((blinks - self.fitted) / (1.0 - self.fitted)).clamp(0.0, 1.0)

    def colour_change(self, expression: Tensor) -> Tensor:
        """expression: Tensor  # [..., E] -> [..., Td, 3] colour added to the dynamic texels."""
        w = self.eye_weights(expression)[..., self.eye]  # [..., Td]
        return self.color * w[..., None]

    def to(self, device: torch.device | str) -> LidClosing:
        return LidClosing(self.color.to(device), self.eye.to(device), self.columns.to(device), self.fitted.to(device))


def closed_lid_colors(model: HeadModel, atlas: Atlas, expression: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lids' closed colours (see the module docstring).

    expression: [E] the fitted expression; colors: [T, 3] the texels' fitted colours.
    returns (closed [T, 3] float32 (equal to colors off the lids), eye [T] int64: 0 / 1 the blink channel
    that moves the texel most, -1 off the lids).
    """
    travel = blink_travel(model, atlas)  # [2, T] metres at weight 1
    eye = np.where(travel.max(0) > LID_MOVE_M, travel.argmax(0), -1)
    closed = np.asarray(colors, dtype=np.float32).copy()
    fitted = np.asarray(expression, dtype=np.float64)[[model.expression_index(n) for n in BLINK_EXPRESSIONS]]
    for k in (0, 1):
        on = eye == k
        if not on.any() or fitted[k] > OPEN_FITTED_MAX:
            continue
        skin_texels = on & (travel[k] < LID_SKIN_TRAVEL_FRACTION * travel[k][on].max())
        if skin_texels.sum() < MIN_SKIN_TEXELS:
            continue
        skin = np.median(closed[skin_texels], axis=0)
        value = closed[on].mean(1)
        lash = np.median(closed[on][value <= np.percentile(value, LASH_DARKEST_PERCENT)], axis=0)
        closed[on] = skin + np.clip(closed[on] - skin, -LID_SKIN_SHADE, LID_SKIN_SHADE)
        closed[on & (travel[k] >= LASH_TRAVEL_FRACTION * travel[k][on].max())] = lash
    return closed, eye


def lid_closing(model: HeadModel, atlas: Atlas, expression: np.ndarray, colors: np.ndarray, dynamic_index: np.ndarray,
                device: torch.device | str) -> LidClosing | None:  # fmt: skip
    """The ``LidClosing`` of an avatar's dynamic texels (``dynamic_index`` [Td] texel ids), from its fitted
    expression [E] and texel colours [T, 3]; None when the head model has no blink channels or no lid
    texel is dynamic."""
    if any(n not in model.expression_names for n in BLINK_EXPRESSIONS):
        return None
    closed, eye = closed_lid_colors(model, atlas, expression, colors)
    delta = (closed - np.asarray(colors, dtype=np.float32))[dynamic_index]
    eye = eye[dynamic_index]
    if not np.any(delta):
        return None
    columns = [model.expression_index(n) for n in BLINK_EXPRESSIONS]
    fitted = np.minimum(np.asarray(expression, dtype=np.float32)[columns], OPEN_FITTED_MAX)
    return LidClosing(
        color=torch.as_tensor(delta, dtype=torch.float32, device=device),
        eye=torch.as_tensor(np.maximum(eye, 0), dtype=torch.int64, device=device),
        columns=torch.as_tensor(columns, dtype=torch.int64, device=device),
        fitted=torch.as_tensor(fitted, dtype=torch.float32, device=device),
    )


__all__ = ["LID_MOVE_M", "LidClosing", "closed_lid_colors", "lid_closing"]
