"""Single-photo head fitting: camera, identity and expression from 2D landmarks.

The model's landmark points are barycentric combinations of mesh vertices, so we precompute
the few basis rows they need ([I+E, L, 3]) and optimise on those alone: each step is a tiny
matmul, which is why a full fit takes well under a second on a CPU.

Camera: the head stays in its canonical pose; the camera moves. ``viewmat = [R(omega) F | t]``
with F the frontal-camera rotation (``conventions.FRONTAL_CAMERA_ROTATION``), principal point at
the image centre, square pixels, focal length fitted with a prior on the field of view.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .camera import Camera, focal_from_fov, intrinsics
from .conventions import FRONTAL_CAMERA_ROTATION
from .errors import SegaError
from .geometry import axis_angle_to_matrix
from .headmodel.base import HeadModel, LandmarkEmbedding
from .landmarks import mediapipe_groups
from .presets import PRESET_NAMES

LANDMARK_SET = "mediapipe478"  # HeadModel.landmarks key used for fitting
MP_EYE_OUTER = (33, 263)  # MediaPipe outer eye corners (image-left, image-right): the inter-ocular distance
MP_EYE_CORNERS = (33, 133, 362, 263)  # outer and inner corners of both eyes
EYE_REST_GAP = 0.06  # lid gap / IOD below which a photo's eye is closing (open eyes: 0.07-0.13 on the dev clips)


@dataclass(frozen=True)
class FitOptions:
    """Options of ``fit_landmarks``. Loss terms are dimensionless (pixels / inter-ocular distance)."""

    rigid_steps: int = 80  # Adam steps on camera only (identity/expression frozen)
    steps: int = 1000  # Adam steps on everything
    lr_rotation: float = 0.02  # radians per step (Adam scale)
    lr_translation: float = 0.02  # log-distance / normalised-offset units per step
    lr_focal: float = 0.01  # log-focal per step
    lr_identity: float = 0.1  # identity std-units per step
    lr_expression: float = 0.03  # weight units per step
    # Prior weights are relative to the mean squared landmark error in inter-ocular units, which is
    # about 5e-5 for 1 px noise on a 150 px inter-ocular distance: stronger priors bias the shape.
    identity_prior: float = 2e-5  # weight of mean(identity^2) (prior N(0, 1))
    expression_l1: float = 2e-5  # weight of sum(expression) (weights are >= 0): sparsity
    expression_l2: float = 1e-5  # weight of sum(expression^2)
    fov_deg: float = 25.0  # prior field of view over the image's longer side (degrees)
    focal_prior: float = 1e-3  # weight of (log f - log f_prior)^2
    fit_focal: bool = True  # False: keep the prior focal length
    oval_weight: float = 0.3  # weight of face-contour landmarks (they slide along the silhouette)
    depth_weight: float = 0.0  # weight of the detector's relative depth (0: 2D only)
    # Whether the lid points of a closing eye (``closing_lid_points``) shape the identity. False: they move only the
    # expression (and camera). A squinting photo otherwise fits a narrow-eyed identity (eyeBlink 0.26 for a lid gap
    # of 0.019 IOD on a dev clip's grin), and every driven frame kept the squint.
    identity_from_closing_lids: bool = False
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> "FitOptions":
        """Named presets: fast / default / high."""
        if name == "fast":
            return cls(rigid_steps=50, steps=400)
        if name == "default":
            return cls()
        if name == "high":
            return cls(rigid_steps=120, steps=2000)
        raise ValueError(f"unknown preset {name!r} ({', '.join(PRESET_NAMES)})")


@dataclass
class FitResult:
    """A fitted head. Arrays are numpy; the head is in canonical pose, the camera carries the view."""

    camera: Camera
    identity: np.ndarray  # [I]
    expression: np.ndarray  # [E] in [0, 1]
    expression_names: tuple[str, ...]  # [E]
    head_model: str  # "ict" | "flame"
    landmarks_detected: np.ndarray  # [L, 2] pixels, the targets
    landmarks_fitted: np.ndarray  # [L, 2] pixels, projected model landmarks
    landmark_weights: np.ndarray  # [L] weights used (0 = unused)
    nme: float  # mean landmark error / inter-ocular distance (weight > 0 landmarks)
    seconds: float  # wall time of the optimisation
    options: FitOptions = field(default_factory=FitOptions)

    def to_dict(self) -> dict:
        return {
            "camera": self.camera.to_dict(),
            "identity": self.identity.tolist(),
            "expression": dict(zip(self.expression_names, self.expression.round(5).tolist())),
            "head_model": self.head_model,
            "landmarks_detected": self.landmarks_detected.round(3).tolist(),
            "landmarks_fitted": self.landmarks_fitted.round(3).tolist(),
            "landmark_weights": self.landmark_weights.tolist(),
            "nme": self.nme,
            "seconds": self.seconds,
            "options": asdict(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        names = tuple(d["expression"].keys())
        return cls(
            camera=Camera.from_dict(d["camera"]),
            identity=np.asarray(d["identity"], dtype=np.float32),
            expression=np.asarray(list(d["expression"].values()), dtype=np.float32),
            expression_names=names,
            head_model=d["head_model"],
            landmarks_detected=np.asarray(d["landmarks_detected"], dtype=np.float32),
            landmarks_fitted=np.asarray(d["landmarks_fitted"], dtype=np.float32),
            landmark_weights=np.asarray(d["landmark_weights"], dtype=np.float32),
            nme=float(d["nme"]),
            seconds=float(d["seconds"]),
            options=FitOptions(**d["options"]),
        )

    def save(self, path) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=1)

    @classmethod
    def load(cls, path) -> "FitResult":
        with open(path) as fh:
            return cls.from_dict(json.load(fh))


def surface_rows(model: HeadModel, embedding: LandmarkEmbedding, arr: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """arr [..., V, 3] per-vertex rows (positions or a basis) -> [..., L, 3] float32 at the embedding's
    surface points (barycentric mix of the triangle corners, summed in float64), on ``device``."""
    tri = model.faces[embedding.face_ids]  # [L, 3]
    b = embedding.barycentrics[..., None].astype(np.float64)  # [L, 3, 1]
    return torch.as_tensor((arr[..., tri, :].astype(np.float64) * b).sum(-2), dtype=torch.float32, device=device)


@dataclass(frozen=True)
class LandmarkBasis:
    """The rows of a head model's bases at its landmark points."""

    mean: torch.Tensor  # [L, 3] template landmark points
    identity: torch.Tensor  # [I, L, 3]
    expression: torch.Tensor  # [E, L, 3]

    @classmethod
    def from_model(cls, model: HeadModel, embedding: LandmarkEmbedding, device: torch.device | str | None = None) -> "LandmarkBasis":
        return cls(*(surface_rows(model, embedding, a, device) for a in (model.vertices, model.identity_basis, model.expression_basis)))

    def points(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """identity [I], expression [E] -> [L, 3] landmark points (canonical pose)."""
        return (
            self.mean
            + torch.einsum("i,ilc->lc", identity, self.identity)
            + torch.einsum("e,elc->lc", expression, self.expression)
        )


def _viewmat(omega: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = axis_angle_to_matrix(omega) @ torch.as_tensor(FRONTAL_CAMERA_ROTATION, dtype=omega.dtype, device=omega.device)
    return r, trans


def _project(points: torch.Tensor, r: torch.Tensor, t: torch.Tensor, f: torch.Tensor, c: torch.Tensor):
    cam = points @ r.T + t
    z = cam[:, 2].clamp_min(1e-3)
    return f * cam[:, :2] / z[:, None] + c, cam[:, 2]


def interocular(landmarks: np.ndarray) -> float:
    """Distance (pixels) between MediaPipe's outer eye corners."""
    return float(np.linalg.norm(landmarks[MP_EYE_OUTER[0], :2] - landmarks[MP_EYE_OUTER[1], :2]))


def fit_landmarks(
    model: HeadModel,
    landmarks: np.ndarray,
    image_size: tuple[int, int],
    options: FitOptions = FitOptions(),
    weights: np.ndarray | None = None,
    embedding: str = LANDMARK_SET,
    device: torch.device | str | None = None,
) -> FitResult:
    """Fit camera, identity and expression to detected landmarks; the optimisation's tensors on ``device``
    (None: torch's default; a build passes ``AvatarOptions.device``). The result is numpy either way.

    landmarks: [L, 2] or [L, 3] pixels (x, y[, relative depth in pixels as MediaPipe gives it])
    image_size: (H, W) of the photo the landmarks live in
    weights: [L] optional per-landmark weights (default: 1, face contour ``oval_weight``, 0 where the
        embedding has no surface point)
    """
    if embedding not in model.landmarks:
        raise SegaError(f"head model {model.name!r} has no {embedding!r} landmark embedding")
    emb = model.landmarks[embedding]
    if landmarks.shape[0] != len(emb):
        raise SegaError(f"expected {len(emb)} landmarks, got {landmarks.shape[0]}")
    torch.manual_seed(options.seed)
    t0 = time.perf_counter()
    h, w = image_size
    basis = LandmarkBasis.from_model(model, emb, device)
    dev = basis.mean.device
    target = torch.as_tensor(landmarks[:, :2], dtype=torch.float32, device=dev)
    if weights is None:
        weights = default_weights(model, embedding, options)
    wts = torch.as_tensor(weights, dtype=torch.float32, device=dev)
    iod = max(interocular(landmarks), 1.0)
    c = torch.tensor([w / 2.0, h / 2.0], device=dev)
    f0 = focal_from_fov(options.fov_deg, max(h, w))
    log_f0 = math.log(f0)

    # Initial camera: frontal, distance from the ratio of 3D to 2D landmark spread.
    mean3d = basis.mean
    used = wts > 0
    spread3d = (mean3d[used, :2] - mean3d[used, :2].mean(0)).norm(dim=-1).mean()
    spread2d = (target[used] - target[used].mean(0)).norm(dim=-1).mean()
    dist0 = float(f0 * spread3d / spread2d)
    centre_px = target[used].mean(0)
    centre3d = mean3d[used].mean(0)
    tz0 = dist0 - float(centre3d[2])  # camera z of the landmark centroid is dist0
    txy0 = (centre_px - c) / f0 * dist0 - torch.tensor([float(centre3d[0]), -float(centre3d[1])], device=dev)

    omega = torch.zeros(3, device=dev, requires_grad=True)
    log_tz = torch.tensor(math.log(tz0), device=dev, requires_grad=True)
    txy = txy0.clone().requires_grad_(True)
    log_f = torch.tensor(log_f0, device=dev, requires_grad=options.fit_focal)
    ident = torch.zeros(model.num_identity, device=dev, requires_grad=True)
    expr = torch.zeros(model.num_expressions, device=dev, requires_grad=True)
    lo, hi = model.expression_range
    has_depth = landmarks.shape[1] > 2 and options.depth_weight > 0
    depth_t = torch.as_tensor(landmarks[:, 2], dtype=torch.float32, device=dev) if has_depth else None
    no_translation = torch.zeros(3, device=dev)

    closing = [] if options.identity_from_closing_lids or embedding != LANDMARK_SET else closing_lid_points(landmarks)
    lid_rows = torch.as_tensor(closing, dtype=torch.long, device=dev) if closing else None

    def loss_fn():
        r, _ = _viewmat(omega, no_translation)
        t = torch.cat([txy, log_tz.exp()[None]])
        f = log_f.exp()
        pts = basis.points(ident, expr)
        if lid_rows is not None:  # a closing eye's lid points through an identity the gradient does not reach
            pts = pts.index_copy(0, lid_rows, basis.points(ident.detach(), expr)[lid_rows])
        xy, z = _project(pts, r, t, f, c)
        res = ((xy - target) / iod).pow(2).sum(-1)
        loss = (wts * res).sum() / wts.sum()
        if has_depth:
            zc = z - z[used].mean()
            rel = f * zc / t[2]  # camera depth in the detector's pixel scale
            tgt = depth_t - depth_t[used].mean()
            loss = loss + options.depth_weight * (wts * ((rel - tgt) / iod).pow(2)).sum() / wts.sum()
        loss = loss + options.identity_prior * ident.pow(2).mean()
        loss = loss + options.expression_l1 * expr.abs().sum() + options.expression_l2 * expr.pow(2).sum()
        loss = loss + options.focal_prior * (log_f - log_f0).pow(2)
        return loss, xy

    cam_params = [
        {"params": [omega], "lr": options.lr_rotation},
        {"params": [log_tz, txy], "lr": options.lr_translation},
    ]
    if options.fit_focal:
        cam_params.append({"params": [log_f], "lr": options.lr_focal})
    opt = torch.optim.Adam(cam_params[:2])  # rigid stage: focal held (depth/focal ambiguity)
    for _ in range(options.rigid_steps):
        opt.zero_grad()
        loss, _ = loss_fn()
        loss.backward()
        opt.step()
    opt = torch.optim.Adam(
        cam_params
        + [{"params": [ident], "lr": options.lr_identity}, {"params": [expr], "lr": options.lr_expression}]
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, options.steps, eta_min=0.0)
    for _ in range(options.steps):
        opt.zero_grad()
        loss, _ = loss_fn()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            expr.clamp_(lo, hi)
    with torch.no_grad():
        _, xy = loss_fn()
        r, _ = _viewmat(omega, no_translation)
        t = torch.cat([txy, log_tz.exp()[None]])
        f = float(log_f.exp())
    seconds = time.perf_counter() - t0
    viewmat = np.eye(4)
    viewmat[:3, :3] = r.double().cpu().numpy()
    viewmat[:3, 3] = t.double().cpu().numpy()
    fitted = xy.cpu().numpy()
    err = np.linalg.norm(fitted - landmarks[:, :2], axis=-1)
    wmask = weights > 0
    return FitResult(
        camera=Camera(intrinsics(f, w, h), viewmat, w, h),
        identity=ident.detach().cpu().numpy().copy(),
        expression=expr.detach().cpu().numpy().copy(),
        expression_names=model.expression_names,
        head_model=model.name,
        landmarks_detected=landmarks[:, :2].astype(np.float32),
        landmarks_fitted=fitted.astype(np.float32),
        landmark_weights=np.asarray(weights, dtype=np.float32),
        nme=float(err[wmask].mean() / iod),
        seconds=seconds,
        options=options,
    )


def closing_eyes(landmarks: np.ndarray) -> list[str]:
    """The eyes ("left", "right": the subject's) that ``landmarks`` [478, 2+] show closing: lids closer than
    ``EYE_REST_GAP`` x the inter-ocular distance (``face_measures.landmark_measures``' eye openings)."""
    from .face_measures import landmark_measures

    gaps = landmark_measures(landmarks)
    return [side for side in ("left", "right") if gaps[f"eye_opening_{side}"] < EYE_REST_GAP]


def closing_lid_points(landmarks: np.ndarray) -> list[int]:
    """MediaPipe's lid contour points (an eye's contour without its corners, ``MP_EYE_CORNERS``) of the
    ``closing_eyes``. Open eyes still shape the identity: with every lid point left out, the identity's eyes were
    the prior's, and a calm photo's irises read a noisier gaze. (The inner lips of an open mouth were tried too:
    closed mouths then tracked closer on the mesh, but no better on the renders, and the still-face gaze jitter rose.)"""
    groups = mediapipe_groups()
    return sorted(set().union(*(set(groups[f"{side}_eye"]) for side in closing_eyes(landmarks))) - set(MP_EYE_CORNERS))


def default_weights(model: HeadModel, embedding: str = LANDMARK_SET, options: FitOptions = FitOptions()) -> np.ndarray:
    """[L] per-landmark weights: 0 where the embedding has no surface point, lower on the face contour."""
    emb = model.landmarks[embedding]
    wts = np.ones(len(emb), dtype=np.float32)
    if emb.valid is not None:
        wts[~emb.valid] = 0.0
    if embedding == LANDMARK_SET:
        wts[list(mediapipe_groups()["face_oval"])] *= options.oval_weight
    return wts


def fit_photo(photo: np.ndarray, model: HeadModel, options: FitOptions = FitOptions(), detector=None):
    """Detect the face in ``photo [H, W, 3] uint8`` and fit ``model`` to it -> (FitResult, Detection).

    detector: a ``sega.face.FaceDetector`` to reuse (one is created and closed otherwise).
    """
    from .face import FaceDetector

    own = detector is None
    detector = FaceDetector() if own else detector
    try:
        detection = detector.detect(photo)
    finally:
        if own:
            detector.close()
    result = fit_landmarks(model, detection.landmarks, photo.shape[:2], options)
    return result, detection
