"""Avatar-building figures on the astronaut photo (``skimage.data.astronaut()``).

Why these figures (issue targets in brackets): a build must be quick on a laptop-class CPU
[<= 60 s at the default preset on 2 cores], reproduce the photo at the input view [PSNR >= 30 dB,
SSIM >= 0.93 inside the face mask], leave no holes when the head is turned [alpha >= 0.99 inside
the mesh silhouette at yaw 0/45/90/135/180] and animate in real time [<= 20 ms per frame].

For each preset (fast, default) this prints:
* build wall time (detection, fit, segmentation, initialisation, optimisation, precompute; the
  numba kernels are loaded once before timing);
* input-view PSNR / SSIM inside the face mask (face-oval polygon of the detected landmarks on the
  person mask) against the photo's head crop composited on the avatar background, at the crop the
  optimisation used (render_size px);
* mean alpha inside the head-mesh silhouette at five yaws (orbit cameras, 256 px);
* ``Avatar.animate`` time: median over 50 random expressions (weights uniform in [0, 1]), without
  and with a random head pose; it includes the dynamic branch (expression encoder + dynamic decoder,
  ``sega.nets.decoders``), whose own median time is printed too, with the displacement VAE the
  encoder came from (trained checkpoint or the untrained stand-in).

With ``--device cuda`` (or "auto" on a GPU machine) the builds and renders run there (MediaPipe stays on
the CPU); the face detector is made before the timed builds (models loaded), and CUDA is synchronised
before each clock read. ``--photos`` adds photos (e.g. dev portraits) built at each preset, under
``photos`` in the record.

Run: ``python -m bench.bench_build [--presets fast default] [--device auto] [--photos P ...]`` from the
repository root; writes ``bench/results/bench_build.json`` (``bench.record``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch / numba load libgomp

import numpy as np
import torch

from bench.record import machine_line, write_record
from sega.avatar import AvatarOptions, build_avatar
from sega.headmodel.ict import load_ict
from sega.landmarks import with_mediapipe_embedding
from sega.meshraster import render_mesh
from sega.metrics import psnr, ssim_map
from sega.presets import DEFAULT_PRESET, PRESET_NAMES, QUICK_PRESET
from sega.render import render

COVERAGE_YAWS = (0, 45, 90, 135, 180)  # degrees
COVERAGE_SIZE = 256  # px
ANIMATE_FRAMES = 50
POSE_STD_RAD = 0.2  # random head rotation (axis-angle components) for the posed animate timing
POSE_STD_M = 0.01  # random head translation (metres)


TARGETS = {"build_s": "<= 60", "input_view_psnr_db": ">= 30", "input_view_ssim": ">= 0.93",
           "alpha_in_silhouette_min": ">= 0.99", "animate_ms": "<= 20", "animate_with_head_pose_ms": "<= 20"}  # fmt: skip


def warm_up(device: str) -> None:
    """Load the numba kernels (disk cache or JIT) and, on CUDA, the context and gsplat's extension,
    outside the timed region."""
    n = 64
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.0, 1.0])
    params = [means, torch.randn(n, 4, generator=g), torch.full((n, 3), 0.01), torch.full((n,), 0.5), torch.rand(n, 3, generator=g)]
    k = torch.tensor([[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]])
    for dev in dict.fromkeys(("cpu", device)):
        leaves = [p.to(dev).requires_grad_(True) for p in params]
        out = render(*leaves, k.to(dev), torch.eye(4, device=dev), 64, 64, backend="auto")
        out.rgb.sum().backward()
    _sync(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_preset(name: str, photo: np.ndarray, model, device: str = "cpu", detector=None) -> dict:
    """Build at preset ``name`` on ``device``, print its figures and return them (``figures[name]`` of the record)."""
    _sync(device)
    t0 = time.perf_counter()
    avatar, data = build_avatar(photo, model, replace(AvatarOptions.preset(name), device=device), detector=detector)
    _sync(device)
    total = time.perf_counter() - t0
    stages = ", ".join(f"{k} {v:.1f}" for k, v in data.seconds.items())
    print(f"[{name}] build {total:.1f} s ({stages}); {avatar.num_gaussians} Gaussians, "
          f"{int(avatar.static_mask.sum())} static; atlas {avatar.options.atlas_resolution}, "
          f"{avatar.options.iterations} iterations at {avatar.options.render_size} px")
    fig = {"build_s": round(total, 1), "stage_s": {k: round(v, 1) for k, v in data.seconds.items()},
           "gaussians": int(avatar.num_gaussians), "static_gaussians": int(avatar.static_mask.sum()),
           "dynamic_gaussians": int((~avatar.static_mask).sum()), "atlas_resolution_texels": avatar.options.atlas_resolution,
           "iterations": avatar.options.iterations, "render_size_px": avatar.options.render_size}  # fmt: skip

    rgb = avatar.render().rgb.cpu().numpy()
    m = data.person_mask[..., None]
    target = data.target * m + np.asarray(avatar.options.background, np.float32) * (1 - m)
    mask = data.face_mask
    ssim = float(ssim_map(torch.as_tensor(rgb), torch.as_tensor(target))[torch.as_tensor(mask)].mean())
    value = psnr(rgb, target, mask)
    print(f"[{name}] input view ({avatar.options.render_size} px crop, {int(mask.sum())} face-mask px): "
          f"PSNR {value:.2f} dB (target >= 30), SSIM {ssim:.4f} (target >= 0.93)")
    fig.update(input_view_psnr_db=round(value, 2), input_view_ssim=round(ssim, 4), face_mask_px=int(mask.sum()))

    verts = avatar.vertices().cpu().numpy()
    cover = {}
    for yaw in COVERAGE_YAWS:
        cam = avatar.orbit_camera(yaw, size=COVERAGE_SIZE)
        sil = render_mesh(verts, avatar.atlas.faces, cam).mask
        alpha = avatar.render(camera=cam).alpha.cpu().numpy()[..., 0]
        cover[f"yaw_{yaw}_deg"] = round(float(alpha[sil].mean()), 4)
    print(f"[{name}] alpha inside the head silhouette (target >= 0.99): " + ", ".join(f"{yaw}: {a:.4f}" for yaw, a in zip(COVERAGE_YAWS, cover.values())))
    fig.update(alpha_in_silhouette=cover, alpha_in_silhouette_min=min(cover.values()))

    rng = np.random.default_rng(0)
    for posed in (False, True):
        times = []
        for _ in range(ANIMATE_FRAMES):
            expr = rng.uniform(0.0, 1.0, model.num_expressions).astype(np.float32)
            pose = (rng.normal(0, POSE_STD_RAD, 3), rng.normal(0, POSE_STD_M, 3)) if posed else None
            _sync(device)
            t0 = time.perf_counter()
            avatar.animate(expr, pose)
            _sync(device)
            times.append(time.perf_counter() - t0)
        label = "with head pose" if posed else "no head pose"
        print(f"[{name}] animate ({label}): median {1000 * statistics.median(times):.1f} ms over {ANIMATE_FRAMES} random "
              f"expressions (target <= 20 ms), {int((~avatar.static_mask).sum())} dynamic Gaussians")
        fig["animate_with_head_pose_ms" if posed else "animate_ms"] = round(1000 * statistics.median(times), 1)
    if avatar.decoders is not None:
        times = []
        for _ in range(ANIMATE_FRAMES):
            expr = torch.as_tensor(rng.uniform(0.0, 1.0, model.num_expressions), dtype=torch.float32, device=avatar.device)
            _sync(device)
            t0 = time.perf_counter()
            avatar.dynamic_residual_maps(expr)
            _sync(device)
            times.append(time.perf_counter() - t0)
        vae = avatar.decoders.vae_provenance
        src = f"checkpoint {vae['checkpoint']} sha256 {vae['checkpoint_sha256'][:12]}" if vae.get("trained") else "UNTRAINED stand-in (no checkpoint)"
        cfg = avatar.decoders.dynamic.config
        print(f"[{name}] dynamic branch (in animate): median {1000 * statistics.median(times):.1f} ms "
              f"(expression encoder + decoder {cfg.channels} at {cfg.map_resolution} px); displacement VAE: {src}")
        fig.update(dynamic_branch_ms=round(1000 * statistics.median(times), 1), dynamic_map_resolution_px=cfg.map_resolution,
                   displacement_vae=src)  # fmt: skip
    fig["targets"] = {k: v for k, v in TARGETS.items() if k != "build_s" or name == "default"}
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=[QUICK_PRESET, DEFAULT_PRESET], choices=PRESET_NAMES)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when torch sees it)")
    ap.add_argument("--photos", nargs="*", type=Path, default=[], help="more photos to build at each preset (figures under 'photos')")
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_build.json)")
    args = ap.parse_args()
    from skimage import data

    from sega.devices import resolve_device
    from sega.face import FaceDetector
    from sega.io import load_photo

    device = resolve_device(args.device)
    gpu = f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""
    print(f"# {' '.join([sys.executable, *sys.argv])}")
    print(f"# {machine_line()}, torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}{gpu}")
    model = with_mediapipe_embedding(load_ict())
    t0 = time.perf_counter()
    warm_up(device)
    print(f"warm-up (numba kernels{', CUDA, gsplat' if gpu else ''}) {time.perf_counter() - t0:.1f} s (not counted)")
    photo = data.astronaut()
    with FaceDetector() as detector:
        figures = {name: bench_preset(name, photo, model, device, detector) for name in args.presets}
        if args.photos:
            figures["photos"] = {p.name: {name: bench_preset(name, load_photo(p), model, device, detector) for name in args.presets}
                                 for p in args.photos}  # fmt: skip
    figures["device"] = device + gpu
    print(f"wrote {write_record('bench_build', figures, args.json)}")


if __name__ == "__main__":
    main()
