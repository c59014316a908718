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

Run: ``.venv/bin/python bench/bench_build.py [--presets fast default]`` from the repository root.
``OMP_WAIT_POLICY`` defaults to PASSIVE (see bench_rasterizer.py: spinning OpenMP threads make small
torch ops much slower when another process is busy on the same cores).
"""

from __future__ import annotations


import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / numba load libgomp

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sega.avatar import AvatarOptions, build_avatar, psnr, ssim_map
from sega.headmodel.ict import load_ict
from sega.landmarks import with_mediapipe_embedding
from sega.meshraster import render_mesh
from sega.render import render
from machine_info import cpu_name, load_average  # bench/ is on sys.path when run as a script

COVERAGE_YAWS = (0, 45, 90, 135, 180)  # degrees
COVERAGE_SIZE = 256  # px
ANIMATE_FRAMES = 50
POSE_STD_RAD = 0.2  # random head rotation (axis-angle components) for the posed animate timing
POSE_STD_M = 0.01  # random head translation (metres)


def machine() -> str:
    cpu, load = cpu_name(), load_average()
    return (f"{cpu}, {os.cpu_count()} cores (load {load:.1f}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")


def warm_up() -> None:
    """Load the numba kernels (disk cache or JIT) outside the timed region."""
    n = 64
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.0, 1.0])
    params = [means.requires_grad_(True), torch.randn(n, 4, generator=g), torch.full((n, 3), 0.01), torch.full((n,), 0.5), torch.rand(n, 3, generator=g)]
    k = torch.tensor([[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]])
    out = render(*params, k, torch.eye(4), 64, 64, backend="cpu")
    out.rgb.sum().backward()


def bench_preset(name: str, photo: np.ndarray, model) -> None:
    t0 = time.perf_counter()
    avatar, data = build_avatar(photo, model, AvatarOptions.preset(name))
    total = time.perf_counter() - t0
    stages = ", ".join(f"{k} {v:.1f}" for k, v in data.seconds.items())
    print(f"[{name}] build {total:.1f} s ({stages}); {avatar.num_gaussians} Gaussians, "
          f"{int(avatar.static_mask.sum())} static; atlas {avatar.options.atlas_resolution}, "
          f"{avatar.options.iterations} iterations at {avatar.options.render_size} px")

    rgb = avatar.render().rgb.numpy()
    m = data.person_mask[..., None]
    target = data.target * m + np.asarray(avatar.options.background, np.float32) * (1 - m)
    mask = data.face_mask
    ssim = float(ssim_map(torch.as_tensor(rgb), torch.as_tensor(target))[torch.as_tensor(mask)].mean())
    print(f"[{name}] input view ({avatar.options.render_size} px crop, {int(mask.sum())} face-mask px): "
          f"PSNR {psnr(rgb, target, mask):.2f} dB (target >= 30), SSIM {ssim:.4f} (target >= 0.93)")

    verts = avatar.vertices().numpy()
    cover = []
    for yaw in COVERAGE_YAWS:
        cam = avatar.orbit_camera(yaw, size=COVERAGE_SIZE)
        sil = render_mesh(verts, avatar.atlas.faces, cam).mask
        alpha = avatar.render(camera=cam).alpha.numpy()[..., 0]
        cover.append(f"{yaw}: {alpha[sil].mean():.4f}")
    print(f"[{name}] alpha inside the head silhouette (target >= 0.99): " + ", ".join(cover))

    rng = np.random.default_rng(0)
    for posed in (False, True):
        times = []
        for _ in range(ANIMATE_FRAMES):
            expr = rng.uniform(0.0, 1.0, model.num_expressions).astype(np.float32)
            pose = (rng.normal(0, POSE_STD_RAD, 3), rng.normal(0, POSE_STD_M, 3)) if posed else None
            t0 = time.perf_counter()
            avatar.animate(expr, pose)
            times.append(time.perf_counter() - t0)
        label = "with head pose" if posed else "no head pose"
        print(f"[{name}] animate ({label}): median {1000 * statistics.median(times):.1f} ms over {ANIMATE_FRAMES} random "
              f"expressions (target <= 20 ms), {int((~avatar.static_mask).sum())} dynamic Gaussians")
    if avatar.decoders is not None:
        times = []
        for _ in range(ANIMATE_FRAMES):
            expr = torch.as_tensor(rng.uniform(0.0, 1.0, model.num_expressions), dtype=torch.float32)
            t0 = time.perf_counter()
            avatar.dynamic_residual_maps(expr)
            times.append(time.perf_counter() - t0)
        vae = avatar.decoders.vae_provenance
        src = f"checkpoint {vae['checkpoint']} sha256 {vae['checkpoint_sha256'][:12]}" if vae.get("trained") else "UNTRAINED stand-in (no checkpoint)"
        cfg = avatar.decoders.dynamic.config
        print(f"[{name}] dynamic branch (in animate): median {1000 * statistics.median(times):.1f} ms "
              f"(expression encoder + decoder {cfg.channels} at {cfg.map_resolution} px); displacement VAE: {src}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["fast", "default"], choices=["fast", "default", "high"])
    args = ap.parse_args()
    print(f"# {' '.join([sys.executable, *sys.argv])}")
    print(f"# {machine()}")
    from skimage import data

    model = with_mediapipe_embedding(load_ict())
    t0 = time.perf_counter()
    warm_up()
    print(f"numba warm-up {time.perf_counter() - t0:.1f} s (not counted)")
    photo = data.astronaut()
    for name in args.presets:
        bench_preset(name, photo, model)


if __name__ == "__main__":
    main()
