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

Run: ``python -m bench.bench_bundle [--avatar out/avatar.npz] [--frames 200] [--profile]`` from the
repository root; writes ``bench/results/bench_bundle.json`` (``bench.record``). Without ``--avatar`` it
builds the astronaut avatar first (about a minute).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np
import torch

from bench.record import machine_line, write_record
from export.bundle import write_bundle
from export.graphs import DynamicBranchGraph, ExpressionFeatureGraph
from export.playback import load_bundle
from sega.headmodel import load_head_model

TARGETS = {"zip_mb": "<= 25", "onnxruntime_1_thread_ms": "<= 2"}


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
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_bundle.json)")
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
    print(f"machine: {machine_line()}; torch {torch.__version__}, threads {torch.get_num_threads()}")
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

        results, keys = {}, {}
        for threads in (1, None):
            with load_bundle(summary.path, threads=threads) as b:
                label = f"onnxruntime, {threads or 'default'} thread(s)"
                results[label] = median_ms(lambda e, b=b: b.frame(e, pose), exprs)
                keys[label] = f"onnxruntime_{threads or 'default'}_thread{'s' if threads != 1 else ''}_ms"
                if threads is None:
                    onnx_out = [b.frame(e, pose) for e in exprs[:20]]  # splat-major ([D, C]) whatever the layout
                    layouts = {n: spec.get("layout") for n, spec in b.manifest["frame"]["outputs"].items()}
        feature, dynamic = ExpressionFeatureGraph(avatar.decoders.encoder).eval(), DynamicBranchGraph(avatar).eval()
        tpose = torch.from_numpy(pose)[None]

        def torch_graphs(e):
            x = torch.from_numpy(e)[None]
            return dynamic(x, feature(x), tpose)

        with torch.no_grad():
            label = f"torch, same graphs, {torch.get_num_threads()} threads"
            results[label], keys[label] = median_ms(torch_graphs, exprs), "torch_same_graphs_ms"
            label = f"torch, Avatar.animate, {torch.get_num_threads()} threads"
            results[label], keys[label] = median_ms(avatar.animate, exprs), "torch_avatar_animate_ms"
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
        clips = sum(v for k, v in summary.files.items() if k.startswith("clips/"))
        figures = {
            "avatar": {"gaussians": int(avatar.num_gaussians), "dynamic_gaussians": int(avatar.dynamic_mask.sum()),
                       "preset": avatar.options.preset_name},
            "size": {"export_s": round(export_s, 1), "zip_mb": round(summary.size_bytes / 1e6, 2),
                     "unzipped_mb": round(sum(summary.files.values()) / 1e6, 2),
                     "file_mb": {**{n: round(v / 1e6, 2) for n, v in summary.files.items() if not n.startswith("clips/")},
                                 "clips/*.json": round(clips / 1e6, 2)},
                     "targets": {"zip_mb": TARGETS["zip_mb"]}},
            "per_frame": {"expressions_timed": args.frames, **{keys[k]: round(v, 2) for k, v in results.items()},
                          "torch_threads": torch.get_num_threads(),
                          "onnx_vs_torch_max_abs_diff": float(f"{worst:.2e}"),
                          "targets": {"onnxruntime_1_thread_ms": TARGETS["onnxruntime_1_thread_ms"]}},
        }  # fmt: skip
        if args.profile:
            folder = Path(tmp) / "unzipped"
            with zipfile.ZipFile(summary.path) as z:
                z.extract("dynamic_decoder.onnx", folder)
            with torch.no_grad():
                feeds = [{"expression": e[None], "expression_feature": feature(torch.from_numpy(e)[None]).numpy(), "head_pose": pose[None]} for e in exprs]
            profile_graph(folder / "dynamic_decoder.onnx", feeds)
    print(f"wrote {write_record('bench_bundle', figures, args.json)}")


if __name__ == "__main__":
    main()
