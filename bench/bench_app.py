"""Build time through the Gradio app, as a user of the API sees it (issue 6 targets in brackets).

Starts ``python app.py`` on 127.0.0.1 (a free port) in a child process, then through ``gradio_client``
uploads the astronaut photo (``skimage.data.astronaut()``) and times ``/build`` from the call to the
returned files (upload, queue, build, previews, turntable, bundle export, download of the outputs) for
each preset [fast <= 30 s, default <= 60 s on 2 cores]. The first build of a fresh server also pays
the one-time loads (torch, mediapipe graphs, the head model, numba kernels): it is reported separately
as a warm-up (fast preset) and not counted. The server's own per-stage seconds come from the status text.

Run: ``.venv/bin/python bench/bench_app.py [--presets fast default] [--repeat 1]`` from the repository root.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine_info import cpu_name, load_average  # bench/ is on sys.path when run as a script

TARGETS_S = {"fast": 30.0, "default": 60.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["fast", "default"], choices=["fast", "default", "high"])
    ap.add_argument("--repeat", type=int, default=1, help="timed builds per preset (median reported)")
    args = ap.parse_args()

    from gradio_client import Client, handle_file
    from PIL import Image
    from skimage import data

    from sega.testing import AppProcess

    tmp = Path(tempfile.mkdtemp(prefix="sega-bench-app-"))
    photo = tmp / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores (load {load_average():.1f}), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    t0 = time.perf_counter()
    with AppProcess(args=["--work-dir", str(tmp / "work")], log_path=tmp / "app.log") as proc:
        print(f"app answered after {time.perf_counter() - t0:.1f} s at {proc.url}")
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
