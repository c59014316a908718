"""Per-frame tracking: expression weights and head pose from landmarks, identity and camera held fixed.

A driving video is fitted in two parts. The driver's identity and the camera are estimated once
(``sega.fit.fit_landmarks`` on the first frame with a face; for self-reenactment the avatar's own fit
is passed in). Then every frame solves only for the expression weights E and the head pose (axis-angle
rotation about the model's pivot + translation, the same parameters ``Avatar.animate`` and the clips
use), by damped Gauss-Newton (Levenberg-Marquardt) on the landmark reprojection error, warm-started
from the previous frame: a handful of iterations over E + 6 unknowns and 478 landmarks, with the
Jacobian written out analytically (checked against autodiff in the tests). Weights are kept in the model's range
by clamping after each step (projected Gauss-Newton). Priors are those of the photo fit.

Shapes: L landmarks, E expressions, I identity components; pixels are photo pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .camera import Camera
from .conventions import HEAD_POSE_SIZE
from .errors import FaceNotFoundError, SegaError
from .face import TRACK_MIRROR
from .fit import (
    EYE_REST_GAP,
    LANDMARK_SET,
    FitOptions,
    FitResult,
    default_weights,
    fit_landmarks,
    interocular,
    surface_rows,
)
from .gaze import gaze_channels, gaze_from_irises
from .face_measures import EYE_OUTER, INNER_LIP_LOWER, INNER_LIP_UPPER, INNER_LIPS
from .geometry import axis_angle_to_matrix, matrix_to_axis_angle
from .headmodel.base import HeadModel, LandmarkEmbedding
from .landmarks import load_view_embeddings, mediapipe_groups
from .synthetic import FACE_CENTRE

LM_MAX_TRIES = 4  # damping increases tried per iteration before giving up on a step
LM_DAMPING_FACTOR = 4.0  # damping is multiplied / divided by this after a rejected / accepted step
LM_MIN_DAMPING = 1e-6
MP_LEFT_LIDS, MP_RIGHT_LIDS = (386, 374), (159, 145)  # MediaPipe upper / lower lid midpoints of each eye
SIDEWAYS_GAZE = ("eyeLookIn", "eyeLookOut")  # ARKit gaze channels (sega.headmodel.eyes turns the eyeballs with them)
IRIS_CLOSED, IRIS_OPEN = 0.03, 0.07  # lid gap / inter-ocular distance: iris points count 0 below, fully above
EYE_CLOSED_GAP = 0.015  # MediaPipe's lid gap / inter-ocular distance on a closed eye (0.008-0.018 on the dev clips' blinks)
EYE_CLOSING_GAPS = (0.035, EYE_REST_GAP)  # lid gaps (/ IOD) between which ``blinks_from_gaps`` fades in (open eyes: 0.07-0.13)
JAW_CHANNEL = "jawOpen"  # opened further when the solve reads a mouth narrower than the lips' gap (``jaw_from_gap``)
CLOSE_CHANNEL = "mouthClose"  # raised when the solve leaves the lips further apart than detected (``close_from_gap``):
# ARKit's channel for lips that meet over an opened jaw
JAW_SEARCH_STEPS = 12  # bisection steps of ``jaw_from_gap`` / ``close_from_gap`` (2^-12 of the channel's range)
EYE_LINE = (EYE_OUTER["right"], EYE_OUTER["left"])  # MediaPipe's outer eye corners, image left to right on a facing head
BLINKS = (("left", "eyeBlink_L"), ("right", "eyeBlink_R"))  # MediaPipe's left eye (the subject's) is ARKit's _L


@dataclass(frozen=True)
class TrackOptions:
    """Per-frame solver settings. Loss units as ``FitOptions``: squared pixels / inter-ocular distance^2."""

    iterations: int = 4  # Gauss-Newton steps per frame, warm-started from the previous frame (6 -> 4, and 3 -> 2 view
    # steps: the same head-pose error on the check videos within 0.01 degree, a fifth less solve time)
    first_iterations: int = 25  # steps for the first frame and after a frame without a face
    damping: float = 1e-3  # Levenberg-Marquardt damping, relative to the diagonal of J^T J
    expression_l1: float = 2e-5  # weight of sum(expression) (sparsity), as FitOptions
    expression_l2: float = 1e-4  # weight of sum(expression^2): 10x the photo fit's, which halves the frame-to-frame
    # jitter of poorly determined channels (jawForward, cheekSquint) and lowers the weight error on synthetic videos
    fit_preset: str = "default"  # sega.fit preset of the one-off identity + camera fit
    translation_prior: float = 0.5  # weight of |head translation|^2 (metres): depth is weakly observed by landmarks, and
    # without it a few pixels of landmark bias move the head centimetres towards the camera
    eye_weight: float = 4.0  # weight of the eyelid landmarks: the eyes are small, and with equal weights the
    # expression prior outweighs a closing lid (blinks would be missed)
    inner_lip_weight: float = 4.0  # weight of the inner-lip contour: the mouth opening is two of its points, and at
    # weight 1 a dev clip's closed mouths tracked 0.026-0.064 IOD open (0.012-0.058 at 4; targets 0.001-0.028)
    iris_weight: float = 2.0  # weight of the iris landmarks: ten points carry the gaze (eyeLook*, which turn the eyeballs)
    gaze_prior_scale: float = 0.3  # the expression priors of the sideways gaze channels (eyeLookIn/Out), scaled by this:
    # the irises observe them well, and at full prior strength a 14-degree look came out as 3 degrees. Up / down keep
    # the full prior: ICT's eyeLookDown also lowers the lids, and with a weak prior it took over the blinks

    view_dependent: bool = True  # use the per-view landmark embeddings (scripts/make_view_embeddings.py) when shipped
    view_iterations: int = 2  # steps after each re-interpolation of the embedding for the solved pose
    view_rounds: int = 3  # re-interpolations at most: the embedding depends on the pose being solved for, so
    # solve and re-interpolate until the view settles (one round: 2.11 -> 2.03 degrees on turning renders)
    view_tolerance_deg: float = 0.5  # stop once the solved view (yaw and pitch) moved less than this in a round
    gaze_from_irises: bool = True  # re-read the look (both eyes' eyeLook*) from the iris points alone after the solve (``sega.gaze``)
    blink_from_gap: bool = True  # close each closing eye's eyeBlink to its lid gap after the solve (``blinks_from_gaps``)
    jaw_from_gap: bool = True  # open the jaw to the lips' gap after the solve where it reads narrower (``jaw_from_gap``)
    close_from_gap: bool = True  # close the lips to their gap after the solve where it reads wider (``close_from_gap``)
    oval_weight: float = 1.0  # weight of the face-contour landmarks. They slide along the silhouette as the head turns,
    # but the view-dependent embeddings follow them there: full weight (was 0.3), with the 4/2 steps above, took the
    # mean head-pose error on the check videos (scripts/check_tracking.py) from 1.36 to 1.28 degrees


@dataclass
class Track:
    """Per-frame results of ``track_landmarks`` / ``track_video``."""

    expressions: np.ndarray  # [T, E] weights (held from the last good frame where no face was found)
    head_poses: np.ndarray  # [T, 6] axis-angle radians + translation metres, relative to the camera's fit
    found: np.ndarray  # [T] bool: a face was found in the frame
    nme: np.ndarray  # [T] landmark error / inter-ocular distance (NaN where not found)
    identity: np.ndarray  # [I] held fixed
    camera: Camera  # held fixed
    expression_names: tuple[str, ...]
    fps: float | None
    seconds: dict = field(default_factory=dict)  # wall time: "landmarks", "solve"

    @property
    def missing(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.found)]


class ExpressionPoseSolver:
    """Fits expression + head pose to one frame's landmarks (identity and camera fixed)."""

    def __init__(self, model: HeadModel, identity: np.ndarray, camera: Camera, options: TrackOptions = TrackOptions(),
                 embedding: str = LANDMARK_SET):  # fmt: skip
        if embedding not in model.landmarks:
            raise SegaError(f"head model {model.name!r} has no {embedding!r} landmark embedding")
        self.options = options
        # The driver's neutral head first, then its points: one [V, 3] mesh gathered, not the [I, V, 3] basis.
        head = model.vertices + np.tensordot(np.asarray(identity, np.float64), model.identity_basis, axes=1)  # [V, 3]
        emb = model.landmarks[embedding]
        self.rest = surface_rows(model, emb, head)  # [L, 3]
        self.num_e = model.num_expressions
        self.gaze = [i for i, n in enumerate(model.expression_names) if n.startswith(SIDEWAYS_GAZE)]  # eyeLookIn/Out
        self._set_expr_basis(surface_rows(model, emb, model.expression_basis).reshape(self.num_e, -1))
        self.pivot = torch.as_tensor(model.pivot, dtype=torch.float32)
        self.cam_r = torch.as_tensor(camera.viewmat[:3, :3], dtype=torch.float32)
        self.cam_t = torch.as_tensor(camera.viewmat[:3, 3], dtype=torch.float32)
        self.focal = torch.tensor([camera.K[0, 0], camera.K[1, 1]], dtype=torch.float32)
        self.centre = torch.tensor([camera.K[0, 2], camera.K[1, 2]], dtype=torch.float32)
        w = torch.as_tensor(default_weights(model, embedding, FitOptions(oval_weight=options.oval_weight)), dtype=torch.float32)
        if embedding == LANDMARK_SET:
            groups = mediapipe_groups()
            w[list(groups["left_eye"]) + list(groups["right_eye"])] *= options.eye_weight
            # The lips' extra weight is left out of the normalisation (``lip_extra``): added to the sum, it thinned
            # every other point against the priors, and the irises read a 0.5 sideways look as 0.32.
            self.lip_extra = float(w[list(INNER_LIPS)].sum()) * (options.inner_lip_weight - 1.0)
            w[list(INNER_LIPS)] *= options.inner_lip_weight
            w[list(groups["left_iris"]) + list(groups["right_iris"])] *= options.iris_weight
            # Iris points of a closing eye are guesses (the detector still places them): fade them out.
            self.iris = {side: (list(groups[f"{side}_iris"]), lids) for side, lids in (("left", MP_LEFT_LIDS), ("right", MP_RIGHT_LIDS))}
        else:
            self.iris = {}
            self.lip_extra = 0.0
        names = list(model.expression_names)
        self.gaze_cols = gaze_channels(names) if self.iris else {}  # {side: (eyeLookOut, In, Up, Down) columns}
        self.blinks = [(self.iris[side][1], names.index(n)) for side, n in BLINKS if side in self.iris and n in names]
        self.jaw = names.index(JAW_CHANNEL) if (JAW_CHANNEL in names and embedding == LANDMARK_SET) else None
        self.close = names.index(CLOSE_CHANNEL) if (CLOSE_CHANNEL in names and embedding == LANDMARK_SET) else None
        self.base_w = w  # [L]
        self.sqrt_w = (w / (w.sum() - self.lip_extra)).sqrt().repeat_interleave(2)  # [2L]
        self.lo, self.hi = model.expression_range
        # Per-view embeddings: the landmark rows for each view bin, interpolated per frame (``set_view``).
        self.views = load_view_embeddings(model) if (options.view_dependent and embedding == LANDMARK_SET) else None
        if self.views is not None:
            shape = self.views.face_ids.shape[:2]  # (P, Y)
            num_l = self.views.face_ids.shape[2]
            # All bins' points as one embedding: one gather of the bases instead of one per bin.
            every = LandmarkEmbedding(self.views.face_ids.reshape(-1), self.views.barycentrics.reshape(-1, 3), None)
            self.view_rests = surface_rows(model, every, head).reshape(*shape, num_l, 3)  # [P, Y, L, 3]
            expr = surface_rows(model, every, model.expression_basis)  # [E, P*Y*L, 3]
            self.view_bases = expr.reshape(self.num_e, *shape, num_l * 3).permute(1, 2, 0, 3).contiguous()  # [P, Y, E, L*3]
            self.cam_centre = -self.cam_r.T @ self.cam_t  # [3] world
            self.face_centre = torch.as_tensor(FACE_CENTRE, dtype=torch.float32)

    def view_angles(self, head_pose) -> tuple[float, float]:
        """(yaw, pitch) degrees of the camera as seen from the posed head (``ViewEmbeddings`` convention)."""
        pose = torch.as_tensor(np.asarray(head_pose), dtype=torch.float32)
        r = axis_angle_to_matrix(pose[:3])
        d = r.T @ (self.cam_centre - self.pivot - pose[3:]) + self.pivot - self.face_centre  # camera in head space
        return math.degrees(math.atan2(float(d[0]), float(d[2]))), math.degrees(math.atan2(float(d[1]), math.hypot(float(d[0]), float(d[2]))))

    def set_view(self, head_pose) -> None:
        """Interpolate the landmark rows for the view of ``head_pose`` [6] (no-op without view embeddings)."""
        if self.views is not None:
            self._set_view_angles(*self.view_angles(head_pose))

    def _set_view_angles(self, yaw_deg: float, pitch_deg: float) -> None:
        w = self.views.weights(yaw_deg, pitch_deg)
        self.rest = sum(wt * self.view_rests[i, j] for i, j, wt in w)
        self._set_expr_basis(sum(wt * self.view_bases[i, j] for i, j, wt in w))

    def _set_expr_basis(self, basis: torch.Tensor) -> None:
        """basis [E, L*3]; kept also as [3, L, E] (contiguous) for the Jacobian."""
        self.expr_basis = basis
        self.expr_basis_cle = basis.reshape(self.num_e, -1, 3).permute(2, 1, 0).contiguous()

    def _split(self, params: torch.Tensor):
        return params[: self.num_e], params[self.num_e : self.num_e + 3], params[self.num_e + 3 :]

    def project(self, params: torch.Tensor) -> torch.Tensor:
        """params [E + 6] -> [L, 2] projected landmarks (pixels)."""
        return self._project(params)[0]

    def _project(self, params: torch.Tensor, r: torch.Tensor | None = None):
        """r: [3, 3] the rotation of ``params`` when the caller holds it (``_lm``; saves a Rodrigues)."""
        e, rot, trans = self._split(params)
        pts = self.rest + (e @ self.expr_basis).reshape(-1, 3)
        r = axis_angle_to_matrix(rot) if r is None else r
        rotated = (pts - self.pivot) @ r.T  # [L, 3] (the lever arm of the rotation derivative)
        cam = (rotated + self.pivot + trans) @ self.cam_r.T + self.cam_t
        z = cam[:, 2:3].clamp_min(1e-3)
        return self.focal * cam[:, :2] / z + self.centre, cam, z, r, rotated

    def jacobian(self, params: torch.Tensor, r: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Analytic Jacobian of the projected landmarks: ([L, 2] pixels, [L, 2, E + 6]).

        Rotation columns are w.r.t. a small rotation applied on the left (R <- exp(d) R); ``solve``
        composes updates that way. r: as ``_project``. Tested against autodiff in tests/test_drive.py.
        """
        xy, cam, z, r, rotated = self._project(params, r)
        fx, fy = self.focal
        zero = torch.zeros_like(z[:, 0])
        inv = 1.0 / z[:, 0]
        proj = torch.stack([torch.stack([fx * inv, zero, -fx * cam[:, 0] * inv * inv], -1),
                            torch.stack([zero, fy * inv, -fy * cam[:, 1] * inv * inv], -1)], 1)  # [L, 2, 3]  # fmt: skip
        a = proj @ self.cam_r  # [L, 2, 3]: d xy / d world point
        ar = a @ r  # [L, 2, 3]: d xy / d canonical point
        b = self.expr_basis_cle
        j_e = ar[:, :, 0:1] * b[0, :, None] + ar[:, :, 1:2] * b[1, :, None] + ar[:, :, 2:3] * b[2, :, None]  # [L, 2, E]
        x, y, zz = rotated.unbind(-1)
        zeros = torch.zeros_like(x)
        neg_skew = torch.stack([torch.stack([zeros, zz, -y], -1), torch.stack([-zz, zeros, x], -1), torch.stack([y, -x, zeros], -1)], 1)
        j_rot = a @ neg_skew  # [L, 2, 3]: d(exp(d) q)/dd = -[q]x
        return xy, torch.cat([j_e, j_rot, a], dim=-1)

    def _apply(self, params: torch.Tensor, r: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(params, its rotation [3, 3]) + step -> the same. The axis-angle entries of the result are left
        stale (no prior acts on them): ``_lm`` carries the matrix and writes them once at its end."""
        out = params + step
        out[: self.num_e] = out[: self.num_e].clamp(self.lo, self.hi)
        return out, axis_angle_to_matrix(step[self.num_e : self.num_e + 3]) @ r

    def solve(self, landmarks: np.ndarray, init: np.ndarray | None = None, iterations: int | None = None) -> tuple[np.ndarray, float]:
        """landmarks [L, 2+] pixels -> (params [E + 6], NME). init: warm start (default: zeros).

        Levenberg-Marquardt: a step is kept only if it lowers the cost (else the damping grows)."""
        o = self.options
        target = torch.as_tensor(np.asarray(landmarks)[:, :2], dtype=torch.float32)
        iod = max(interocular(np.asarray(landmarks)), 1.0)
        w = self.base_w.clone()
        trust = self.iris_trust(target, iod)
        for side, (idx, _) in self.iris.items():
            w[idx] *= trust[side]
        self.sqrt_w = (w / (w.sum() - self.lip_extra)).sqrt().repeat_interleave(2)
        p = torch.zeros(self.num_e + HEAD_POSE_SIZE) if init is None else torch.as_tensor(np.asarray(init), dtype=torch.float32).clone()
        reg_l2 = torch.zeros(p.shape[0])
        reg_l2[: self.num_e] = o.expression_l2
        reg_l2[self.num_e + 3 :] = o.translation_prior
        reg_l1 = torch.zeros(p.shape[0])
        reg_l1[: self.num_e] = o.expression_l1
        reg_l2[self.gaze] *= o.gaze_prior_scale
        reg_l1[self.gaze] *= o.gaze_prior_scale

        self.set_view(p[self.num_e :].numpy())
        p = self._lm(p, target, iod, reg_l2, reg_l1, o.iterations if iterations is None else iterations)
        if self.views is not None and o.view_iterations > 0:
            # Fixed point of pose <-> embedding: again with the embedding of the view just found, until it settles.
            view = None
            for _ in range(o.view_rounds):
                new = self.view_angles(p[self.num_e :].numpy())
                if view is not None and max(abs(new[0] - view[0]), abs(new[1] - view[1])) < o.view_tolerance_deg:
                    break
                view = new
                self._set_view_angles(*view)
                p = self._lm(p, target, iod, reg_l2, reg_l1, o.view_iterations)
        with torch.no_grad():
            if o.gaze_from_irises:
                p = gaze_from_irises(self, p, target, iod, trust)
            if o.blink_from_gap:
                p = self.blinks_from_gaps(p, target, iod)
            if o.jaw_from_gap and self.jaw is not None:
                p = self.jaw_from_gap(p, target, iod)
            if o.close_from_gap and self.close is not None:
                p = self.close_from_gap(p, target, iod)
            err = (self.project(p) - target).norm(dim=-1)
            nme = float(err[self.sqrt_w[::2] > 0].mean() / iod)
        return p.numpy().astype(np.float32), nme

    def iris_trust(self, target: torch.Tensor, iod: float) -> dict[str, float]:
        """{side: 0..1}: how far each eye's iris points in ``target`` [L, 2] are trusted. The detector places
        them even on a closing eye, where they are guesses: 0 below a lid gap of IRIS_CLOSED, 1 above IRIS_OPEN."""
        out = {}
        for side, (_, (upper, lower)) in self.iris.items():
            opening = float((target[upper, 1] - target[lower, 1]).abs()) / iod
            out[side] = min(max((opening - IRIS_CLOSED) / (IRIS_OPEN - IRIS_CLOSED), 0.0), 1.0)
        return out

    def _mouth_gap(self, params: torch.Tensor, iod: float) -> float:
        xy = self.project(params)
        return float((xy[INNER_LIP_UPPER] - xy[INNER_LIP_LOWER]).norm()) / iod

    def jaw_from_gap(self, params: torch.Tensor, target: torch.Tensor, iod: float) -> torch.Tensor:
        """params [E + 6] with jawOpen raised (bisection) until the model's inner-lip gap reaches the one in
        ``target`` [L, 2], where the solve left it narrower; never lowered. Why: the mouth opening is two of 478
        points, and against the expression prior the solve opened wide mouths short (a dev set's frames with
        the lips 0.1-0.2 IOD apart tracked 0.025 IOD narrower on average, 0.064 beyond 0.2)."""
        goal = float((target[INNER_LIP_UPPER] - target[INNER_LIP_LOWER]).norm()) / iod
        return self._raise_while(params, self.jaw, lambda p: self._mouth_gap(p, iod) < goal)

    def _raise_while(self, params: torch.Tensor, channel: int, short: Callable[[torch.Tensor], bool]) -> torch.Tensor:
        """params [E + 6] with expression ``channel`` raised by bisection (``JAW_SEARCH_STEPS``) towards the
        model's upper bound for as long as ``short(params)`` holds: the largest value found where it still does
        (the goal approached from the solve's side, never passed). params itself where it does not hold."""
        if not short(params):
            return params
        lo, hi = float(params[channel]), float(self.hi)
        out = params.clone()
        for _ in range(JAW_SEARCH_STEPS):
            mid = 0.5 * (lo + hi)
            out[channel] = mid
            lo, hi = (mid, hi) if short(out) else (lo, mid)
        out[channel] = lo
        return out

    def _signed_mouth_gap(self, params: torch.Tensor, down: torch.Tensor, iod: float) -> float:
        """The model's inner-lip gap / ``iod`` along ``down`` [2] (the face's downward unit vector in the image):
        negative once the lips pass each other, so that it falls steadily as the lips close."""
        xy = self.project(params)
        return float((xy[INNER_LIP_LOWER] - xy[INNER_LIP_UPPER]) @ down) / iod

    def close_from_gap(self, params: torch.Tensor, target: torch.Tensor, iod: float) -> torch.Tensor:
        """params [E + 6] with mouthClose raised (bisection) until the model's inner-lip gap narrows to the one
        in ``target`` [L, 2], where the solve left it wider; never lowered, and never past the target's gap.
        Why: the counterpart of ``jaw_from_gap``. The solve reads the jaw from the whole lower face, and where
        a speaker's lips meet over a slightly opened jaw it left them apart: on a dev clip built from a smile
        (retalking_4), closed lips (0.00-0.03 IOD) tracked 0.04-0.07 open, the avatar's teeth showing between."""
        goal = float((target[INNER_LIP_UPPER] - target[INNER_LIP_LOWER]).norm()) / iod
        eyes = target[EYE_LINE[1]] - target[EYE_LINE[0]]
        down = torch.stack([-eyes[1], eyes[0]]) / eyes.norm().clamp_min(1e-6)  # eye line turned +90 degrees (image y down)
        return self._raise_while(params, self.close, lambda p: self._signed_mouth_gap(p, down, iod) > goal)

    def blinks_from_gaps(self, params: torch.Tensor, target: torch.Tensor, iod: float) -> torch.Tensor:
        """params [E + 6] with each eyeBlink raised towards the one its eye's lid gap in ``target`` [L, 2]
        (pixels) gives: 1 - (g - EYE_CLOSED_GAP) / (g0 - EYE_CLOSED_GAP), clamped to [0, 1], with g the
        detected gap and g0 the model's gap with that blink at 0 (the rest of ``params`` as solved), both /
        ``iod``. Only for a closing eye: fully below ``EYE_CLOSING_GAPS[0]``, not at all above
        ``EYE_CLOSING_GAPS[1]`` (an open eye keeps the solve's reading), smoothly between; never lowered.

        Why not the least-squares solve alone: a lid gap is two of 478 points, and against the expression
        prior the solve closed a blinking eye to eyeBlink ~0.35 (a dev clip's shut eyes) and a squint to ~0.25."""
        out = params.clone()
        lo, hi = EYE_CLOSING_GAPS
        for (upper, lower), col in self.blinks:
            g = float((target[upper] - target[lower]).norm()) / iod
            if g >= hi:
                continue
            open_params = out.clone()
            open_params[col] = 0.0
            xy = self.project(open_params)
            g0 = float((xy[upper] - xy[lower]).norm()) / iod
            if g0 <= EYE_CLOSED_GAP:
                continue
            mapped = min(max((g0 - g) / (g0 - EYE_CLOSED_GAP), 0.0), 1.0)
            t = min(max((hi - g) / (hi - lo), 0.0), 1.0)
            closing = t * t * (3.0 - 2.0 * t)  # smoothstep: 0 at the open end, 1 at the closed end
            out[col] = float(out[col]) + closing * max(mapped - float(out[col]), 0.0)
        return out

    def _lm(self, p: torch.Tensor, target: torch.Tensor, iod: float, reg_l2: torch.Tensor, reg_l1: torch.Tensor, iterations: int) -> torch.Tensor:
        """``iterations`` Levenberg-Marquardt steps from ``p`` (see ``solve``)."""
        o = self.options

        def cost(q: torch.Tensor, rq: torch.Tensor) -> float:
            r = self.sqrt_w * ((self._project(q, rq)[0] - target) / iod).reshape(-1)
            return float(r @ r + (reg_l2 * q * q).sum() + (reg_l1 * q).sum())

        damping = o.damping
        rot = slice(self.num_e, self.num_e + 3)
        p = p.clone()
        rmat = axis_angle_to_matrix(p[rot])
        current = cost(p, rmat)
        with torch.no_grad():
            for _ in range(iterations):
                xy, jac = self.jacobian(p, rmat)
                r = self.sqrt_w * ((xy - target) / iod).reshape(-1)
                jac = (self.sqrt_w[:, None] / iod) * jac.reshape(-1, jac.shape[-1])
                h = jac.T @ jac + torch.diag(reg_l2)
                g = jac.T @ r + reg_l2 * p + 0.5 * reg_l1
                # Active set: weights at a bound whose gradient pushes them out stay there this iteration.
                e = p[: self.num_e]
                pinned = torch.zeros_like(p, dtype=torch.bool)
                pinned[: self.num_e] = ((e <= self.lo) & (g[: self.num_e] > 0)) | ((e >= self.hi) & (g[: self.num_e] < 0))
                free = torch.nonzero(~pinned).flatten()
                h_free, g_free = h[free][:, free], g[free]
                for _ in range(LM_MAX_TRIES):
                    step = torch.zeros_like(p)
                    step[free] = -torch.linalg.solve(h_free + damping * torch.diag(h_free.diagonal().clamp_min(1e-12)), g_free)
                    cand, r_cand = self._apply(p, rmat, step)
                    c = cost(cand, r_cand)
                    if c <= current:
                        p, rmat, current, damping = cand, r_cand, c, max(damping / LM_DAMPING_FACTOR, LM_MIN_DAMPING)
                        break
                    damping *= LM_DAMPING_FACTOR
            p[rot] = matrix_to_axis_angle(rmat)
        return p


def with_closing_blinks(fit: FitResult, model: HeadModel, landmarks: np.ndarray, options: TrackOptions = TrackOptions()) -> FitResult:
    """``fit`` with the eyeBlink of each eye the photo shows closing raised as the tracker raises a frame's
    (``ExpressionPoseSolver.blinks_from_gaps``), so that an avatar built from a squint has its lids where the photo
    has them and a driven frame's blink is read on the same scale. Open eyes keep the fit's reading."""
    solver = ExpressionPoseSolver(model, fit.identity, fit.camera, options)
    params = torch.as_tensor(np.concatenate([fit.expression, np.zeros(HEAD_POSE_SIZE, np.float32)]))
    target = torch.as_tensor(np.asarray(landmarks)[:, :2], dtype=torch.float32)
    with torch.no_grad():
        solver.set_view(params[model.num_expressions :].numpy())
        out = solver.blinks_from_gaps(params, target, max(interocular(np.asarray(landmarks)), 1.0))
    return replace(fit, expression=out[: model.num_expressions].numpy().astype(np.float32).copy())


def with_photo_gaze(fit: FitResult, model: HeadModel, landmarks: np.ndarray, options: TrackOptions = TrackOptions()) -> FitResult:
    """``fit`` with its sideways gaze channels (``SIDEWAYS_GAZE``) as the tracker reads them on the same photo
    (identity and camera as fitted, ``options.first_iterations`` steps from the fit's expression), the rest as
    fitted.

    Why: the avatar's eyeballs take the photo's irises where the photo shows them, and every driven frame
    turns them by the tracker's reading of its own gaze. The photo fit left the gaze at zero (its priors hold
    the eyeLook channels there; the tracker's are weak on purpose), so the photo's own look was added again
    to every frame: a photo looking 5 degrees aside drove an avatar looking 10 degrees aside. The up / down
    channels stay as fitted: ICT's eyeLookUp also raises the lids, and the test avatar's look up (0.14) kept
    its closed eyes 0.047 IOD open to MediaPipe (0.031 with the sideways look alone, 0.019 with none)."""
    names = list(model.expression_names)
    cols = [i for i, n in enumerate(names) if n.startswith(SIDEWAYS_GAZE)]
    if not cols:
        return fit
    solver = ExpressionPoseSolver(model, fit.identity, fit.camera, options)
    params, _ = solver.solve(landmarks, np.concatenate([fit.expression, np.zeros(HEAD_POSE_SIZE, np.float32)]), options.first_iterations)
    expression = np.array(fit.expression, dtype=np.float32, copy=True)
    expression[cols] = params[cols]
    return replace(fit, expression=expression)


def track_landmarks(
    model: HeadModel,
    landmarks: list[np.ndarray | None],
    image_size: tuple[int, int],
    options: TrackOptions = TrackOptions(),
    identity: np.ndarray | None = None,
    camera: Camera | None = None,
    fps: float | None = None,
) -> Track:
    """Fit every frame's landmarks ([478, 2+] pixels, or None where no face was found).

    identity / camera: held fixed; None = estimated from the first frame with landmarks
    (``fit_landmarks``; its head pose is then zero by construction).
    """
    good = [i for i, lm in enumerate(landmarks) if lm is not None]
    if not good:
        raise FaceNotFoundError(f"no face found in any of the {len(landmarks)} frames")
    t0 = time.perf_counter()
    init = None
    if identity is None or camera is None:
        fit = fit_landmarks(model, landmarks[good[0]], image_size, FitOptions.preset(options.fit_preset))
        identity = fit.identity if identity is None else identity
        camera = fit.camera if camera is None else camera
        init = np.concatenate([fit.expression, np.zeros(HEAD_POSE_SIZE, np.float32)])
    solver = ExpressionPoseSolver(model, identity, camera, options)
    num_t, num_e = len(landmarks), model.num_expressions
    params = np.zeros((num_t, num_e + HEAD_POSE_SIZE), np.float32)
    found = np.zeros(num_t, dtype=bool)
    nme = np.full(num_t, np.nan, np.float32)
    last, fresh = init, True
    for i, lm in enumerate(landmarks):
        if lm is None:
            params[i] = last if last is not None else 0.0
            fresh = True
            continue
        p, err = solver.solve(lm, last, options.first_iterations if fresh else options.iterations)
        params[i], nme[i], found[i] = p, err, True
        last, fresh = p, False
    first = good[0]
    params[:first] = params[first]  # frames before the first face hold its fit
    return Track(params[:, :num_e], params[:, num_e:], found, nme, np.asarray(identity, np.float32), camera,
                 tuple(model.expression_names), fps, {"solve": time.perf_counter() - t0})  # fmt: skip


def detect_video_landmarks(frames: list[np.ndarray], detector, mirror: bool = TRACK_MIRROR) -> tuple[list[np.ndarray | None], float]:
    """Landmarks per frame with ``FaceDetector.track`` (video mode; ``mirror``: averaged with the
    flipped frames'), falling back to a full ``detect`` when the tracker loses the face
    -> (list of [478, 3] or None, seconds)."""
    t0 = time.perf_counter()
    detector.reset_tracking()
    out: list[np.ndarray | None] = []
    for frame in frames:
        lm = detector.track(frame, mirror=mirror)
        if lm is None:
            try:
                lm = detector.detect(frame).landmarks
            except FaceNotFoundError:
                lm = None
        out.append(lm)
    return out, time.perf_counter() - t0
