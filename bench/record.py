"""One JSON record per bench run: the figures, the machine, the date and the command that made them.

``write_record("bench_build", figures)`` writes ``bench/results/bench_build.json`` (or ``--json PATH``):

    {"bench": ..., "date": ISO-8601 UTC, "command": "python -m bench.bench_build ...",
     "machine": {"cpu", "cores", "load_1min", "load_1min_at_start", "python", "platform", "torch", "gpu"},
     "code": {"commit": "abc1234", "dirty": true}, "figures": {...}}

Figures are plain JSON (numbers, strings, lists, nested dicts); each name says what it is and its unit
(``build_s``, ``psnr_db``, ``frame_ms``). A dict named ``targets`` inside ``figures`` (at any level)
holds the issue target of its sibling figures, by name: ``{"build_s": "<= 60"}``.

``docs/figures.md`` is generated from these files (``scripts/make_figures.py``), so a figure is written
once. The machine helpers (``cpu_name``, ``load_average``, ``machine_line``) are what the benches print.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> float:
    """1-minute load average (NaN where the OS has none): other work skews the timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


LOAD_AT_START = round(load_average(), 2)  # when the bench started (this module is imported first thing)


def machine_line() -> str:
    """One line for a bench's printed header: CPU, cores, load, OpenMP wait policy."""
    return (f"{cpu_name()}, {os.cpu_count()} cores, load {load_average():.2f} "
            f"(at start {LOAD_AT_START:.2f}), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")  # fmt: skip


def machine() -> dict:
    """What the figures were measured on."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_1min": round(load_average(), 2),
            "load_1min_at_start": LOAD_AT_START, "python": platform.python_version(),
            "platform": platform.platform()}  # fmt: skip
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def code_state() -> dict | None:
    """The checkout the figures were measured on: HEAD's short hash and whether the tree had changes
    (None outside a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def command() -> str:
    """The command line that ran this bench (``python -m bench.NAME ...`` form when run as a module)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    return " ".join([head, *sys.argv[1:]])


def write_record(name: str, figures: dict, path: str | Path | None = None) -> Path:
    """Write the record of bench ``name`` -> its path (default ``bench/results/<name>.json``)."""
    path = Path(path) if path is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"bench": name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": command(), "machine": machine(), "code": code_state(), "figures": figures}  # fmt: skip
    path.write_text(json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8")
    return path
