"""SEGA: one photo -> drivable 3D Gaussian head avatar."""

import os as _os

# torch's OpenMP threads spin-wait by default; on a small shared machine (2 cores) that makes small
# ops 40-100x slower whenever another process is busy. Passive waiting costs nothing measurable
# here. Only a default: a value the user set wins, and it must be set before torch is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
