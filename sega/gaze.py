"""Gaze from the irises alone: the tracker's last word on the ARKit ``eyeLook*`` channels.

Why a separate solve: in the full landmark solve the gaze channels answer to 478 points and the expression
priors. ICT's ``eyeLook*`` shapes also move the lids, and the lid points (weighted up so that blinks are read)
resist every look that the lids do not follow on the model. Rendering an avatar with a known look and
tracking the render back read a sideways look at 0.54-0.59 of its size and an upward or downward one at
0.17-0.23 (three dev avatars, ``TrackOptions.gaze_prior_scale`` 0.3): the avatar barely looked where the
speaker did (0.74 and 0.37 with this re-read; 0.96 and 0.90 on the model's own landmarks). Here the look is
re-read from the iris points only, with everything else as solved:

* one look for both eyes: horizontal ``h`` (towards the subject's left: the left eye's eyeLookOut, the right
  eye's eyeLookIn) and vertical ``v = eyeLookUp - eyeLookDown`` (at most one of each pair is non-zero);
  eyes turn together, and one look from both irises halves the variance of one eye's five noisy points;
* the model's iris points are linear in each channel (blendshapes) and nearly so once projected, so they are
  probed at ``h, v = 0, +-GAZE_PROBE`` and the least-squares look is solved in closed form in each of the four
  sign quadrants (each side of a pair has its own shape), with a small ridge ``GAZE_RIDGE``, keeping the best;
* each eye's points count by how far they are trusted (the solver's fade of a closing eye's guessed iris:
  ``ExpressionPoseSolver.iris_trust``), and the re-read replaces the solve's reading by the larger trust.

Conventions: "left" and "right" are the subject's (``sega.conventions``); landmarks are pixels, errors are
over the inter-ocular distance.
"""

from __future__ import annotations

import itertools

import torch

GAZE_PROBE = 0.5  # channel weight at which the model's iris points are probed on each side
# Ridge on (h, v) in the iris points' squared error (pixels / IOD, summed over both irises' x and y): about
# the squared error of a 0.5 px wobble of each point on a 150 px IOD, so that a look the points barely show
# stays near zero while a read one (a 0.3 look moves the iris ~0.02 IOD) is barely shrunk.
GAZE_RIDGE = 1e-4
# Each eye's channels that turn it (towards the subject's left, towards the subject's right, up, down): the left eye
# looks left by turning out, the right eye by turning in. A look (h, v) has h > 0 towards the subject's left, v > 0 up.
EYE_CHANNELS = {"left": ("eyeLookOut_L", "eyeLookIn_L", "eyeLookUp_L", "eyeLookDown_L"),
                "right": ("eyeLookIn_R", "eyeLookOut_R", "eyeLookUp_R", "eyeLookDown_R")}  # fmt: skip


def gaze_channels(names: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """{side: (left, right, up, down) column indices (``EYE_CHANNELS``) for the eyes whose four channels the model has."""
    return {side: tuple(names.index(n) for n in chans) for side, chans in EYE_CHANNELS.items() if all(n in names for n in chans)}


def with_look(params: torch.Tensor, cols: tuple[int, int, int, int], h: float, v: float) -> None:
    """Write look (h, v) into one eye's four channels ``cols`` (``gaze_channels``) of ``params`` [E + 6] (in place)."""
    left, right, up, down = cols
    params[left], params[right] = max(h, 0.0), max(-h, 0.0)
    params[up], params[down] = max(v, 0.0), max(-v, 0.0)


def look_from(params, cols: tuple[int, int, int, int]) -> tuple[float, float]:
    """The look (h, v) held in one eye's four channels ``cols`` (``gaze_channels``) of ``params`` [E (+ 6)]:
    the inverse of ``with_look``."""
    left, right, up, down = (float(params[c]) for c in cols)
    return left - right, up - down


def _solve_quadrant(r0: torch.Tensor, dh: torch.Tensor, dv: torch.Tensor, sh: float, sv: float) -> tuple[float, float, float]:
    """Least-squares (h, v) with sign(h) = sh, sign(v) = sv (clamped to that quadrant and to [-1, 1]) for the
    residual r0 + h dh + v dv ([R] float64 each); returns (h, v, cost with the ridge)."""
    a = torch.stack([dh, dv], 1)  # [R, 2]
    hv = torch.linalg.solve(a.T @ a + GAZE_RIDGE * torch.eye(2, dtype=torch.float64), -(a.T @ r0))
    h = min(max(float(hv[0]) * sh, 0.0), 1.0) * sh
    v = min(max(float(hv[1]) * sv, 0.0), 1.0) * sv
    res = r0 + h * dh + v * dv
    return h, v, float(res @ res) + GAZE_RIDGE * (h * h + v * v)


def gaze_from_irises(solver, params: torch.Tensor, target: torch.Tensor, iod: float, trust: dict[str, float]) -> torch.Tensor:
    """params [E + 6] with the gaze channels re-read from the iris points in ``target`` [L, 2] (pixels): one
    look (h, v) for both eyes (they turn together), each eye's points weighted by ``trust[side]`` in [0, 1],
    blended with each eye's solved reading by the larger trust (0: kept as solved). ``solver``: an
    ``ExpressionPoseSolver`` (its ``project``, ``gaze_cols``, ``iris`` point lists and ``base_w``).

    Why one look: the eyes' versions are yoked (a distant target leaves a vergence of a degree or two), and one
    look read from both irises halves the variance of a single eye's reading (noise on a 5-point iris is most
    of what the gaze channels show on a still face)."""
    sides = [side for side in solver.gaze_cols if trust.get(side, 0.0) > 0.0]
    if not sides:
        return params
    probes = {}
    for key, (h, v) in {"0": (0.0, 0.0), "h+": (GAZE_PROBE, 0.0), "h-": (-GAZE_PROBE, 0.0), "v+": (0.0, GAZE_PROBE), "v-": (0.0, -GAZE_PROBE)}.items():
        q = params.clone()
        for cols in solver.gaze_cols.values():
            with_look(q, cols, h, v)
        probes[key] = solver.project(q)
    rows, weights = [], []
    for side in sides:
        idx = [i for i in solver.iris[side][0] if solver.base_w[i] > 0]  # the points the embedding places on the eyeball
        rows += idx
        weights += [trust[side] ** 0.5] * (2 * len(idx))
    w = torch.tensor(weights, dtype=torch.float64)

    def flat(xy: torch.Tensor) -> torch.Tensor:
        return (xy[rows] / iod).reshape(-1).double() * w

    r0 = flat(probes["0"] - target)
    slopes = {k: flat(probes[k] - probes["0"]) / (GAZE_PROBE if k.endswith("+") else -GAZE_PROBE) for k in ("h+", "h-", "v+", "v-")}
    quadrants = itertools.product((1.0, -1.0), repeat=2)
    h, v, _ = min((_solve_quadrant(r0, slopes["h+" if sh > 0 else "h-"], slopes["v+" if sv > 0 else "v-"], sh, sv) for sh, sv in quadrants),
                  key=lambda x: x[2])  # fmt: skip
    t = max(trust[side] for side in sides)
    out = params.clone()
    for cols in solver.gaze_cols.values():
        h0, v0 = look_from(params, cols)
        with_look(out, cols, h0 + t * (h - h0), v0 + t * (v - v0))
    return out


__all__ = ["EYE_CHANNELS", "GAZE_PROBE", "GAZE_RIDGE", "gaze_channels", "gaze_from_irises", "look_from", "with_look"]
