"""Lid skin as the eyes close: the colour the eyelids' texels take, blended in with the blink.

Why: a photo of open eyes sees the lids' margins as the lash line, the dark eye corners and slivers of
sclera; the blink stretches those few texels over the whole closed eye (``sega.gaussians.stretch_log_scale``
grows their splats with it), so a closed eye showed a dark smudged band where the lid skin should be
(retalking_4: the bottom third of the closed lid at lash colour). Each lid texel therefore also has a
*closed* colour: the skin around the eye continued smoothly over the lid (``closed_skin_field``: a small
Gaussian field of the still skin-coloured texels around the eye, so the closed lid has no edge against the skin
around it); the margin, where the closed lids meet, takes the photo's lash colour (``LASH_TRAVEL_FRACTION``). The
lower lid's rim, which the blink moves only a little (``RIM_TRAVEL_M``), takes the same skin: its waterline and
lower lashes otherwise stayed a second lid line under the closed eye. The eyeball's texels take the skin colour late
in the blink (``EYEBALL_CLOSING_ONSET``): ICT's closed lids leave slits and thin splats through which the iris and
sclera showed, and MediaPipe read such an eye as open. The blend weight of each eye is how far its blink has gone
past the fitted one (``LidClosing.eye_weights``), reaching the lids' closed colours at ``LID_COLOUR_FULL`` of it;
the fitted expression renders exactly as fitted.

Shapes: T texels, Td dynamic texels, E expressions, F frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..headmodel.base import HeadModel
from ..uv import Atlas
from .texels import BLINK_EXPRESSIONS, blink_travel, region_mask, smooth_field

LID_MOVE_M = 0.002  # texels moving more than this under a blink are lid texels (1 mm, which takes in the lid's
# fold, read closed eyes as 0.040 IOD open on the test avatar against 0.020)
# The closed lid's skin: a Gaussian field (``CLOSED_SKIN_SIGMA_M``) of the face texels within SKIN_RING_RADIUS_M of
# the eye's lid texels' centre (at the fitted shape) that the blink moves less than SKIN_RING_STILL_M and whose
# colour lies within SKIN_SOURCE_DISTANCE of their median (brows, lashes and highlights are no skin), tending to
# that median away from them. The earlier single colour (the mean of that ring's median and the lid's own
# least-moved texels: crease shadow, lash line, eyeshadow) was darker than the skin around it, and the closed
# eye showed as a dark oval, which MediaPipe read as an open eye. Six dev avatars (frame 0 of sadtalker_wda_aoc,
# retalking_3/4/5, musetalk_yongen, xportrait_driving), MediaPipe's lid gap at eyeBlink 1: 0.041 IOD mean with
# that colour, 0.030 with the field and the rim; the gap read above the mesh's own, over eyeBlink 0.5-1:
# 0.021 against 0.017.
SKIN_RING_RADIUS_M = 0.03
SKIN_RING_STILL_M = 0.0003
SKIN_SOURCE_DISTANCE = 0.25  # RGB distance
CLOSED_SKIN_SIGMA_M = 0.004  # smaller than the eye (so the skin above and below it differs) and larger than a fold
# The lower lid's rim: face texels within RIM_RADIUS_M of the lid centre that the blink moves more than this (and less
# than LID_MOVE_M, else they are lid texels) also take the closed skin.
RIM_TRAVEL_M = 0.0001
RIM_RADIUS_M = 0.02
# The closed lids meet at a lash line, where a closed eye's landmarks sit (MediaPipe read retalking_4's closed eyes
# as 0.070 / 0.090 IOD open without it, 0.042 / 0.075 with it): the texels the blink moves at least this fraction of the
# most-moved one (the upper lid's margin, which the closing lid carries down to the lower one) take the lash colour,
# the median of the eye's darkest LASH_DARKEST_PERCENT lid texels (the photo's lash line and eye corners). A
# narrower band (0.8-0.9) or a wider one (0.7) both read more open on the six avatars above (0.041-0.053 IOD).
LASH_TRAVEL_FRACTION = 0.75
LASH_DARKEST_PERCENT = 15.0
MIN_SKIN_TEXELS = 8  # fewer skin texels than this around an eye: that eye's lids keep their colours
# The eyeball's texels start towards the skin colour when the eye has closed this far (of its closing weight):
# until then the opening shows the iris and sclera as they are; at a full blink nothing of them may show.
EYEBALL_CLOSING_ONSET = 0.5
# The lids have their closed colours once the eye has closed this far (of its closing weight), the eyeballs at 1.
# The photo's colours of a stretched lid (its lash line, sclera at its edge) otherwise stayed a ghost of an open eye
# over a lid that had come down: MediaPipe read retalking_3's avatar at eyeBlink 0.7 / 0.85 as 0.081 / 0.052 IOD
# open with a linear blend to 1, 0.064 / 0.034 with this (0.4: the same).
LID_COLOUR_FULL = 0.6
EYEBALL_REGIONS = ("eyeball_left", "eyeball_right")
OPEN_FITTED_MAX = 0.95  # a fitted blink above this leaves no closing to blend in (the eye is shut already)


@dataclass(frozen=True, eq=False)
class LidClosing:
    """The lid texels' colour change at a fully closed eye, and how far each eye has closed.

    color: Tensor  # [Td, 3] closed colour minus the fitted colour (zero off the lids and eyeballs)
    eye: Tensor  # [Td] int64, which of the two blink channels closes the texel's eye (0 where no change)
    columns: Tensor  # [2] int64 expression columns of ``BLINK_EXPRESSIONS``
    fitted: Tensor  # [2] their fitted weights
    onset: Tensor  # [Td] the eye's closing weight at which the texel starts to change (0 on the lids)
    span: Tensor  # [Td] > 0, how much further the eye closes until the texel has its closed colour
    """

    color: Tensor
    eye: Tensor
    columns: Tensor
    fitted: Tensor
    onset: Tensor
    span: Tensor

    def eye_weights(self, expression: Tensor) -> Tensor:
        """expression: Tensor  # [..., E] -> [..., 2] in [0, 1]: how far each blink has gone from the fitted
        weight towards 1."""
        blinks = expression[..., self.columns]
        return ((blinks - self.fitted) / (1.0 - self.fitted)).clamp(0.0, 1.0)

    def colour_change(self, expression: Tensor) -> Tensor:
        """expression: Tensor  # [..., E] -> [..., Td, 3] colour added to the dynamic texels."""
        w = self.eye_weights(expression)[..., self.eye]  # [..., Td]
        w = ((w - self.onset) / self.span).clamp(0.0, 1.0)
        return self.color * w[..., None]

    def to(self, device: torch.device | str) -> LidClosing:
        return LidClosing(self.color.to(device), self.eye.to(device), self.columns.to(device), self.fitted.to(device),
                          self.onset.to(device), self.span.to(device))  # fmt: skip


def closed_skin_field(colors: np.ndarray, ring: np.ndarray, points: np.ndarray, at: np.ndarray) -> np.ndarray | None:
    """[N, 3] float32 the closed lids' skin (see ``SKIN_RING_RADIUS_M``) at the N texels of ``at`` [T] bool, None when
    fewer than ``MIN_SKIN_TEXELS`` skin texels are around the eye. colors: [T, 3]; ring: [T] bool the still face
    texels around the eye; points: [T, 3] metres (fitted shape). Only the sources and ``at`` enter the field's
    search (the rest of the head's texels are far from both)."""
    if ring.sum() < MIN_SKIN_TEXELS:
        return None
    median = np.median(colors[ring], axis=0)
    sources = ring & (np.linalg.norm(colors - median, axis=1) < SKIN_SOURCE_DISTANCE)
    if sources.sum() < MIN_SKIN_TEXELS:
        return None
    sub = sources | at
    return smooth_field(colors[sub], sources[sub], points[sub], CLOSED_SKIN_SIGMA_M, prior=median)[at[sub]]


def closed_lid_colors(model: HeadModel, atlas: Atlas, expression: np.ndarray, colors: np.ndarray,
                      points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The lids' and eyeballs' closed colours (see the module docstring).

    expression: [E] the fitted expression; colors: [T, 3] the texels' fitted colours; points: [T, 3] the
    texels' surface points at the fitted shape (metres).
    returns (closed [T, 3] float32 (equal to colors off the lids and eyeballs), eye [T] int64: 0 / 1 the blink
    channel that closes the texel's eye, -1 elsewhere, onset [T] float32: ``EYEBALL_CLOSING_ONSET`` on the
    eyeballs, 0 elsewhere).
    """
    travel = blink_travel(model, atlas)  # [2, T] metres at weight 1
    eye = np.where(travel.max(0) > LID_MOVE_M, travel.argmax(0), -1)
    onset = np.zeros(atlas.num_texels, dtype=np.float32)
    closed = np.asarray(colors, dtype=np.float32).copy()
    fitted = np.asarray(expression, dtype=np.float64)[[model.expression_index(n) for n in BLINK_EXPRESSIONS]]
    face = region_mask(atlas, "face")
    still = travel.max(0) < SKIN_RING_STILL_M
    eyeballs = [region_mask(atlas, r) for r in EYEBALL_REGIONS]
    eyeballs = [m for m in eyeballs if m.any()]
    for k in (0, 1):
        on = eye == k
        if not on.any() or fitted[k] > OPEN_FITTED_MAX:
            eye[on] = -1
            continue
        centre = points[on].mean(0)
        near = np.linalg.norm(points - centre, axis=1)
        rim = face & (eye < 0) & (travel[k] > RIM_TRAVEL_M) & (near < RIM_RADIUS_M)
        lid = on | rim
        skin = closed_skin_field(closed, face & still & (near < SKIN_RING_RADIUS_M), points, lid)  # [lid.sum(), 3]
        if skin is None:
            eye[on] = -1
            continue
        value = closed[on].mean(1)
        lash = np.median(closed[on][value <= np.percentile(value, LASH_DARKEST_PERCENT)], axis=0)
        moved_most = on & (travel[k] >= LASH_TRAVEL_FRACTION * travel[k][on].max())
        closed[lid] = skin
        eye[rim] = k
        closed[moved_most] = lash
        if eyeballs:  # the eyeball behind these lids: the one whose centre is nearest theirs
            ball = min(eyeballs, key=lambda m: float(np.linalg.norm(points[m].mean(0) - centre)))
            closed[ball], eye[ball], onset[ball] = np.median(skin[on[lid]], axis=0), k, EYEBALL_CLOSING_ONSET
    return closed, eye, onset


def lid_closing(model: HeadModel, atlas: Atlas, expression: np.ndarray, colors: np.ndarray, points: np.ndarray,
                dynamic_index: np.ndarray, device: torch.device | str) -> LidClosing | None:  # fmt: skip
    """The ``LidClosing`` of an avatar's dynamic texels (``dynamic_index`` [Td] texel ids), from its fitted
    expression [E], texel colours [T, 3] and texel points [T, 3] (fitted shape); None when the head model has no
    blink channels or no lid texel is dynamic."""
    if any(n not in model.expression_names for n in BLINK_EXPRESSIONS):
        return None
    closed, eye, onset = closed_lid_colors(model, atlas, expression, colors, points)
    delta = (closed - np.asarray(colors, dtype=np.float32))[dynamic_index]
    eye, onset = eye[dynamic_index], onset[dynamic_index]
    span = np.where(onset > 0, 1.0 - onset, LID_COLOUR_FULL).astype(np.float32)
    if not np.any(delta):
        return None
    columns = [model.expression_index(n) for n in BLINK_EXPRESSIONS]
    fitted = np.minimum(np.asarray(expression, dtype=np.float32)[columns], OPEN_FITTED_MAX)
    return LidClosing(
        color=torch.as_tensor(delta, dtype=torch.float32, device=device),
        eye=torch.as_tensor(np.maximum(eye, 0), dtype=torch.int64, device=device),
        columns=torch.as_tensor(columns, dtype=torch.int64, device=device),
        fitted=torch.as_tensor(fitted, dtype=torch.float32, device=device),
        onset=torch.as_tensor(onset, dtype=torch.float32, device=device),
        span=torch.as_tensor(span, dtype=torch.float32, device=device),
    )


__all__ = ["LID_MOVE_M", "LidClosing", "closed_lid_colors", "closed_skin_field", "lid_closing"]
