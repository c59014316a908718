"""The avatar: Gaussians bound to a fitted head mesh, built from one photo, driven by expressions.

Split by lifecycle (a reader who changes how an avatar animates never reads the optimiser):

* ``options``  ``AvatarOptions`` (saved, resolved, in every avatar file) and the file format version;
* ``avatar``   the runtime ``Avatar``: load, save, animate, render (it does not import ``build``);
* ``rig``      the ``AnimationRig`` precomputed per avatar: the static texels baked, what the dynamic
               ones need per frame, their order, the scale cap;
* ``texels``   texel geometry shared by the rig and the build (spacing, neighbours, moving texels);
* ``previews`` orbit views, expression previews, turntable frames;
* ``file``     checked reading of ``avatar.npz`` (every refusal an ``AvatarFileError``);
* ``build/``   photo -> avatar: ``init`` (initial maps), ``optimise`` (the person-specific fit),
               ``losses`` (priors and the coverage term), ``build_avatar``.

The design (static / dynamic split, learned branches, personalisation) is described in
``docs/architecture.md``. Every name that ``sega.avatar`` offered before the split is importable
from here.
"""

from __future__ import annotations

from ..imaging import contact_sheet, polygon_mask
from ..metrics import psnr, ssim_map
from .avatar import ORBIT_FOV_DEG, ORBIT_HEAD_FILL, Avatar
from .build import BUILD_STAGES, BuildData, build_avatar, crop_camera, dynamic_decoder_options
from .build.init import TexelInit, initial_maps, inpaint_colors, project_texels
from .build.optimise import optimise_maps
from .file import AvatarFileError
from .options import AVATAR_FORMAT_VERSION, AvatarOptions
from .previews import PREVIEW_EXPRESSIONS, PREVIEW_YAWS, TURNTABLE_FPS, TURNTABLE_FRAMES, preview_images, turntable_frames
from .rig import AnimationRig, build_rig, dynamic_texel_order, scale_cap, still_basis
from .texels import blink_texels, dynamic_texels, neighbour_pairs, region_mask, texel_spacing

__all__ = [
    "AVATAR_FORMAT_VERSION",
    "BUILD_STAGES",
    "ORBIT_FOV_DEG",
    "ORBIT_HEAD_FILL",
    "PREVIEW_EXPRESSIONS",
    "PREVIEW_YAWS",
    "TURNTABLE_FPS",
    "TURNTABLE_FRAMES",
    "AnimationRig",
    "Avatar",
    "AvatarFileError",
    "AvatarOptions",
    "BuildData",
    "TexelInit",
    "blink_texels",
    "build_avatar",
    "build_rig",
    "contact_sheet",
    "crop_camera",
    "dynamic_decoder_options",
    "dynamic_texel_order",
    "dynamic_texels",
    "initial_maps",
    "inpaint_colors",
    "neighbour_pairs",
    "optimise_maps",
    "polygon_mask",
    "preview_images",
    "project_texels",
    "psnr",
    "region_mask",
    "scale_cap",
    "ssim_map",
    "still_basis",
    "texel_spacing",
    "turntable_frames",
]
