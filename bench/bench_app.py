"""Build time through the Gradio app, as a user of the API sees it (issue 6 targets in brackets).

Starts ``python app.py`` on 127.0.0.1 (a free port) in a child process, then through ``gradio_client``
uploads the astronaut photo (``skimage.data.astronaut()``) and times ``/build`` from the call to the
returned files (upload, queue, build, previews, turntable, bundle export, download of the outputs) for
each preset [fast <= 30 s, default <= 60 s on 2 cores]. The first build of a fresh server also pays
the one-time loads (torch, mediapipe graphs, the head model, numba kernels): it is reported separately
as a warm-up (fast preset) and not counted. The server's own per-stage seconds come from the status text.

Run: ``python -m bench.bench_app [--presets fast default] [--repeat 1]`` from the repository root;
writes ``bench/results/bench_app.json`` (``bench.record``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio_client is imported

from bench.record import machine_line, write_record
from sega.presets import DEFAULT_PRESET, PRESET_NAMES, QUICK_PRESET

TARGETS_S = {"fast": 30.0, "default": 60.0}
STATUS_TIMES = re.compile(r"in ([0-9.]+) s \((.*)\)")  # the app's status: "... in 12.3 s (detect 0.4, fit 1.2, ...)"


def server_seconds(status: str) -> dict:
    """The server's own total and per-stage seconds from the app's status line ({} if not found)."""
    m = STATUS_TIMES.search(status)
    if m is None:
        return {}
    stages = {}
    for part in m.group(2).split(", "):
        name, _, secs = part.rpartition(" ")
        try:
            stages[name] = float(secs)
        except ValueError:
            continue
    return {"server_build_s": float(m.group(1)), "server_stage_s": stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=[QUICK_PRESET, DEFAULT_PRESET], choices=PRESET_NAMES)
    ap.add_argument("--repeat", type=int, default=1, help="timed builds per preset (median reported)")
    ap.add_argument("--json", type=Path, default=None, help="record path (default bench/results/bench_app.json)")
    args = ap.parse_args()

    from gradio_client import Client, handle_file
    from PIL import Image
    from skimage import data

    from sega.testing import AppProcess

    tmp = Path(tempfile.mkdtemp(prefix="sega-bench-app-"))
    photo = tmp / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    print(f"machine: {machine_line()}")
    t0 = time.perf_counter()
    figures = {}
    with AppProcess(args=["--work-dir", str(tmp / "work")], log_path=tmp / "app.log") as proc:
        startup = time.perf_counter() - t0
        print(f"app answered after {startup:.1f} s at {proc.url}")
        figures["app_start_s"] = round(startup, 1)
        client = Client(proc.url, verbose=False)

        def build(preset: str) -> tuple[float, str]:
            t = time.perf_counter()
            out = client.predict(handle_file(str(photo)), preset, "ict", api_name="/build")
            secs = time.perf_counter() - t
            assert Path(out[3]).name == "bundle.zip", out[3]
            status = re.sub(r"\*\*", "", out[6].split("\n")[0])
            return secs, status

        secs, status = build("fast")
        print(f"warm-up (first build of a fresh server, fast): {secs:.1f} s  [{status}]")
        figures["warm_up_fast_build_s"] = round(secs, 1)
        failed = False
        for preset in args.presets:
            times = []
            for _ in range(args.repeat):
                secs, status = build(preset)
                times.append(secs)
                print(f"  {preset}: {secs:.1f} s  [{status}]")
            med = sorted(times)[len(times) // 2]
            target = TARGETS_S.get(preset)
            verdict = "" if target is None else (" ok" if med <= target else " OVER TARGET")
            failed |= target is not None and med > target
            print(f"{preset}: build through the app {med:.1f} s (target <= {target:g} s){verdict}" if target else f"{preset}: {med:.1f} s")
            fig = {"build_through_app_s": round(med, 1), "builds_timed": len(times), **server_seconds(status)}
            if target is not None:
                fig["targets"] = {"build_through_app_s": f"<= {target:g}"}
            figures[preset] = fig
    print(f"wrote {write_record('bench_app', figures, args.json)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
