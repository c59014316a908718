"""How an avatar is built: ``AvatarOptions`` (saved, resolved, inside every avatar file) and the format version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..devices import DEFAULT_DEVICE
from ..presets import DEFAULT_PRESET, PRESET_NAMES

AVATAR_FORMAT_VERSION = 3  # bump when the .npz layout changes (2: learned decoders + expression encoder; 3: hair Gaussians)


@dataclass(frozen=True)
class AvatarOptions:
    """How an avatar is built. Saved (resolved) inside every avatar file."""

    # atlas / Gaussians
    atlas_resolution: int = 256  # texels per side of the UV atlas (one Gaussian per covered texel; 256 -> ~31k)
    init_scale_texels: float = 0.7  # initial in-plane std-dev, in texel spacings (neighbours overlap)
    init_normal_scale_ratio: float = 0.3  # initial std-dev along the normal / in-plane (flat splats)
    init_opacity: float = 0.95  # initial opacity of every Gaussian
    dynamic_threshold_m: float = 0.001  # texels moving more than this under one expression at weight 1 are dynamic
    # optimisation
    iterations: int = 200  # Adam steps of the person-specific optimisation on the photo
    render_size: int = 256  # side (px) of the head crop the optimisation renders and compares
    hair_margin: float = 0.08  # loss region = mesh silhouette dilated by this fraction of render_size
    lr_offset: float = 1e-4  # metres per step (Adam)
    lr_rotation: float = 2e-3  # quaternion units per step
    lr_log_scale: float = 1e-2  # log-metres per step
    lr_opacity: float = 5e-2  # logit units per step
    lr_color: float = 1e-2  # rgb units per step
    lr_final_fraction: float = 0.1  # learning rates decay (cosine) to this fraction of their start
    # loss weights
    w_l1: float = 0.8  # L1 photometric loss inside the loss region
    w_dssim: float = 0.2  # 1 - SSIM inside the loss region
    w_alpha: float = 0.1  # BCE of rendered alpha vs the person / silhouette mask (input view)
    w_symmetry: float = 1.0  # mean squared colour difference to the mirror texel, texels unseen in the photo
    w_offset: float = 1e6  # squared excess (metres) of offsets over their bounds (mean over texels: near-hard bound)
    w_scale: float = 1.0  # squared excess (log units) of scales outside their bounds
    w_thickness: float = 10.0  # squared excess (texel spacings) of the extent along the surface normal
    w_smooth_offset: float = 1.0  # squared differences of offsets (in texel spacings) between atlas neighbours
    w_smooth_scale: float = 0.1  # squared differences of log scales between atlas neighbours
    w_coverage: float = 0.2  # mean (1 - alpha) inside the mesh silhouette at a random novel view
    # regulariser settings
    offset_bound_m: float = 0.002  # free offset magnitude (metres) before the penalty starts
    hair_offset_bound_m: float = 0.015  # outward normal offset allowed on HAIR_REGIONS (hair volume)
    max_scale_texels: float = 3.0  # largest std-dev, in texel spacings: the penalty starts here, and bound Gaussians are
    # capped here (``scale_cap``; fitting, animate and the exported graph alike), so no splat outgrows its texel
    max_stretch: float = 3.0  # splats grow with their triangle's stretch (sqrt of its area over the fitted one), up to
    # this factor (``sega.gaussians.stretch_log_scale``; animate and the exported graph alike); 1 turns it off
    closing_lid_skin: bool = True  # the lids' texels turn to lid skin as the eyes close (``sega.avatar.lids``: without,
    # the lash line and eye corners the photo sees at the lid margins were stretched over the closed eye, a dark band)
    max_thickness_texels: float = 0.3  # largest std-dev along the surface normal (texel spacings): splats stay flat
    min_scale_m: float = 5e-5  # smallest std-dev before the penalty (metres)
    photo_cos_low: float = 0.3  # texels facing the input camera less than this (cosine) change at photo_min_step
    photo_cos_high: float = 0.7  # ... and from this cosine on, at the full learning rates
    photo_min_step: float = 0.15  # step (fraction of the learning rates) of texels the input view sees at grazing angles
    coverage_every: int = 3  # render one novel view for the coverage loss every this many steps
    coverage_size: int = 64  # side (px) of the novel-view coverage renders
    # learned branches (sega.nets.decoders), fitted jointly with the maps
    decoders: bool = True  # give the avatar a dynamic (per-frame) and a static (baked) decoder
    dynamic_map_resolution: int = 32  # side of the dynamic decoder's residual map (its feature map is a quarter of it):
    # 32 keeps the exported per-frame graph within 2 ms native / 4 ms in onnxruntime-web at 18k dynamic texels;
    # 64 has twice the spatial detail for expression-dependent appearance at ~1.3x (native) / 1.45x (web) the time
    lr_decoder: float = 1e-3  # Adam learning rate of the decoders' parameters (feature maps and conv weights)
    w_residual: float = 1e-2  # mean squared raw decoder output (unit-scale channels), dynamic at the fitted + random expressions, static
    residual_expressions: int = 2  # random expressions (the VAE's training distribution) per residual-regulariser step
    residual_every: int = 4  # evaluate the dynamic decoder at random expressions every this many steps
    hair_volume: bool = True  # add static Gaussians filling the photo's hair beyond the head mesh (sega.avatar.build.hair)
    # misc
    preset_name: str = DEFAULT_PRESET  # the preset these options started from (informational; the fields are what count)
    seed: int = 0  # seeds torch and the novel-view sampler (CPU builds are deterministic)
    fit_preset: str = "default"  # sega.fit.FitOptions preset used for the head fit
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # rgb behind the avatar (optimisation and renders)
    device: str = DEFAULT_DEVICE  # where the build's torch work runs: "auto" (CUDA when torch sees it), "cpu" or "cuda";
    # a built avatar's options hold the resolved name (``sega.devices.resolve_device``)

    @classmethod
    def preset(cls, name: str, **overrides) -> AvatarOptions:
        """Named presets: fast (tests, previews), default, high (slower, sharper)."""
        if name == "fast":
            base = cls(preset_name="fast", atlas_resolution=128, iterations=120, render_size=192, fit_preset="fast", coverage_size=48)
        elif name == "default":
            base = cls(preset_name="default")
        elif name == "high":
            base = cls(preset_name="high", atlas_resolution=320, iterations=600, render_size=320, fit_preset="high", coverage_size=96,
                       dynamic_map_resolution=64)  # fmt: skip
        else:
            raise ValueError(f"unknown preset {name!r} ({', '.join(PRESET_NAMES)})")
        return replace(base, **overrides)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["background"] = list(self.background)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AvatarOptions:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "background" in kw:
            kw["background"] = tuple(float(c) for c in kw["background"])
        return cls(**kw)
