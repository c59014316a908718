"""Web viewer figures in headless chromium: ONNX time per frame and the cost of animating the avatar.

Why these figures: the viewer has to run the per-frame graphs and update the dynamic splats inside a
frame budget, on one wasm thread where SharedArrayBuffer is unavailable. This prints

* **ORT-web graph time**: all per-frame steps of the bundle (``runGraphs``: VAE + dynamic decoder for
  SEGA bundles) with onnxruntime-web's wasm backend on ``--graph-threads`` thread(s) (default 1),
  median / p10 / p90 over ``--graph-runs`` random inputs (after warm-up), in total and per step
  (graph file), for each ORT ``graphOptimizationLevel`` in ``--graph-opt`` (default ``all,disabled``;
  the viewer uses ``all``, the first level listed is the headline figure). The page's draw loop is
  paused meanwhile (software WebGL would share the CPU), and the levels take turns in
  ``--graph-rounds`` rounds on one page;
* **frame time, animated vs static**, same page size, same browser, same run: per frame the animated
  page sets the next frame of the "talk" clip, runs the graphs, writes the dynamic splats and draws
  once (Spark regenerates its splat buffer because the splats changed; its depth sort runs in a
  worker in the background, as in the live loop); the static page (``?animate=0``: no ONNX sessions)
  draws the same static.ply the same way. Each frame ends with a 1-pixel read-back so the GPU work is
  included. With a turning camera (1 degree per frame) both pages also re-sort continually, as when a
  user drags the view; with a fixed camera the static page has nothing to redo. Medians over
  ``--frames`` frames, and the animated / static ratio.

The frame loop is driven by the page's test hook (``segaViewer.benchFrames``) with the
requestAnimationFrame loop paused, so the figures are latencies, not vsync-limited rates. With
``--disable-gpu`` chromium renders WebGL with SwiftShader on the CPU: the draw figures here are
CPU-bound software rendering and say little about a GPU browser; the ONNX figures transfer.

Run: ``python -m bench.bench_web [--bundle PATH] [--frames 40] [--graph-runs 100] [--graph-opt all,disabled]``
from the repository root after ``npm ci --prefix web && npm run build --prefix web``; writes
``bench/results/bench_web.json`` (``bench.record``). Without ``--bundle`` it uses the synthetic test
bundle (``sega.testing.bundle_fixture``: 3000 splats, 600 dynamic). Quicker: fewer ``--frames`` and
``--graph-runs``, one ``--graph-opt`` level.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # Debian's chromium, never a downloaded one

from bench.record import cpu_name, load_average, write_record
from sega.testing import CHROMIUM_PATH, launch_chromium
from sega.testing.bundle_fixture import make_test_bundle
from sega.viewer_server import serve

TARGET_GRAPH_MS = 4.0  # ORT-web, both graphs, 1 wasm thread, default bundle
TARGET_FRAME_RATIO = 1.15  # animated / static frame time

GRAPH_OPT_LEVELS = ("all", "extended", "basic", "disabled")  # onnxruntime-web graphOptimizationLevel (web/src/runtime.js)


def machine() -> str:
    cpu, load = cpu_name(), load_average()
    return f"{cpu}, {os.cpu_count()} logical cores, load {load:.2f}, {platform.system()} {platform.release()}"


def pct(values, q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def summary(values) -> str:
    return f"median {statistics.median(values):7.2f} ms  (p10 {pct(values, 0.1):.2f}, p90 {pct(values, 0.9):.2f}, n={len(values)})"


def _stats(name: str, values) -> dict:
    """``{name}_median_ms``, ``_p10_ms``, ``_p90_ms`` as ``summary`` prints them."""
    return {f"{name}_median_ms": round(statistics.median(values), 2), f"{name}_p10_ms": round(pct(values, 0.1), 2),
            f"{name}_p90_ms": round(pct(values, 0.9), 2)}  # fmt: skip


GL_RENDERER_JS = """() => {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return 'no WebGL2';
  const ext = gl.getExtension('WEBGL_debug_renderer_info');
  return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="bundle folder or .zip (default: the synthetic test bundle)")
    ap.add_argument("--frames", type=int, default=40, help="frames per frame-time measurement")
    ap.add_argument("--graph-runs", type=int, default=100, help="runs for the ORT-web graph time")
    ap.add_argument("--graph-rounds", type=int, default=4, help="rounds in which the --graph-opt levels take turns (runs split evenly)")
    ap.add_argument("--graph-threads", type=int, default=1, help="onnxruntime-web wasm threads for the graph time")
    ap.add_argument("--graph-opt", default="all,disabled", help="comma-separated onnxruntime-web graphOptimizationLevel values to time (all, extended, basic, disabled)")
    ap.add_argument("--threads", type=int, default=1, help="wasm threads on the animated page during frame timing")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_web.json)")
    args = ap.parse_args(argv)
    levels = [v.strip() for v in args.graph_opt.split(",") if v.strip()]
    bad = [v for v in levels if v not in GRAPH_OPT_LEVELS]
    if not levels or bad:
        ap.error(f"--graph-opt: expected values from {', '.join(GRAPH_OPT_LEVELS)}, got {args.graph_opt!r}")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sega-bench-web-") as tmp:
        if args.bundle is None:
            bundle = make_test_bundle(Path(tmp) / "bundle")
            bundle_label = "synthetic test bundle (sega.testing.bundle_fixture)"
        else:
            bundle = args.bundle
            bundle_label = str(bundle)
        srv = serve(bundle)
        try:
            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                viewport = {"width": args.width, "height": args.height}

                def open_page(query: str):
                    page = browser.new_page(viewport=viewport, device_scale_factor=1)
                    page.set_default_timeout(300_000)
                    errors = []
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.goto(f"{srv.origin}/?bundle=/bundle/&panel=0&{query}")
                    info = page.evaluate("window.segaViewer.ready")
                    return page, info, errors

                gl_renderer = None
                error_lists = []  # one list per page, filled by its console handler until the page closes
                # 1. ONNX graph time on --graph-threads thread(s), per graphOptimizationLevel, total and per
                #    step, with the page's draw loop paused. The levels take turns in rounds on one page, so
                #    that a change in the machine's load (it may be shared) hits them alike.
                page, info, errs = open_page(f"threads={args.graph_threads}")
                error_lists.append(errs)
                gl_renderer = page.evaluate(GL_RENDERER_JS)
                threads_used = info["threads"]
                graphs = {level: {"total": [], "steps": {}} for level in levels}
                per_round = max(1, -(-args.graph_runs // args.graph_rounds))
                for r in range(args.graph_rounds):
                    for level in levels:
                        res = page.evaluate(
                            "([n, w, o]) => window.segaViewer.benchSteps(n, w, o)", [per_round, 10 if r == 0 else 2, {"graphOptimizationLevel": level}]
                        )
                        if res["graphOptimizationLevel"] != level:
                            raise SystemExit(f"the page did not time graphOptimizationLevel={level}: rebuild web/dist")
                        graphs[level]["total"] += res["total"]
                        for graph, ms in res["steps"].items():
                            graphs[level]["steps"].setdefault(graph, []).extend(ms)
                page.close()
                # 2. Frame time, animated (ONNX + splat update + draw) vs static (draw only), same size.
                frames = {}
                for orbit in (False, True):
                    for mode, query in (("animated", f"threads={args.threads}"), ("static", "animate=0")):
                        page, _, errs = open_page(query)
                        error_lists.append(errs)
                        res = page.evaluate(
                            "(o) => window.segaViewer.benchFrames(o)", {"n": args.frames, "warmup": 5, "animate": mode == "animated", "orbit": orbit}
                        )
                        frames[(mode, orbit)] = res
                        page.close()
                version = browser.version
                browser.close()
        finally:
            srv.shutdown()

    print("SEGA web viewer benchmark")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"browser: chromium {version} (headless, {CHROMIUM_PATH}), WebGL renderer: {gl_renderer}")
    print(f"bundle:  {bundle_label}: {info['splats']} splats, {info['dynamic']} dynamic, {len(info['expressions'])} expressions")
    print(f"page:    {args.width}x{args.height} px, crossOriginIsolated={info['crossOriginIsolated']}")
    plural = "s" if threads_used != 1 else ""
    for k, level in enumerate(levels):
        res = graphs[level]
        head = "ORT-web graph time per frame" if k == 0 else "  the same"
        print(f"{head} ({threads_used} wasm thread{plural}, graphOptimizationLevel={level}): {summary(res['total'])}")
        for graph, ms in res["steps"].items():
            print(f"    {graph:28s} {summary(ms)}")
    for orbit in (False, True):
        anim, stat = frames[("animated", orbit)], frames[("static", orbit)]
        label = "camera turning 1 deg/frame" if orbit else "fixed camera"
        a, s = statistics.median(anim["frameMs"]), statistics.median(stat["frameMs"])
        print(f"frame time, {label} ({args.threads} thread(s) on the animated page):")
        print(f"  animated (graphs + splat update + draw): {summary(anim['frameMs'])}")
        print(
            f"    of which ONNX {statistics.median(anim['onnxMs']):.2f} ms, splat update {statistics.median(anim['updateMs']):.2f} ms, "
            f"draw {statistics.median(anim['drawMs']):.2f} ms (medians)"
        )
        print(f"  static static.ply (draw):                {summary(stat['frameMs'])}")
        print(f"  ratio animated / static: {a / s:.2f}x")
    errors = [e for errs in error_lists for e in errs]
    if errors:
        print(f"console errors during the run: {errors[:5]}")
    figures = {
        "setup": {"bundle": "synthetic test bundle" if args.bundle is None else str(args.bundle), "splats": info["splats"],
                  "dynamic_splats": info["dynamic"], "browser": f"chromium {version} headless", "webgl_renderer": gl_renderer,
                  "page_px": f"{args.width}x{args.height}", "frames": args.frames, "graph_runs": args.graph_runs,
                  "graph_rounds": args.graph_rounds, "console_errors": len(errors)},
    }  # fmt: skip
    shorter = [f"--{n.replace('_', '-')} {getattr(args, n)} (default {ap.get_default(n)})"
               for n in ("frames", "graph_runs", "graph_rounds") if getattr(args, n) < ap.get_default(n)]  # fmt: skip
    notes = ["a shorter run than the defaults: " + ", ".join(shorter)] if shorter else []
    if "swiftshader" in str(gl_renderer).lower():
        notes.append("software WebGL (SwiftShader, no GPU): the draw and frame times say little about a GPU browser; the ONNX times transfer")
    if notes:
        figures["setup"]["notes"] = "; ".join(notes)
    for k, level in enumerate(levels):
        res = graphs[level]
        fig = {"wasm_threads": threads_used, **_stats("total", res["total"]),
               **{k2: v for graph, ms in res["steps"].items() for k2, v in _stats(Path(graph).stem, ms).items()}}  # fmt: skip
        if k == 0 and args.bundle is not None:
            fig["targets"] = {"total_median_ms": f"<= {TARGET_GRAPH_MS:g}"}
        figures[f"ort_web_graphs_{level}"] = fig
    for orbit in (False, True):
        anim, stat = frames[("animated", orbit)], frames[("static", orbit)]
        a, s = statistics.median(anim["frameMs"]), statistics.median(stat["frameMs"])
        fig = {"animated_frame_median_ms": round(a, 2), "onnx_median_ms": round(statistics.median(anim["onnxMs"]), 2),
               "splat_update_median_ms": round(statistics.median(anim["updateMs"]), 2),
               "draw_median_ms": round(statistics.median(anim["drawMs"]), 2), "static_frame_median_ms": round(s, 2),
               "animated_static_ratio": round(a / s, 2), "targets": {"animated_static_ratio": f"<= {TARGET_FRAME_RATIO:g}"}}  # fmt: skip
        figures["frame_time_camera_turning" if orbit else "frame_time_fixed_camera"] = fig
    print(f"wrote {write_record('bench_web', figures, args.json)}")
    return 0


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print(f"total bench time {time.time() - t0:.1f} s")
    raise SystemExit(rc)
