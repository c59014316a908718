"""SEGA: one photo -> drivable 3D Gaussian head avatar."""

__version__ = "0.1.0"
