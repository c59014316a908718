"""Gaussian splats -> the standard 3DGS PLY file (and back).

Why this format: the binary PLY written by the INRIA 3D Gaussian Splatting code is the de facto
interchange format for splats; every splat viewer and editor (INRIA's SIBR viewer, Spark,
SuperSplat, antimatter15/splat converters, Blender add-ons) reads it. We write exactly that layout
so a static avatar opens anywhere, with nothing SEGA-specific required to view it.

Layout (``binary_little_endian 1.0``, one ``vertex`` element, every property float32 unless an
extra says otherwise), properties in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

* ``x y z``: Gaussian centre, metres.
* ``nx ny nz``: always 0 (3DGS writes them but never uses them).
* ``f_dc_*``: spherical-harmonics degree-0 coefficient, ``f_dc = (rgb - 0.5) / SH_C0``. There are
  no ``f_rest_*`` properties (SH degree 0): viewers treat that as view-independent colour.
* ``opacity``: logit of the opacity in (0, 1).
* ``scale_*``: natural log of the three standard deviations (metres).
* ``rot_*``: unit quaternion **wxyz** (``rot_0`` = w), as 3DGS stores it.

Extra per-Gaussian data (e.g. the triangle and barycentrics that bind a Gaussian to the head mesh,
which a drivable viewer needs) is appended as **additional vertex properties after the standard
ones**, each named with the ``sega_`` prefix (``sega_tri``, ``sega_b0``, ...). We chose extra PLY
properties over a side file because the binding then cannot get separated from, or out of order
with, the Gaussians it describes, and because PLY readers look properties up by name: viewers that
do not know them skip them (the standard ones keep their positions, so even readers that assume the
INRIA offsets still work). The cost is a few bytes per Gaussian in static viewers.

Coordinate convention: the file holds SEGA world coordinates **unchanged** (``sega.conventions``:
metres, right-handed, +X subject's left, +Y up, +Z out of the face). Many captured 3DGS scenes are
in an OpenCV-style y-down world, and some viewers (INRIA SIBR, Spark's defaults) are set up for
that; in such a viewer our head appears upside down until the viewer's camera (or a 180-degree
rotation about X) is chosen accordingly. We do not bake that flip into the data: the viewer chooses
the camera. The convention is also written as ``comment`` lines in the PLY header.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from sega.conventions import SH_C0
from sega.errors import SegaError

PLY_ELEMENT = "vertex"
POSITION_PROPERTIES = ("x", "y", "z")
NORMAL_PROPERTIES = ("nx", "ny", "nz")
COLOR_PROPERTIES = ("f_dc_0", "f_dc_1", "f_dc_2")
OPACITY_PROPERTY = "opacity"
SCALE_PROPERTIES = ("scale_0", "scale_1", "scale_2")
ROTATION_PROPERTIES = ("rot_0", "rot_1", "rot_2", "rot_3")  # w, x, y, z
# The INRIA 3DGS property order (SH degree 0): every file we write starts with exactly these.
STANDARD_PROPERTIES = (
    POSITION_PROPERTIES + NORMAL_PROPERTIES + COLOR_PROPERTIES + (OPACITY_PROPERTY,) + SCALE_PROPERTIES + ROTATION_PROPERTIES
)
# Properties a file must have for ``read_splat_ply`` (normals are optional on read).
REQUIRED_PROPERTIES = POSITION_PROPERTIES + COLOR_PROPERTIES + (OPACITY_PROPERTY,) + SCALE_PROPERTIES + ROTATION_PROPERTIES
EXTRA_PREFIX = "sega_"  # every extra property we write is named sega_<something>
EXTRA_NAME_PATTERN = re.compile(r"^sega_[A-Za-z0-9_]+$")
OPACITY_EPS = 1e-6  # opacities are clamped into [eps, 1 - eps] before the logit (0 and 1 map to finite values)
QUAT_NORM_EPS = 1e-12  # quaternions with a smaller norm are rejected
# numpy dtypes PLY can store, for extra properties (int64/bool are converted, see _extra_column).
PLY_DTYPES = tuple(np.dtype(t) for t in ("i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"))
HEADER_COMMENTS = (
    "SEGA Gaussian head avatar (3DGS INRIA layout, SH degree 0)",
    "units metres; right-handed; +X subject's left, +Y up, +Z out of the face (not OpenCV y-down)",
    "rot_0..3 = quaternion wxyz; scale = log(std dev); opacity = logit; f_dc = (rgb - 0.5) / SH_C0",
    "extra per-vertex properties named sega_* follow the standard ones",
)


class SplatPlyError(SegaError, ValueError):
    """A splat PLY could not be written from the given arrays, or a file is not a valid splat PLY."""


def _float_array(name: str, value, shape_tail: tuple[int, ...], n: int | None) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor (any device, possibly requiring grad)
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail or (n is not None and arr.shape[0] != n):
        want = ", ".join(["N" if n is None else str(n), *map(str, shape_tail)])
        raise SplatPlyError(f"{name} must have shape [{want}], got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise SplatPlyError(f"{name} contains NaN or infinite values")
    return arr


def _extra_column(name: str, value, n: int) -> np.ndarray:
    """One extra property -> a 1-D array of a PLY-storable dtype."""
    if not EXTRA_NAME_PATTERN.match(name):
        raise SplatPlyError(f"extra property {name!r} must be named {EXTRA_PREFIX}<letters, digits, _>")
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise SplatPlyError(f"extra property {name!r} must have shape [{n}], got {list(arr.shape)}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        info = np.iinfo(np.int32 if arr.dtype.kind == "i" else np.uint32)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise SplatPlyError(f"extra property {name!r} does not fit in 32-bit integers")
        arr = arr.astype(np.int32 if arr.dtype.kind == "i" else np.uint32)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    if arr.dtype.newbyteorder("=") not in PLY_DTYPES:
        raise SplatPlyError(f"extra property {name!r} has dtype {arr.dtype}, which PLY cannot store")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise SplatPlyError(f"extra property {name!r} contains NaN or infinite values")
    return arr


def write_splat_ply(
    path: str | Path,
    means,
    quats,
    scales,
    opacities,
    colors,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write Gaussians as a binary little-endian 3DGS PLY (layout in the module docstring).

    path: output file (parent folders are created)
    Arrays may be numpy arrays or torch tensors (detached and copied to the CPU here).
    means: [N, 3] centres, metres, SEGA world coordinates
    quats: [N, 4] rotations, wxyz (normalised here; need not be unit)
    scales: [N, 3] standard deviations, metres (> 0; stored as log)
    opacities: [N] in [0, 1] (clamped into [OPACITY_EPS, 1 - OPACITY_EPS], stored as logit)
    colors: [N, 3] rgb, about [0, 1] (not clamped; stored as ``f_dc = (rgb - 0.5) / SH_C0``)
    extra: optional {name: [N]} per-Gaussian values appended after the standard properties;
        names must match ``sega_<letters, digits, _>``; dtype kept (int64 -> int32, bool -> uint8)
    returns: the path written. Raises ``SplatPlyError`` on bad shapes or values.
    """
    means = _float_array("means", means, (3,), None)
    n = means.shape[0]
    quats = _float_array("quats", quats, (4,), n)
    scales = _float_array("scales", scales, (3,), n)
    opacities = _float_array("opacities", opacities, (), n)
    colors = _float_array("colors", colors, (3,), n)
    if (scales <= 0).any():
        raise SplatPlyError("scales must be positive (linear standard deviations in metres)")
    if ((opacities < 0) | (opacities > 1)).any():
        raise SplatPlyError("opacities must lie in [0, 1]")
    qnorm = np.linalg.norm(quats, axis=1, keepdims=True)
    if (qnorm < QUAT_NORM_EPS).any():
        raise SplatPlyError("quats contains zero-length quaternions")
    extra = dict(extra or {})
    clash = set(extra) & set(STANDARD_PROPERTIES)
    if clash:
        raise SplatPlyError(f"extra properties may not reuse standard names: {sorted(clash)}")
    extra_cols = {name: _extra_column(name, value, n) for name, value in extra.items()}

    op = np.clip(opacities, OPACITY_EPS, 1.0 - OPACITY_EPS)
    standard = np.concatenate(
        [
            means,
            np.zeros((n, 3)),
            (colors - 0.5) / SH_C0,
            np.log(op / (1.0 - op))[:, None],
            np.log(scales),
            quats / qnorm,
        ],
        axis=1,
    ).astype("<f4")
    dtype = [(p, "<f4") for p in STANDARD_PROPERTIES] + [(k, v.dtype.str) for k, v in extra_cols.items()]
    data = np.empty(n, dtype=dtype)
    for i, p in enumerate(STANDARD_PROPERTIES):
        data[p] = standard[:, i]
    for k, v in extra_cols.items():
        data[k] = v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    element = PlyElement.describe(data, PLY_ELEMENT)
    PlyData([element], text=False, byte_order="<", comments=list(HEADER_COMMENTS)).write(str(path))
    return path


def read_splat_ply(path: str | Path) -> dict:
    """Read a 3DGS PLY (ours or any INRIA-layout file) -> activated Gaussians.

    returns: {
        "means": [N, 3] float32 metres,
        "quats": [N, 4] float32 unit wxyz,
        "scales": [N, 3] float32 linear standard deviations (exp of the stored log),
        "opacities": [N] float32 in (0, 1) (sigmoid of the stored logit),
        "colors": [N, 3] float32 rgb (``0.5 + SH_C0 * f_dc``),
        "extra": {name: [N]} every other property except normals, in file order, dtype as stored
            (our ``sega_*`` ones, or e.g. ``f_rest_*`` of a higher-degree file),
        "comments": [str] header comments,
    }
    Raises ``SplatPlyError`` when the file is not a PLY, has no ``vertex`` element, lacks a
    required property or holds non-finite values; ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splat PLY not found: {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as err:  # plyfile raises several types (PlyHeaderParseError, ValueError, ...)
        raise SplatPlyError(f"{path} is not a readable PLY file: {err}") from err
    names = [e.name for e in ply.elements]
    if PLY_ELEMENT not in names:
        raise SplatPlyError(f"{path} has no '{PLY_ELEMENT}' element (elements: {names})")
    try:
        data = ply[PLY_ELEMENT].data
    except Exception as err:
        raise SplatPlyError(f"{path}: cannot read the '{PLY_ELEMENT}' element: {err}") from err
    props = data.dtype.names or ()
    missing = [p for p in REQUIRED_PROPERTIES if p not in props]
    if missing:
        raise SplatPlyError(f"{path} is not a 3DGS splat PLY: missing vertex properties {missing}")

    def cols(names_: tuple[str, ...]) -> np.ndarray:
        arr = np.stack([np.asarray(data[p], dtype=np.float64) for p in names_], axis=1)
        if not np.isfinite(arr).all():
            raise SplatPlyError(f"{path}: properties {list(names_)} contain NaN or infinite values")
        return arr

    quats = cols(ROTATION_PROPERTIES)
    qnorm = np.linalg.norm(quats, axis=1, keepdims=True)
    if (qnorm < QUAT_NORM_EPS).any():
        raise SplatPlyError(f"{path}: rot_0..rot_3 contain zero-length quaternions")
    skip = set(REQUIRED_PROPERTIES) | set(NORMAL_PROPERTIES)
    return {
        "means": cols(POSITION_PROPERTIES).astype(np.float32),
        "quats": (quats / qnorm).astype(np.float32),
        "scales": np.exp(cols(SCALE_PROPERTIES)).astype(np.float32),
        "opacities": (1.0 / (1.0 + np.exp(-cols((OPACITY_PROPERTY,))[:, 0]))).astype(np.float32),
        "colors": (0.5 + SH_C0 * cols(COLOR_PROPERTIES)).astype(np.float32),
        "extra": {p: np.array(data[p]) for p in props if p not in skip},
        "comments": list(ply.comments),
    }
