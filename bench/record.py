"""One JSON record per bench run: the figures, the machine, the date and the command that made them.

``write_record("bench_build", figures)`` writes ``bench/results/bench_build.json`` (or ``--json PATH``):

    {"bench": ..., "date": ISO-8601 UTC, "command": "python -m bench.bench_build ...",
     "machine": {"cpu", "cores", "load_1min", "python", "torch", "gpu"}, "figures": {...}}

``docs/figures.md`` is generated from these files (``scripts/make_figures.py``), so a figure is written once.
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


def machine() -> dict:
    """What the figures were measured on."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_1min": round(load_average(), 2),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


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
              "command": command(), "machine": machine(), "figures": figures}  # fmt: skip
    path.write_text(json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8")
    return path
