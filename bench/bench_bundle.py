"""Bundle figures for an avatar (default: the astronaut at the default preset).

Prints, in one run on one machine:
* export time and bundle size (zip and unzipped, per file) [goal: <= 25 MB];
* per-frame step through onnxruntime CPU, both graphs (displacement_vae + dynamic_decoder), median
  over random expressions, with 1 intra-op thread and with onnxruntime's default [goal: <= 2 ms];
* beside it, in the same run: the same graphs run in torch (``export.graphs`` modules), and the
  avatar's own per-frame path ``Avatar.animate`` (dynamic part + binding, canonical pose);
* ONNX vs torch agreement on the random expressions (max abs difference per output);
* with ``--profile``: onnxruntime's own profile of ``dynamic_decoder.onnx`` on 1 thread (all
  optimisations), milliseconds per frame by operator type and for the slowest nodes.

Run: ``.venv/bin/python bench/bench_bundle.py [--avatar out/avatar.npz] [--frames 200] [--profile]`` from the
repository root. Without ``--avatar`` it builds the astronaut avatar first (about a minute).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import cpu_name, load_average  # noqa: E402

from export.bundle import write_bundle  # noqa: E402
from export.graphs import DynamicBranchGraph, ExpressionFeatureGraph  # noqa: E402
from export.playback import load_bundle  # noqa: E402
from sega.headmodel import load_head_model  # noqa: E402


def median_ms(fn, inputs) -> float:
    for x in inputs[:5]:
        fn(x)
    times = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def profile_graph(path: Path, feeds: list[dict], top: int = 15) -> None:
    """Per-frame milliseconds by operator type and for the ``top`` slowest nodes (onnxruntime profiler, 1 thread)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        for f in feeds:
            sess.run(None, {k: v for k, v in f.items() if k in names})
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sum(1 for e in events if e.get("name") == "model_run")
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"][: -len("_kernel_time")]] += e["dur"]
    total = sum(e["dur"] for e in events if e.get("name") == "model_run") / runs / 1e3
    print(f"onnxruntime profile of {path.name}, 1 thread, {runs} runs: {total:.2f} ms per run (profiling adds overhead)")
    for op, us in by_op.most_common():
        if us / runs >= 5:
            print(f"  {op:28s} {us / runs / 1e3:6.3f} ms")
    print(f"  slowest {top} nodes:")
    for node, us in by_node.most_common(top):
        print(f"    {node:60s} {us / runs / 1e3:6.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--avatar", type=Path, help="avatar.npz (default: build the astronaut, default preset)")
    ap.add_argument("--preset", default="default", help="preset when building (default: default)")
    ap.add_argument("--frames", type=int, default=200, help="random expressions to time")
    ap.add_argument("--profile", action="store_true", help="also print onnxruntime's per-node profile of the dynamic decoder")
    args = ap.parse_args()
    from sega.avatar import Avatar, AvatarOptions

    model = load_head_model("ict")
    if args.avatar:
        avatar = Avatar.load(args.avatar, model)
    else:
        from skimage import data

        from sega.landmarks import with_mediapipe_embedding

        model = with_mediapipe_embedding(model)
        t = time.perf_counter()
        avatar = Avatar.build(data.astronaut(), model, AvatarOptions.preset(args.preset))
        print(f"built the astronaut avatar ({args.preset}) in {time.perf_counter() - t:.1f} s")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load {load_average():.2f}; torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"avatar: {avatar.num_gaussians} Gaussians, {int(avatar.dynamic_mask.sum())} dynamic, preset {avatar.options.preset_name}")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = write_bundle(avatar, Path(tmp) / "bundle.zip")
        export_s = time.perf_counter() - t
        print(f"export: {export_s:.1f} s; zip {summary.size_bytes / 1e6:.2f} MB, unzipped {sum(summary.files.values()) / 1e6:.2f} MB")
        for name, size in summary.files.items():
            if not name.startswith("clips/"):
                print(f"  {name:24s} {size / 1e6:6.2f} MB")
        print(f"  clips/*.json             {sum(v for k, v in summary.files.items() if k.startswith('clips/')) / 1e6:6.2f} MB")

        rng = np.random.default_rng(0)
        num_e = avatar.head_model.num_expressions
        exprs = [(rng.random(num_e) * (rng.random(num_e) < 0.5)).astype(np.float32) for _ in range(args.frames)]
        pose = np.array([0.1, 0.2, 0.0, 0.0, 0.01, 0.0], np.float32)

        results = {}
        for threads in (1, None):
            with load_bundle(summary.path, threads=threads) as b:
                results[f"onnxruntime, {threads or 'default'} thread(s)"] = median_ms(lambda e, b=b: b.frame(e, pose), exprs)
                if threads is None:
                    onnx_out = [b.frame(e, pose) for e in exprs[:20]]  # splat-major ([D, C]) whatever the layout
                    layouts = {n: spec.get("layout") for n, spec in b.manifest["frame"]["outputs"].items()}
        feature, dynamic = ExpressionFeatureGraph(avatar.decoders.encoder).eval(), DynamicBranchGraph(avatar).eval()
        tpose = torch.from_numpy(pose)[None]

        def torch_graphs(e):
            x = torch.from_numpy(e)[None]
            return dynamic(x, feature(x), tpose)

        with torch.no_grad():
            results[f"torch, same graphs, {torch.get_num_threads()} threads"] = median_ms(torch_graphs, exprs)
            results[f"torch, Avatar.animate, {torch.get_num_threads()} threads"] = median_ms(avatar.animate, exprs)
            worst = 0.0
            for e, out in zip(exprs[:20], onnx_out):
                ref = torch_graphs(e)
                for name, r in zip(("dynamic_means", "dynamic_quats", "dynamic_scales", "dynamic_colors", "dynamic_opacities", "head_matrix"), ref):
                    r = r.numpy().T if layouts.get(name) == "component_major" else r.numpy()  # the graph's own [C, D]
                    worst = max(worst, float(np.abs(out[name] - r).max()))
        print(f"per-frame step, median over {args.frames} random expressions (goal <= 2 ms for onnxruntime):")
        for k, v in results.items():
            print(f"  {k:40s} {v:7.2f} ms")
        print(f"ONNX vs torch graphs, 20 expressions: max abs difference {worst:.2e}")
        if args.profile:
            folder = Path(tmp) / "unzipped"
            with zipfile.ZipFile(summary.path) as z:
                z.extract("dynamic_decoder.onnx", folder)
            with torch.no_grad():
                feeds = [{"expression": e[None], "expression_feature": feature(torch.from_numpy(e)[None]).numpy(), "head_pose": pose[None]} for e in exprs]
            profile_graph(folder / "dynamic_decoder.onnx", feeds)


if __name__ == "__main__":
    main()
