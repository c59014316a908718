"""What the bench scripts print about the machine they ran on (so figures can be compared)."""

from __future__ import annotations

import os
import platform


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
