"""Benchmark of the CPU Gaussian rasteriser (``sega.render``, backend="cpu").

Why these figures: fitting an avatar means hundreds of forward+backward renders of
20-60k Gaussians at 256-512 px on a laptop-class CPU, so we measure exactly that on a
head-like scene (Gaussians on a 0.1 m sphere, 2-5 mm scales, camera 0.8 m away, 20 degree
field of view: the head fills most of the frame as in a portrait crop).

(a) 256x256, 20k Gaussians, forward+backward: numba backend vs a pure-torch
    *sparse-pairs* baseline run in the same process. The baseline enumerates the
    (Gaussian, pixel) pairs inside each Gaussian's box, computes their alphas, sorts the
    pairs by (pixel, depth), composites with a segmented cumulative product
    (log / cumsum / exp) with the same threshold and termination rules, and lets autograd
    do the backward. Both share the same torch projection. Target: ratio >= 5x.
(b) 512x512, 100k Gaussians, forward time. Target: <= 0.3 s.
(c) 512x512, 40k Gaussians, forward+backward (a typical fitting step).

Times are medians over several runs after a warm-up (numba JIT / cache load excluded).
Run: ``python -m bench.bench_rasterizer [--wait-idle SECONDS]`` from the repository root;
``--wait-idle`` waits (up to SECONDS per case) for other processes to go quiet first, as shared
machines otherwise measure the neighbours. Writes ``bench/results/bench_rasterizer.json``.

``OMP_WAIT_POLICY`` is PASSIVE unless set in the environment (``sega/__init__.py``): with the
default spin-waiting, torch's OpenMP threads make every small torch op 40-100x slower whenever
another process is busy on a 2-core machine (measured: the 100k-Gaussian projection takes
1150 ms instead of 26 ms), which would measure the neighbours rather than the renderer.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch / numba load libgomp (see docstring)

import numba
import torch

from bench.record import write_record
from sega.camera import orbit_camera
from sega.render import ALPHA_THRESHOLD, MAX_ALPHA, T_THRESHOLD, project_gaussians, render

HEAD_RADIUS = 0.1  # metres
CAMERA_DISTANCE = 0.8  # metres
FOV_DEG = 20.0


def head_scene(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """n Gaussians on a sphere surface (a head stand-in): means [n,3], quats [n,4], scales [n,3], opacities [n], colors [n,3]."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=dtype)
    means = HEAD_RADIUS * d / d.norm(dim=1, keepdim=True)
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "scales": 0.002 + 0.003 * torch.rand(n, 3, generator=g, dtype=dtype),
        "opacities": 0.1 + 0.9 * torch.rand(n, generator=g, dtype=dtype),
        "colors": torch.rand(n, 3, generator=g, dtype=dtype),
    }


def sparse_pairs_rasterize(means2d, conics, colors, opacities, depths, radii, width, height, background):
    """Pure-torch baseline: (Gaussian, pixel) pairs inside each radii box, segmented cumprod.

    means2d [M,2], conics [M,3], colors [M,D], opacities [M], depths [M], radii [M,2], background [D]
    returns (render [H,W,D], alpha [H,W,1]); autograd provides the backward.
    """
    m, n_ch = colors.shape
    dev = means2d.device
    with torch.no_grad():
        mx, my = means2d[:, 0], means2d[:, 1]
        rx, ry = radii[:, 0].to(mx), radii[:, 1].to(mx)
        x0 = torch.ceil(mx - rx - 0.5).clamp(0, width - 1).long()
        x1 = torch.floor(mx + rx - 0.5).clamp(-1, width - 1).long()
        y0 = torch.ceil(my - ry - 0.5).clamp(0, height - 1).long()
        y1 = torch.floor(my + ry - 0.5).clamp(-1, height - 1).long()
        nx = (x1 - x0 + 1).clamp_min(0)
        ny = (y1 - y0 + 1).clamp_min(0)
        counts = nx * ny
        gid = torch.repeat_interleave(torch.arange(m, device=dev), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        local = torch.arange(gid.shape[0], device=dev) - first
        px = x0[gid] + local % nx[gid]
        py = y0[gid] + local // nx[gid]
    dx = means2d[gid, 0] - (px.to(means2d) + 0.5)
    dy = means2d[gid, 1] - (py.to(means2d) + 0.5)
    c = conics[gid]
    sigma = 0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) + c[:, 1] * dx * dy
    alpha = torch.clamp_max(opacities[gid] * torch.exp(-sigma), MAX_ALPHA)
    with torch.no_grad():
        keep = torch.nonzero((sigma >= 0) & (alpha >= ALPHA_THRESHOLD)).squeeze(1)
        gid, pix = gid[keep], (py * width + px)[keep]
        rank = torch.empty(m, dtype=torch.long, device=dev)
        rank[torch.argsort(depths.detach(), stable=True)] = torch.arange(m, device=dev)
        order = torch.argsort(pix * m + rank[gid])
        gid, pix = gid[order], pix[order]
        seg_start = torch.ones_like(pix, dtype=torch.bool)
        seg_start[1:] = pix[1:] != pix[:-1]
        seg_first = torch.cummax(torch.where(seg_start, torch.arange(pix.shape[0], device=dev), 0), 0).values
    alpha = alpha[keep][order]

    def seg_cumsum(v):  # inclusive cumulative sum restarting at every pixel
        # float64: a float32 running sum over ~10M pairs loses the per-pixel differences
        v64 = v.double()
        cs = torch.cumsum(v64, 0)
        return (cs - (cs - v64)[seg_first]).to(v.dtype)

    log_t = torch.log1p(-alpha)
    with torch.no_grad():
        inside = torch.exp(seg_cumsum(log_t)) > T_THRESHOLD  # gsplat's exclusive termination
    alpha = torch.where(inside, alpha, torch.zeros_like(alpha))
    log_t = torch.log1p(-alpha)
    t_before = torch.exp(seg_cumsum(log_t) - log_t)
    w = alpha * t_before
    n_pix = width * height
    out = torch.zeros(n_pix, n_ch, dtype=colors.dtype, device=dev).index_add(0, pix, w[:, None] * colors[gid])
    t_final = torch.exp(torch.zeros(n_pix, dtype=colors.dtype, device=dev).index_add(0, pix, log_t))
    out = out + t_final[:, None] * background
    return out.reshape(height, width, n_ch), (1.0 - t_final).reshape(height, width, 1)


def render_sparse_pairs(scene, K, viewmat, width, height, background):
    """render() with the sparse-pairs rasteriser in place of the numba one (same projection)."""
    proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], K, viewmat, width, height, opacities=scene["opacities"])
    keep = torch.nonzero(proj.valid).squeeze(1)
    depths = proj.depths[keep]
    feats = torch.cat([scene["colors"][keep], depths[:, None]], 1)
    bg4 = torch.cat([background, background.new_zeros(1)])
    out, alpha = sparse_pairs_rasterize(proj.means2d[keep], proj.conics[keep], feats, scene["opacities"][keep], depths, proj.radii[keep], width, height, bg4)
    return out[..., :3], alpha, out[..., 3:4] / alpha.clamp_min(1e-10)


def busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPU time used over ``seconds`` (by other processes: we are idle
    meanwhile), from /proc/stat; None where unavailable."""
    def snapshot():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    try:
        t0, i0 = snapshot()
        time.sleep(seconds)
        t1, i1 = snapshot()
    except OSError:
        return None
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def other_load(wait_idle: float) -> tuple[str, float | None]:
    """Wait up to ``wait_idle`` seconds for the other processes to go (nearly) idle, then say how
    busy the machine was (text, fraction): the benchmark shares its cores with whatever else runs."""
    deadline = time.monotonic() + wait_idle
    busy = busy_fraction()
    while busy is not None and busy > 0.15 and time.monotonic() < deadline:
        busy = busy_fraction(5.0)
    text = "machine load n/a" if busy is None else f"{100 * busy:.0f}% of all cores busy with other work just before"
    return text, None if busy is None else round(busy, 2)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall seconds over ``repeats`` calls. The median is the figure; the min
    shows what the machine gives when nothing else is running on it."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def fmt(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:8.1f} ms (min {t[1] * 1e3:.1f})"


def ms(t: tuple[float, float], name: str) -> dict:
    """``{name}_ms`` (median) and ``{name}_min_ms`` as in ``fmt``."""
    return {f"{name}_ms": round(t[0] * 1e3, 1), f"{name}_min_ms": round(t[1] * 1e3, 1)}


def make_case(n: int, size: int):
    cam = orbit_camera(15.0, 5.0, CAMERA_DISTANCE, fov_deg=FOV_DEG, width=size, height=size)
    K, viewmat = cam.torch()
    scene = head_scene(n)
    return scene, K, viewmat


def fwd_bwd(scene, K, viewmat, size, use_baseline: bool):
    params = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
    bg = torch.full((3,), 0.5)
    weights = torch.linspace(0.0, 1.0, size * size * 3).reshape(size, size, 3)

    def step():
        for p in params.values():
            p.grad = None
        if use_baseline:
            rgb, alpha, depth = render_sparse_pairs(params, K, viewmat, size, size, bg)
        else:
            out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
                         K, viewmat, size, size, bg, backend="cpu")
            rgb, alpha, depth = out.rgb, out.alpha, out.depth
        loss = (rgb * weights).sum() + alpha.sum() + depth.sum()
        loss.backward()

    return step


def count_pairs(scene, K, viewmat, size) -> tuple[int, int]:
    """(visible Gaussians, Gaussian-pixel pairs inside the boxes) for context."""
    proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], K, viewmat, size, size, opacities=scene["opacities"])
    r = proj.radii[proj.valid].long()
    return int(proj.valid.sum()), int(((2 * r[:, 0] + 1) * (2 * r[:, 1] + 1)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="wait up to SECONDS per case for other processes to go quiet")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_rasterizer.json)")
    args = ap.parse_args()
    wait_idle = args.wait_idle
    threads = numba.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
          f"numba {numba.__version__} threads={threads} layer={numba.config.THREADING_LAYER}, torch {torch.__version__} threads={torch.get_num_threads()}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}   (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})")
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    print(f"scene: Gaussians on a {HEAD_RADIUS} m sphere, scales 2-5 mm, opacity 0.1-1, camera {CAMERA_DISTANCE} m, fov {FOV_DEG} deg")
    figures = {"numba_threads": threads, "wait_idle_s": wait_idle}

    # Warm-up (JIT compile or cache load) on a small case.
    s, K, V = make_case(2000, 64)
    fwd_bwd(s, K, V, 64, False)()

    # (a)
    size, n = 256, 20_000
    scene, K, V = make_case(n, size)
    vis, pairs = count_pairs(scene, K, V, size)
    text, busy = other_load(wait_idle)
    print(f"\n[{text}]")
    print(f"(a) {size}x{size}, {n} Gaussians ({vis} visible, {pairs / 1e6:.1f} M box pixel pairs), forward+backward")
    cpu_step = fwd_bwd(scene, K, V, size, False)
    cpu_step()
    t_cpu = timed(cpu_step, 7)
    base_step = fwd_bwd(scene, K, V, size, True)
    base_step()
    t_base = timed(base_step, 3)
    print(f"    cpu (numba) backend      : {fmt(t_cpu)}")
    print(f"    torch sparse-pairs       : {fmt(t_base)}")
    print(f"    speed-up (medians)       : {t_base[0] / t_cpu[0]:8.1f} x   (target >= 5x)")
    with torch.no_grad():
        bg = torch.full((3,), 0.5)
        ref = render_sparse_pairs(scene, K, V, size, size, bg)
        out = render(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], K, V, size, size, bg, backend="cpu")
    diff = max((a - b).abs().max().item() for a, b in zip(ref, (out.rgb, out.alpha, out.depth)))
    print(f"    max |cpu - baseline| over rgb, alpha, depth: {diff:.1e}")
    figures["a_256px_20k_fwd_bwd"] = {
        "size_px": size, "gaussians": n, "visible": vis, "box_pixel_pairs_millions": round(pairs / 1e6, 1),
        "other_load_fraction": busy, **ms(t_cpu, "numba"), **ms(t_base, "torch_sparse_pairs"),
        "speed_up": round(t_base[0] / t_cpu[0], 1), "max_abs_diff_vs_baseline": float(f"{diff:.1e}"),
        "targets": {"speed_up": ">= 5"},
    }  # fmt: skip

    # (b)
    size, n = 512, 100_000
    scene, K, V = make_case(n, size)
    vis, pairs = count_pairs(scene, K, V, size)
    text, busy = other_load(wait_idle)
    print(f"\n[{text}]")
    print(f"(b) {size}x{size}, {n} Gaussians ({vis} visible, {pairs / 1e6:.1f} M box pixel pairs), forward")

    def fwd():
        with torch.no_grad():
            render(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], K, V, size, size, backend="cpu")

    fwd()
    t_fwd = timed(fwd, 7)
    print(f"    forward (no_grad)        : {fmt(t_fwd)}   (target <= 300 ms)")
    step = fwd_bwd(scene, K, V, size, False)
    step()
    t_step = timed(step, 5)
    print(f"    forward+backward         : {fmt(t_step)}")
    figures["b_512px_100k"] = {
        "size_px": size, "gaussians": n, "visible": vis, "box_pixel_pairs_millions": round(pairs / 1e6, 1),
        "other_load_fraction": busy, **ms(t_fwd, "forward"), **ms(t_step, "forward_backward"),
        "targets": {"forward_ms": "<= 300"},
    }  # fmt: skip

    # (c)
    size, n = 512, 40_000
    scene, K, V = make_case(n, size)
    text, busy = other_load(wait_idle)
    print(f"\n[{text}]")
    print(f"(c) {size}x{size}, {n} Gaussians, forward+backward (one fitting step)")
    step = fwd_bwd(scene, K, V, size, False)
    step()
    t = timed(step, 5)
    print(f"    forward+backward         : {fmt(t)}   ({math.floor(60 / t[0])} steps per minute)")
    figures["c_512px_40k_fwd_bwd"] = {"size_px": size, "gaussians": n, "other_load_fraction": busy, **ms(t, "forward_backward"),
                                      "steps_per_minute": math.floor(60 / t[0])}  # fmt: skip
    print("\nload average after: %.2f %.2f %.2f" % os.getloadavg())
    print(f"wrote {write_record('bench_rasterizer', figures, args.json)}")


if __name__ == "__main__":
    main()
