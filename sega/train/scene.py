"""One prepared clip as a scene to train on: the head model at the clip's identity, its crop camera, the
Gaussian base maps a source unwrap gives, and the render and loss of one target frame.

Cross-frame training (SEGA): the prior sees a person through one frame's unwrap and is supervised by
renders at *other* frames' head pose and expression, so it must predict what holds across frames.

The base maps are what the prior's residuals are added to, made the way a build's are in spirit but from the
unwrap alone (a build's initialisation needs the photo and its landmarks): the unwrap's colour where the
frame saw the texel, else the mean seen colour; the initial scales and opacity of ``AvatarOptions``. The
loss is the build's (``sega.avatar.build.optimise``): L1 and D-SSIM against the person composited on the
background, in the mesh silhouette dilated by ``hair_margin`` minus the silhouette pixels the person mask
calls background, plus the mean square of the raw residuals (``w_residual``).

Shapes: T atlas texels, Ts / Td static / dynamic texels, A = ``NUM_ATTRIBUTES``, E expressions, S crop side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..avatar.options import AvatarOptions
from ..avatar.rig import scale_cap
from ..avatar.texels import texel_spacing
from ..camera import Camera
from ..gaussians import GaussianMaps, bind_frames
from ..geometry import apply_head_pose
from ..imaging import dilate
from ..meshraster import render_mesh
from ..metrics import ssim_map
from ..nets.decoders import residual_to_maps
from ..nets.prior import CONFIDENCE_SCALE
from ..render import RenderOutput
from ..render import render as render_gaussians

PERSON_THRESHOLD = 0.5  # person-mask probability above which a pixel is the person (the build's VISIBILITY_MIN_MASK)


class ClipScene:
    """A prepared clip's fixed parts on ``device``: identity, crop camera, texel spacing and scale cap."""

    def __init__(self, model, atlas, entry: dict, static_index: Tensor, dynamic_index: Tensor, options: AvatarOptions,
                 device: torch.device):  # fmt: skip
        self.model, self.atlas, self.options, self.device = model, atlas, options, device
        self.static_index, self.dynamic_index = static_index, dynamic_index  # [Ts], [Td] texel ids
        self.buffers = model.torch_buffers(device)
        self.identity = torch.as_tensor(np.asarray(entry["identity"], np.float32), device=device)
        self.camera = Camera.from_dict(entry["camera"])
        self.K, self.viewmat = self.camera.torch(device=device)
        self.size = int(self.camera.width)
        with torch.no_grad():
            neutral = model.deform(self.buffers, self.identity, torch.zeros(model.num_expressions, device=device))
        spacing = texel_spacing(atlas, neutral.cpu().numpy())
        in_plane = np.log(options.init_scale_texels * spacing)
        self.log_scale = np.stack([in_plane, in_plane, in_plane + math.log(options.init_normal_scale_ratio)], 1).astype(np.float32)
        self.cap = scale_cap(options, spacing, device)  # [T, 1]
        self.background = torch.tensor(options.background, dtype=torch.float32, device=device)

    def base_maps(self, colors: np.ndarray, confidence: np.ndarray) -> GaussianMaps:
        """T rows from one unwrap (colors [T, 3] uint8, confidence [T] uint8 x 255): its colour where seen, else the
        confidence-weighted mean of what it saw."""
        conf = np.asarray(confidence, np.float32) / CONFIDENCE_SCALE
        rgb = np.asarray(colors, np.float32) / 255.0
        mean = (rgb * conf[:, None]).sum(0) / max(float(conf.sum()), 1e-6)
        rgb = np.where(conf[:, None] > 0, rgb, mean)
        logit = math.log(self.options.init_opacity / (1.0 - self.options.init_opacity))
        return GaussianMaps.initial(self.atlas.num_texels, torch.from_numpy(self.log_scale), torch.from_numpy(rgb), logit, device=self.device)

    def residual_rows(self, res_static: Tensor, res_dynamic: Tensor | None) -> Tensor:
        """res_static [Ts, A], res_dynamic [Td, A] or None -> Tensor  # [T, A] in texel order (zeros where None)."""
        out = res_static.new_zeros(self.atlas.num_texels, res_static.shape[-1]).index_copy(0, self.static_index, res_static)
        return out if res_dynamic is None else out.index_copy(0, self.dynamic_index, res_dynamic)

    def vertices(self, expression: np.ndarray, pose: np.ndarray) -> Tensor:
        """[V, 3] the clip's head at one frame's expression [E] and head pose [6] (relative to the clip's camera)."""
        expr = torch.as_tensor(np.asarray(expression, np.float32), device=self.device)
        pose_t = torch.as_tensor(np.asarray(pose, np.float32), device=self.device)
        verts = self.model.deform(self.buffers, self.identity, expr)
        return apply_head_pose(verts, pose_t[:3], pose_t[3:], self.buffers.pivot)

    def render(self, base: GaussianMaps, residual: Tensor | None, vertices: Tensor) -> RenderOutput:
        """base maps + residual [T, A] (attribute units, or None) bound to ``vertices`` [V, 3], seen by the clip's camera."""
        maps = base if residual is None else base.add(residual_to_maps(residual))
        g = bind_frames(maps.with_scale_cap(self.cap), self.atlas.texel_points(vertices), self.atlas.texel_frames(vertices))
        return render_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors, self.K, self.viewmat, self.size, self.size,
                                self.background, backend="auto")  # fmt: skip

    def targets(self, image: np.ndarray, mask: np.ndarray, vertices: Tensor, hair_margin: float) -> tuple[Tensor, Tensor]:
        """A frame's (target [S, S, 3]: the person on the background, weight [S, S, 1]: the loss region)."""
        m = np.asarray(mask, np.float32) / CONFIDENCE_SCALE
        img = np.asarray(image, np.float32) / 255.0
        bg = np.asarray(self.options.background, np.float32)
        target = img * m[..., None] + bg * (1.0 - m[..., None])
        silhouette = render_mesh(vertices.detach().cpu().numpy(), self.atlas.faces, self.camera).mask
        region = dilate(silhouette, round(hair_margin * self.size)) & ~(silhouette & (m < PERSON_THRESHOLD))
        on = dict(dtype=torch.float32, device=self.device)
        return torch.as_tensor(target, **on), torch.as_tensor(region.astype(np.float32), **on)[..., None]


def photo_loss(rgb: Tensor, target: Tensor, weight: Tensor, w_l1: float, w_dssim: float) -> tuple[Tensor, Tensor, Tensor]:
    """rgb, target [S, S, 3], weight [S, S, 1] -> (loss, l1, dssim): the build's L1 + D-SSIM inside ``weight``
    (outside it the render is replaced by the target, so SSIM windows at the region's edge compare like with like)."""
    n = weight.sum().clamp_min(1.0)
    pred = rgb * weight + target * (1 - weight)
    l1 = (pred - target).abs().sum() / (3 * n)
    dssim = 1 - (ssim_map(pred, target)[..., None] * weight).sum() / n
    return w_l1 * l1 + w_dssim * dssim, l1, dssim


__all__ = ["ClipScene", "photo_loss"]
