"""The runtime avatar: load, save, animate, render. Building lives in ``sega.avatar.build``.

Expressions passed to ``animate`` are absolute weights of the head model (``HeadModel``);
``Avatar.expression`` is the one fitted to the photo: the avatar's neutral (rest) face, used when
none is given; ``Avatar.expression_with(jawOpen=1.0)`` sets named weights on top of it. Head pose =
axis-angle rotation about ``HeadModel.pivot`` then translation (metres).

Shapes: T texels, Ts static, Td dynamic, V vertices, E expressions, I identity components.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..camera import Camera, orbit_camera
from ..devices import DEFAULT_DEVICE, resolve_device
from ..gaussians import GaussianMaps, Gaussians, bind_frames
from ..geometry import axis_angle_to_matrix
from ..headmodel.base import HeadModel
from ..nets.decoders import AvatarDecoders, residual_to_maps
from ..render import RenderOutput
from ..render import render as render_gaussians
from ..render import render_views as render_gaussian_views
from ..uv import Atlas, AtlasOptions, edges_with_motion, frames_from_edges
from .frames import animate_frames
from .options import AVATAR_FORMAT_VERSION, AvatarOptions
from .rig import AnimationRig, build_rig

# Framing of orbit / preview cameras.
ORBIT_FOV_DEG = 20.0  # field of view of orbit cameras
ORBIT_HEAD_FILL = 0.78  # fraction of the frame the head's bounding sphere diameter spans


def _as_float_tensor(x, device: torch.device) -> Tensor:
    """float32 tensor of x on ``device`` (tensors pass through, keeping their autograd graph)."""
    return x.float().to(device) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)


@dataclass(eq=False)
class Avatar:
    """A drivable Gaussian head avatar. Build with ``Avatar.build``, or ``Avatar.load`` a saved one."""

    head_model: HeadModel  # the head model it was built with (not saved; passed to ``load``)
    identity: np.ndarray  # [I] fitted identity coefficients
    expression: np.ndarray  # [E] fitted expression (the avatar's rest face)
    atlas: Atlas  # texel layout the maps are defined on
    static_mask: np.ndarray  # [T] bool: static texels (the rest are dynamic)
    maps: GaussianMaps  # T rows, the learned Gaussians
    camera: Camera  # the fitted photo camera
    crop_camera: Camera  # the head-crop camera the optimisation rendered at (render_size px)
    options: AvatarOptions
    provenance: dict = field(default_factory=dict)  # sega version, head model + licence, build stats
    # The learned branches (``sega.nets.decoders``): the static decoder's residuals are baked into the
    # static Gaussians by ``precompute``; the dynamic decoder's are added per frame. None: maps only.
    decoders: AvatarDecoders | None = None
    # Hair beyond the head mesh (``sega.avatar.build.hair``): canonical static Gaussians that follow the
    # head pose only. None: no hair volume (a photo showing none, or an avatar from before format 3).
    hair: Gaussians | None = None
    # Hook for the dynamic branch: expression [E] -> residual GaussianMaps for the Td dynamic texels
    # (added to the maps before binding). None: ``decoders.dynamic`` when there are decoders, else no residual.
    dynamic_residual: Callable[[Tensor], GaussianMaps] | None = None
    rig: AnimationRig | None = field(default=None, repr=False)  # built by ``precompute`` on construction

    def __post_init__(self) -> None:
        if self.rig is None:
            self.precompute()

    # ---- device --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the avatar's tensors live and ``animate`` / ``render`` compute (``Avatar.load(..., device=)``,
        ``to``; a build puts it on ``AvatarOptions.device``). ``options.device`` records where it was built."""
        return self.maps.device

    def to(self, device: torch.device | str) -> Avatar:
        """This avatar on ``device`` (a ``torch.device`` or a resolved name; see ``sega.devices.resolve_device``):
        self when it is there already, else a copy whose maps, decoders, hair and rig were moved (exactly: the rig
        is not recomputed). The head model, atlas and options are shared."""
        if torch.device(device) == self.device:
            return self
        return replace(self, maps=self.maps.to(device), decoders=None if self.decoders is None else self.decoders.to(device),
                       hair=None if self.hair is None else self.hair.to(device), rig=self.rig.to(device))  # fmt: skip

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return len(self.maps) + self.num_hair

    @property
    def num_hair(self) -> int:
        return 0 if self.hair is None else len(self.hair)

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def dynamic_mask(self) -> np.ndarray:
        return ~self.static_mask

    # ---- geometry ------------------------------------------------------------------------------
    def vertices(self, expression: np.ndarray | Tensor | None = None) -> Tensor:
        """[V, 3] unposed mesh for ``expression`` (default: the fitted one), on the avatar's device."""
        dev = self.device
        buf = self.head_model.torch_buffers(dev)
        expr = self.expression if expression is None else expression
        return self.head_model.deform(buf, torch.as_tensor(self.identity, dtype=torch.float32, device=dev), _as_float_tensor(expr, dev))

    def orbit_camera(self, yaw_deg: float, pitch_deg: float = 0.0, size: int = 256) -> Camera:
        """A camera on a circle around the head (yaw 0 = frontal, see ``sega.camera.orbit_camera``)
        framing the whole head (canonical pose) at ``size`` px."""
        rig = self.rig
        distance = rig.head_radius / (ORBIT_HEAD_FILL * math.tan(math.radians(ORBIT_FOV_DEG) / 2))
        return orbit_camera(yaw_deg, pitch_deg, distance, rig.head_centre, ORBIT_FOV_DEG, size, size)

    # ---- precompute / animate ------------------------------------------------------------------
    def precompute(self) -> Avatar:
        """Build the ``AnimationRig`` (``sega.avatar.rig.build_rig``). Runs on construction; call it
        again after changing ``maps``, ``static_mask`` or ``hair``. Returns self."""
        self.rig = build_rig(self.head_model, self.atlas, self.identity, self.expression, self.maps, self.static_mask,
                             self.options, self.decoders, self.vertices(), self.hair)  # fmt: skip
        return self

    def dynamic_residual_maps(self, expression, grad: bool = False) -> GaussianMaps | None:
        """Td rows: the dynamic branch's residuals at ``expression`` [E] (tensor), or None without one.

        expression -> ``decoders.encoder`` (the displacement VAE's encoder mean: the expression feature)
        -> ``decoders.dynamic`` sampled at the dynamic texels; or the ``dynamic_residual`` hook if set.
        grad: keep the autograd graph (w.r.t. ``expression``).
        """
        if self.dynamic_residual is not None:
            return self.dynamic_residual(expression)
        if self.decoders is None:
            return None
        with contextlib.nullcontext() if grad else torch.no_grad():
            z = self.decoders.encoder(expression[None])
            return residual_to_maps(self.decoders.dynamic(z)[0])

    def texel_maps(self, expression=None) -> GaussianMaps:
        """T rows: the maps as ``animate`` binds them at ``expression`` (default the fitted one): the
        stored maps plus the static decoder's residuals (static texels) and the dynamic branch's
        residuals at that expression (dynamic texels)."""
        expr = _as_float_tensor(self.expression if expression is None else expression, self.device)
        rig = self.rig
        out = self.maps.detach()
        with torch.no_grad():
            if self.decoders is not None:
                res = self.decoders.static()
                for k, v in residual_to_maps(res).tensors().items():
                    out.tensors()[k][rig.static_index] += v
            dyn = self.dynamic_residual_maps(expr)
            if dyn is not None:
                for k, v in dyn.tensors().items():
                    out.tensors()[k][rig.dynamic_index] += v
        return out.with_scale_cap(rig.texel_scale_cap)

    def animate(self, expression=None, head_pose: tuple | None = None, grad: bool = False) -> Gaussians:
        """World-space Gaussians for one frame.

        expression: [E] absolute expression weights (numpy or tensor); None = the fitted expression.
        head_pose: (rotation [3] axis-angle radians, translation [3] metres) or None (canonical pose).
        grad: differentiable w.r.t. tensor ``expression`` / ``head_pose`` (photometric tracking); the
            avatar's own parameters stay fixed either way.
        returns Gaussians with the static texels first, then the hair (``num_hair``), then the dynamic
        texels (``rig.static_index`` / ``rig.dynamic_index`` give the texels' ids).

        Mesh deformation of the dynamic texels uses the head model's exact linear blendshapes, not the
        displacement VAE's decoded map: the blendshapes are exact (the VAE is within ~1 mm of them),
        and cheaper on the CPU (a [E] x [E, Vd*3] product against decoding a full UV map and sampling
        it); the VAE's encoder only supplies the expression feature of the dynamic decoder.
        """
        rig = self.rig
        expr = _as_float_tensor(self.expression if expression is None else expression, rig.device)
        if expr.shape != (self.head_model.num_expressions,):
            raise ValueError(f"expected {self.head_model.num_expressions} expression weights, got {tuple(expr.shape)}")
        with contextlib.nullcontext() if grad else torch.no_grad():
            motion = (expr @ rig.expression_basis).reshape(-1, 3)  # [Vd, 3]
            verts = rig.base_vertices + motion
            pts = (verts[rig.texel_tri] * rig.texel_bary[..., None]).sum(1)
            # Edges as neutral edge + motion difference: float32 p1 - p0 of positions ~0.1 m from the
            # origin would leave 1e-4 relative error in the frames of sub-millimetre triangles (teeth, lids).
            e1, e2 = edges_with_motion(rig.face_edges, motion[rig.faces])  # [U, 3] each
            frames = frames_from_edges(e1, e2, rig.face_uv_coeffs, rig.face_uv_ok)[rig.texel_face]
            maps = rig.dynamic_maps
            residual = self.dynamic_residual_maps(expr, grad)  # <- the dynamic decoder's residuals
            if residual is not None:
                maps = maps.add(residual)
            dynamic = bind_frames(rig.dynamic_maps_at(maps, e1, e2, expr), pts, frames)
            out = Gaussians.cat([rig.static, dynamic])
            if head_pose is not None:
                out = self.posed(out, head_pose)
        return out

    def posed(self, gaussians: Gaussians, head_pose: tuple) -> Gaussians:
        """Canonical Gaussians (``animate`` without a head pose) moved by head_pose (rotation [3]
        axis-angle radians about the head model's pivot, translation [3] metres); differentiable.
        Photometric pose refinement poses one animated frame many times (``sega.evaluate``)."""
        dev = self.rig.device
        rot, trans = _as_float_tensor(head_pose[0], dev), _as_float_tensor(head_pose[1], dev)
        r = axis_angle_to_matrix(rot)
        return gaussians.transformed(r, self.rig.pivot - r @ self.rig.pivot + trans)

    def render(
        self,
        expression=None,
        head_pose: tuple | None = None,
        camera: Camera | None = None,
        width: int | None = None,
        height: int | None = None,
        background: tuple[float, float, float] | None = None,
        backend: str = "auto",
    ) -> RenderOutput:
        """Render one frame on the avatar's device (its tensors stay there: ``.rgb.cpu().numpy()`` for an image).
        camera: default the input-view head-crop camera; width/height (px) resize the camera's image (K
        scaled); background: rgb, default ``options.background``. backend "auto": gsplat on CUDA, else the CPU
        rasteriser (``sega.render.resolve_backend``)."""
        cam = self.crop_camera if camera is None else camera
        w = cam.width if width is None else int(width)
        h = cam.height if height is None else int(height)
        k = cam.K.copy()
        k[0] *= w / cam.width
        k[1] *= h / cam.height
        g = self.animate(expression, head_pose)
        dev = g.device
        bg = torch.tensor(self.options.background if background is None else background, dtype=torch.float32, device=dev)
        with torch.no_grad():
            return render_gaussians(
                g.means, g.quats, g.scales, g.opacities, g.colors,
                torch.as_tensor(k, dtype=torch.float32, device=dev), torch.as_tensor(cam.viewmat, dtype=torch.float32, device=dev),
                w, h, bg, backend=backend,
            )

    def render_views(
        self,
        cameras,
        expression=None,
        head_pose: tuple | None = None,
        background: tuple[float, float, float] | None = None,
        backend: str = "auto",
    ) -> RenderOutput:
        """One frame seen by several cameras of one image size (orbit views, previews, a turntable): animated
        once, rendered as one camera batch (one gsplat call on a GPU; view by view on the CPU, which gives
        ``render``'s images exactly). -> RenderOutput of [C, H, W, ...] tensors on the avatar's device."""
        cams = list(cameras)
        if not cams:
            raise ValueError("render_views needs at least one camera")
        sizes = {(c.width, c.height) for c in cams}
        if len(sizes) != 1:
            raise ValueError(f"render_views needs cameras of one image size, got {sorted(sizes)}")
        (w, h), = sizes
        g = self.animate(expression, head_pose)
        dev = g.device
        bg = torch.tensor(self.options.background if background is None else background, dtype=torch.float32, device=dev)
        ks = torch.as_tensor(np.stack([c.K for c in cams]), dtype=torch.float32, device=dev)
        views = torch.as_tensor(np.stack([c.viewmat for c in cams]), dtype=torch.float32, device=dev)
        with torch.no_grad():
            return render_gaussian_views(g.means, g.quats, g.scales, g.opacities, g.colors, ks, views, w, h, bg, backend=backend)

    def animate_frames(self, expressions, rotations=None, translations=None) -> Gaussians:
        """F frames at once: [F, N, ...] Gaussians, frame f equal to ``animate(expressions[f], (rotations[f],
        translations[f]))`` (``sega.avatar.frames``). expressions [F, E]; rotations, translations [F, 3] or None."""
        return animate_frames(self, expressions, rotations, translations)

    def orbit_views(self, yaws_deg, size: int = 256, pitch_deg: float = 0.0, expression=None) -> list[np.ndarray]:
        """Renders [size, size, 3] float32 around the head, one per yaw (degrees), as one camera batch."""
        rgb = self.render_views([self.orbit_camera(y, pitch_deg, size) for y in yaws_deg], expression).rgb
        return list(rgb.cpu().numpy())

    def expression_with(self, **weights: float) -> np.ndarray:
        """[E] the fitted (neutral) expression with the named weights set, e.g. ``expression_with(jawOpen=1.0)``."""
        out = np.asarray(self.expression, dtype=np.float32).copy()
        for name, value in weights.items():
            out[self.head_model.expression_index(name)] = value
        return out

    # ---- persistence ---------------------------------------------------------------------------
    def header(self) -> dict:
        return {
            "format_version": AVATAR_FORMAT_VERSION,
            "sega_version": __version__,
            "options": self.options.to_dict(),
            "seed": self.options.seed,
            "head_model": {
                "name": self.head_model.name,
                "licence": self.head_model.licence,
                "num_vertices": self.head_model.num_vertices,
                "num_faces": self.head_model.num_faces,
                "num_identity": int(self.identity.shape[0]),
                "expression_names": list(self.head_model.expression_names),
            },
            "atlas": {"options": asdict(self.atlas.options), "region_names": list(self.atlas.region_names)},
            "camera": self.camera.to_dict(),
            "crop_camera": self.crop_camera.to_dict(),
            "provenance": self.provenance,
            "decoders": None if self.decoders is None else self.decoders.header(),
        }

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (no pickles): a JSON header, the maps, the masks, the fit, the atlas. Every array
        is copied to the CPU first: the file is the same whichever device holds the avatar."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"maps_{k}": v for k, v in self.maps.to_numpy().items()}
        arrays.update({f"atlas_{k}": getattr(self.atlas, k) for k in Atlas._ARRAYS})
        arrays["identity"] = np.asarray(self.identity, dtype=np.float32)
        arrays["expression"] = np.asarray(self.expression, dtype=np.float32)
        arrays["static_mask"] = np.asarray(self.static_mask, dtype=bool)
        if self.decoders is not None:
            arrays.update({f"decoder_{k}": v for k, v in self.decoders.arrays().items()})
        hair = self.hair if self.hair is not None else Gaussians(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3))
        arrays.update({f"hair_{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in hair.tensors().items()})
        arrays["header_json"] = np.frombuffer(json.dumps(self.header()).encode("utf-8"), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @staticmethod
    def read_header(path: str | Path) -> dict:
        """The avatar file's JSON header, checked (``sega.avatar.file``; ``AvatarFileError`` if unusable)."""
        from .file import read_avatar_header

        return read_avatar_header(path)

    @classmethod
    def load(cls, path: str | Path, head_model: HeadModel, device: str | torch.device = DEFAULT_DEVICE) -> Avatar:
        """Read an avatar written by ``save``; ``head_model`` must be the head model it was built with. The
        avatar's tensors go to ``device`` ("auto": CUDA when torch sees it; ``sega.devices.resolve_device``,
        whose ``DeviceError`` it raises), where ``precompute`` then runs.

        Every size, dtype, shape, value range and header field is checked first (``sega.avatar.file``):
        a damaged or hostile file raises ``AvatarFileError`` (a ``SegaError``) naming the file."""
        from .file import read_avatar_file

        dev = torch.device(resolve_device(device))
        header, arrays = read_avatar_file(path, head_model)
        ao = dict(header["atlas"]["options"])
        ao["regions"] = None if ao["regions"] is None else tuple(ao["regions"])
        atlas = Atlas(options=AtlasOptions(**ao), region_names=tuple(header["atlas"]["region_names"]),
                      **{k: arrays[f"atlas_{k}"] for k in Atlas._ARRAYS})
        maps = GaussianMaps.from_numpy({k[5:]: v for k, v in arrays.items() if k.startswith("maps_")}, device=dev)
        decoders = None
        if header.get("decoders") is not None:
            decoders = AvatarDecoders.from_saved(header["decoders"], {k[8:]: v for k, v in arrays.items() if k.startswith("decoder_")}, dev)
        hair = None
        if arrays.get("hair_means") is not None and len(arrays["hair_means"]):
            hair = Gaussians(**{k: torch.as_tensor(arrays[f"hair_{k}"], device=dev) for k in ("means", "quats", "scales", "opacities", "colors")})
        return cls(
            head_model=head_model,
            identity=arrays["identity"],
            expression=arrays["expression"],
            atlas=atlas,
            static_mask=arrays["static_mask"].astype(bool),
            maps=maps,
            camera=Camera.from_dict(header["camera"]),
            crop_camera=Camera.from_dict(header["crop_camera"]),
            options=AvatarOptions.from_dict(header["options"]),
            provenance=header.get("provenance", {}),
            decoders=decoders,
            hair=hair,
        )

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        photo: np.ndarray,
        head_model: HeadModel,
        options: AvatarOptions = AvatarOptions(),
        progress: Callable[[str, float], None] | None = None,
        detector=None,
        prior=None,
    ) -> Avatar:
        """One photo -> avatar. photo: [H, W, 3] uint8 RGB; head_model: with a "mediapipe478" landmark embedding.

        progress(stage, fraction) is called with the stages of ``sega.avatar.build.BUILD_STAGES``
        (fraction in [0, 1] within the stage). detector: a ``sega.face.FaceDetector`` to reuse (else one
        is made and closed). prior: a ``sega.nets.prior_file.LoadedPrior`` the decoders start from (None: zero).
        ``sega.avatar.build.build_avatar`` (imported here, on use: the runtime avatar does not depend on the build).
        """
        from .build import build_avatar

        return build_avatar(photo, head_model, options, progress, detector, prior=prior)[0]
