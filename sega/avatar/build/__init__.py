"""Building an avatar from one photo: detect, fit, segment, initialise the maps, optimise, precompute.

``build_avatar(photo, head_model, options)`` -> (``Avatar``, ``BuildData``). The runtime avatar
(``sega.avatar.avatar``) never imports this package: a reader who changes how an avatar animates
does not read the optimiser.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ... import __version__
from ...camera import Camera
from ...devices import device_label, resolve_device
from ...headmodel.base import HeadModel
from ...imaging import polygon_mask
from ...meshraster import render_mesh
from ...nets.decoders import AvatarDecoders, DynamicDecoderOptions
from ...person_regions import without_other_people
from ...uv import Atlas
from ..avatar import Avatar
from ..options import AvatarOptions
from ..texels import dynamic_texels
from .hair import hair_gaussians
from .init import initial_maps
from .unseen import blend_unseen
from .optimise import optimise_maps

# Regions that get no Gaussians. ICT's eyelashes are cards standing out from the lid margins: splats on them
# take whatever colour lies behind them in the photo (skin, the eye) and, a few millimetres wide, cover the
# eye, so an opened eye still showed a patch of skin. Without them the lid margin's own texels carry the
# photo's dark lash line.
SPLATLESS_REGIONS = ("eyelashes",)
DROPPED_OPACITY_LOGIT = -12.0  # a dropped texel's opacity logit (sigmoid ~6e-6), far below what the decoders' residuals can lift
BUILD_STAGES = ("detect", "fit", "segment", "initialise", "optimise", "precompute")


@dataclass
class BuildData:
    """Intermediate results of a build (returned by ``build_avatar`` for reports and tests)."""

    fit: object  # sega.fit.FitResult
    detection: object  # sega.face.Detection
    crop: object  # sega.face.HeadCrop at render_size
    target: np.ndarray  # [S, S, 3] float32 photo crop
    person_mask: np.ndarray  # [S, S] float32 person probability in the crop
    silhouette: np.ndarray  # [S, S] bool mesh silhouette at the crop camera
    face_mask: np.ndarray  # [S, S] bool face-oval polygon of the detected landmarks, on the person
    confidence: np.ndarray  # [T] float in [0, 1]: how squarely the photo sees each texel (0 = unseen)
    seconds: dict = field(default_factory=dict)  # wall time per stage
    losses: list = field(default_factory=list)  # total loss per optimisation step


def _report(progress, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, float(fraction))


def dynamic_decoder_options(options: AvatarOptions) -> DynamicDecoderOptions:
    """The dynamic decoder for ``options``: three conv levels (32, 16, 8 channels) from a feature map of
    side ``dynamic_map_resolution / 4`` up to the residual map."""
    levels = DynamicDecoderOptions().channels
    side = options.dynamic_map_resolution // 2 ** (len(levels) - 1)
    return DynamicDecoderOptions(feature_resolution=side, map_resolution=options.dynamic_map_resolution)


def atlas_regions(model: HeadModel) -> tuple[str, ...]:
    """The head model's regions that get Gaussians: all but ``SPLATLESS_REGIONS``."""
    return tuple(r for r in model.region_names if r not in SPLATLESS_REGIONS)


def crop_camera(camera: Camera, crop) -> Camera:
    """The fitted camera seen through a head crop: K' = A K with A the photo -> crop affine."""
    return Camera(crop.photo_to_crop @ camera.K, camera.viewmat.copy(), crop.size, crop.size)


def _decoders_from_prior(prior, model: HeadModel, options: AvatarOptions, fit, photo: np.ndarray, person: np.ndarray,
                         landmarks: np.ndarray, buffers, device: torch.device) -> AvatarDecoders:
    """The decoders a prior predicts for this photo: the photo unwrapped at the prior's atlas resolution (as the
    training set's source frames were, ``sega.train.prepare``), through its identity encoder."""
    from ...nets.prior import uv_input
    from ...nets.prior_file import decoders_from_prior
    from .unwrap import unwrap_frame

    atlas = Atlas.build(model, prior.atlas_resolution, regions=atlas_regions(model))
    colors, confidence = unwrap_frame(model, atlas, buffers, fit.identity, fit.expression, np.zeros(6, np.float32), fit.camera, photo,
                                      person, landmarks)  # fmt: skip
    return decoders_from_prior(prior, model, dynamic_decoder_options(options), uv_input(atlas, colors, confidence), device)


def build_avatar(
    photo: np.ndarray,
    model: HeadModel,
    options: AvatarOptions = AvatarOptions(),
    progress: Callable[[str, float], None] | None = None,
    detector=None,
    prior=None,
) -> tuple[Avatar, BuildData]:
    """``Avatar.build`` plus its intermediate data (``BuildData``).

    ``options.device`` ("auto", "cpu", "cuda") is resolved first (``sega.devices.resolve_device``; a
    ``DeviceError`` before any work when CUDA is asked for and missing) and the avatar's options record the
    resolved name. Fitting, the maps, the decoders, the optimisation, the hair and the precompute make their
    tensors there; MediaPipe, the numba mesh rasteriser and the numpy steps of the initialisation stay on the CPU.

    prior: a ``sega.nets.prior_file.LoadedPrior`` (``sega build --prior``): the decoders start from its prediction for
    this photo (``decoders_from_prior``) instead of zero, and the same personalisation follows; the avatar's
    provenance records the prior's file name and SHA-256. None: decoders start at zero."""
    from ...face import FaceDetector, head_crop
    from ...fit import FitOptions, fit_landmarks
    from ...track import with_closing_blinks, with_photo_gaze
    from ...landmarks import mediapipe_groups

    options = replace(options, device=resolve_device(options.device))
    dev = torch.device(options.device)
    secs: dict[str, float] = {}
    own = detector is None
    det = FaceDetector() if own else detector
    try:
        t0 = time.perf_counter()
        _report(progress, "detect", 0.0)
        detection = det.detect(photo)
        secs["detect"] = time.perf_counter() - t0
        _report(progress, "detect", 1.0)

        t0 = time.perf_counter()
        _report(progress, "fit", 0.0)
        fit = fit_landmarks(model, detection.landmarks, photo.shape[:2], FitOptions.preset(options.fit_preset), device=dev)
        fit = with_photo_gaze(fit, model, detection.landmarks)  # the photo's look as the tracker reads it
        fit = with_closing_blinks(fit, model, detection.landmarks)  # a squint's lids where the photo has them
        secs["fit"] = time.perf_counter() - t0
        _report(progress, "fit", 1.0)

        t0 = time.perf_counter()
        _report(progress, "segment", 0.0)
        own_box = detection.detector_box if detection.detector_box is not None else detection.box
        person = without_other_people(det.segment_person(photo), own_box, detection.other_boxes)
        secs["segment"] = time.perf_counter() - t0
        _report(progress, "segment", 1.0)
    finally:
        if own:
            det.close()

    t0 = time.perf_counter()
    _report(progress, "initialise", 0.0)
    buf = model.torch_buffers()
    with torch.no_grad():
        verts_t = model.deform(buf, torch.as_tensor(fit.identity), torch.as_tensor(fit.expression))
    vertices = verts_t.numpy()
    atlas = Atlas.build(model, options.atlas_resolution, regions=atlas_regions(model))
    static_mask = ~dynamic_texels(model, atlas, options.dynamic_threshold_m)
    _report(progress, "initialise", 0.3)
    init = initial_maps(model, atlas, vertices, photo, person, fit.camera, options, detection.landmarks, fit.expression, device=dev)
    crop = head_crop(detection, photo.shape, size=options.render_size)
    cam = crop_camera(fit.camera, crop)
    target = crop.apply(photo).astype(np.float32) / 255.0
    pmask = np.clip(crop.apply(person, pad="constant", fill=0.0), 0.0, 1.0).astype(np.float32)
    sil = render_mesh(vertices, atlas.faces, cam).mask
    lms = crop.landmarks_to_crop(detection.landmarks[:, :2])
    face_mask = polygon_mask(lms[list(mediapipe_groups()["face_oval"])], options.render_size, options.render_size) & (pmask >= 0.5)

    decoders = None
    if options.decoders and prior is not None:
        decoders = _decoders_from_prior(prior, model, options, fit, photo, person, detection.landmarks, buf, dev)
    elif options.decoders:
        decoders = AvatarDecoders.create(model, dynamic=dynamic_decoder_options(options), device=dev)
    secs["initialise"] = time.perf_counter() - t0
    _report(progress, "initialise", 1.0)

    t0 = time.perf_counter()
    data = BuildData(fit, detection, crop, target, pmask, sil, face_mask, init.confidence, secs)
    maps = optimise_maps(init, atlas, vertices, cam, target, pmask, options, lambda f: _report(progress, "optimise", f), data.losses,
                         decoders=decoders, static_mask=static_mask, expression=fit.expression)
    hair = hair_gaussians(vertices, model, cam, target, pmask, lms, sil, device=dev) if options.hair_volume else None
    secs["optimise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _report(progress, "precompute", 0.0)
    provenance = {
        "sega_version": __version__,
        "head_model": model.name,
        "head_model_licence": model.licence,
        "photo_size": list(photo.shape[:2]),
        "fit_nme": fit.nme,
        "build_seconds": {k: round(v, 3) for k, v in secs.items()},
        "torch_threads": torch.get_num_threads(),
        "device": device_label(dev),  # the resolved device with the GPU's name (``options.device`` is the bare name)
        "displacement_vae": None if decoders is None else decoders.vae_provenance,
        "prior": None if prior is None else prior.provenance(),
    }
    avatar = Avatar(
        head_model=model,
        identity=fit.identity.astype(np.float32),
        expression=fit.expression.astype(np.float32),
        atlas=atlas,
        static_mask=static_mask,
        maps=maps,
        camera=fit.camera,
        crop_camera=cam,
        options=options,
        provenance=provenance,
        decoders=decoders,
        hair=hair,
    )
    if init.photo_weight is not None:  # trust the fitted colours only as far as the photo saw them (``unseen``)
        fitted = avatar.texel_maps().color.cpu().numpy()  # the maps plus the decoders' residuals at the fitted expression
        target_rgb = blend_unseen(fitted, init.photo_weight, init.mirror, init.fill)
        with torch.no_grad():
            avatar.maps.color += torch.as_tensor(target_rgb - fitted, device=dev)
    if init.backdrop is not None:  # the template's shoulders over the photo's backdrop are dropped
        with torch.no_grad():
            avatar.maps.opacity_logit[torch.as_tensor(init.backdrop, device=dev)] = DROPPED_OPACITY_LOGIT
    avatar.precompute()
    secs["precompute"] = time.perf_counter() - t0
    avatar.provenance["build_seconds"] = {k: round(v, 3) for k, v in secs.items()}
    _report(progress, "precompute", 1.0)
    return avatar, data
