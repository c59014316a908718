"""A small synthetic model in FLAME's file format, for tests (real FLAME is never shipped).

The mesh is an ellipsoidal "head" (latitude/longitude grid) plus two icosahedral eyeballs,
mirror-symmetric in x (+X = subject's left). Five joints as in FLAME (root, neck, jaw, left
eye, right eye); lower-front head vertices are skinned to the jaw, eyeballs to the eye joints.
The pickle mimics a real FLAME file: protocol 2, ``J_regressor`` a ``scipy.sparse.csc_matrix``,
``shapedirs`` a ``chumpy.ch.Ch`` object and ``J`` a chumpy expression (no stored value). A fake
``chumpy`` package is registered in ``sys.modules`` only while pickling, so the file refers to
``chumpy.ch.Ch`` without chumpy being installed.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse

NUM_SHAPE = 300
NUM_EXPRESSION = 100
NUM_JOINTS = 5
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)
HEAD_RADII = (0.08, 0.11, 0.095)  # metres, x/y/z semi-axes
NUM_RINGS = 9  # latitude rings between the poles
NUM_SEGMENTS = 16  # longitude segments (even -> x-symmetric)
EYE_CENTRE = (0.032, 0.025, 0.075)  # left eye (+X); right eye is mirrored
EYE_RADIUS = 0.012
BASIS_SCALE = 1e-3  # metres per unit coefficient
KINTREE_NO_PARENT = 4294967295  # what real FLAME files store as the root's parent (uint32 -1)
LEGACY_MODULE_NAMES = {  # Python-2 era FLAME files spell these paths the old way
    b"cnumpy._core.multiarray\n": b"cnumpy.core.multiarray\n",
    b"cscipy.sparse._csc\n": b"cscipy.sparse.csc\n",
}


def _ellipsoid() -> tuple[np.ndarray, np.ndarray]:
    """Head surface: vertices [V,3], faces [F,3] counter-clockwise seen from outside."""
    top, bottom = np.array([[0.0, 1.0, 0.0]]), np.array([[0.0, -1.0, 0.0]])
    theta = np.linspace(0, np.pi, NUM_RINGS + 2)[1:-1]  # polar angle from +Y
    phi = 2 * np.pi * np.arange(NUM_SEGMENTS) / NUM_SEGMENTS  # azimuth from +Z towards +X
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    verts = np.concatenate([top, ring, bottom]) * np.array(HEAD_RADII)
    idx = lambda r, s: 1 + r * NUM_SEGMENTS + s % NUM_SEGMENTS  # noqa: E731
    faces = []
    last = 1 + NUM_RINGS * NUM_SEGMENTS
    for s in range(NUM_SEGMENTS):
        faces.append((0, idx(0, s + 1), idx(0, s)))
        for r in range(NUM_RINGS - 1):
            a, b, c, d = idx(r, s), idx(r, s + 1), idx(r + 1, s), idx(r + 1, s + 1)
            faces += [(a, d, c), (a, b, d)]
        faces.append((last, idx(NUM_RINGS - 1, s), idx(NUM_RINGS - 1, s + 1)))
    return verts, np.array(faces, dtype=np.int64)


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """Unit icosahedron (x-symmetric vertex set) and its 20 outward faces."""
    g = (1 + 5**0.5) / 2
    v = np.array(
        [[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0], [0, -1, g], [0, 1, g],
         [0, -1, -g], [0, 1, -g], [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )  # fmt: skip
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def make_synthetic_flame(seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of a small FLAME-format model (plain numpy; ``J_regressor`` dense [5,V])."""
    rng = np.random.default_rng(seed)
    head_v, head_f = _ellipsoid()
    ico_v, ico_f = _icosahedron()
    eye_c = np.array(EYE_CENTRE)
    left_v = eye_c + EYE_RADIUS * ico_v
    right_v = eye_c * np.array([-1.0, 1.0, 1.0]) + EYE_RADIUS * ico_v
    n_head, n_eye = len(head_v), len(ico_v)
    v = np.concatenate([head_v, left_v, right_v])
    f = np.concatenate([head_f, ico_f + n_head, ico_f + n_head + n_eye])
    V = len(v)
    head = np.arange(n_head)
    left = np.arange(n_head, n_head + n_eye)
    right = np.arange(n_head + n_eye, V)

    jaw = head[(v[head, 1] < -0.02) & (v[head, 2] > 0.01)]  # lower front of the head
    neck_ring = head[np.abs(v[head, 1] - v[head, 1].min()) < 0.03]  # bottom of the head
    j_reg = np.zeros((NUM_JOINTS, V))
    j_reg[0, neck_ring] = 1.0 / len(neck_ring)  # root
    j_reg[1, neck_ring] = 1.0 / len(neck_ring)  # neck
    j_reg[1] = 0.5 * j_reg[1] + 0.5 / n_head * np.isin(np.arange(V), head)  # neck: between bottom and centre
    j_reg[2, jaw] = 1.0 / len(jaw)  # jaw
    j_reg[3, left] = 1.0 / n_eye  # left eye
    j_reg[4, right] = 1.0 / n_eye  # right eye

    weights = np.zeros((V, NUM_JOINTS))
    weights[head, 1] = 1.0
    weights[jaw, 1] = 0.0
    weights[jaw, 2] = 1.0
    weights[left, 3] = 1.0
    weights[right, 4] = 1.0

    return {
        "v_template": v,
        "f": f.astype(np.uint32),
        "shapedirs": rng.normal(scale=BASIS_SCALE, size=(V, 3, NUM_SHAPE + NUM_EXPRESSION)),
        "posedirs": rng.normal(scale=BASIS_SCALE, size=(V, 3, NUM_POSE_FEATURES)),
        "J_regressor": j_reg,
        "kintree_table": np.array([[KINTREE_NO_PARENT, 0, 1, 1, 1], np.arange(NUM_JOINTS)], dtype=np.int64),
        "weights": weights,
        "jaw_vertices": jaw,  # not part of the file: for tests
    }


@contextmanager
def fake_chumpy():
    """Register a minimal ``chumpy`` package (``chumpy.ch.Ch``, ``chumpy.ch_ops.add``) while inside."""
    names = ("chumpy", "chumpy.ch", "chumpy.ch_ops")
    saved = {n: sys.modules.get(n) for n in names}
    pkg, ch_mod, ops_mod = (types.ModuleType(n) for n in names)

    def getstate(self):  # chumpy drops its caches when pickling; keep the rest of __dict__
        return dict(self.__dict__)

    ch_cls = type("Ch", (), {"__module__": "chumpy.ch", "__qualname__": "Ch", "__getstate__": getstate})
    add_cls = type("add", (ch_cls,), {"__module__": "chumpy.ch_ops", "__qualname__": "add"})
    ch_mod.Ch, ops_mod.add = ch_cls, add_cls
    pkg.ch, pkg.ch_ops = ch_mod, ops_mod
    sys.modules.update(zip(names, (pkg, ch_mod, ops_mod)))
    try:
        yield ch_cls, add_cls
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


def write_flame_pickle(path: Path, arrays: dict, protocol: int = 2, legacy_names: bool = True, chumpy: bool = True) -> Path:
    """Write ``arrays`` as a FLAME-style pickle (see module docstring); returns ``path``.

    legacy_names: rewrite module paths to their Python-2 era spelling (``numpy.core``,
    ``scipy.sparse.csc``) as in real FLAME files. Keys absent from ``arrays`` are omitted.
    """
    data = {k: val for k, val in arrays.items() if k != "jaw_vertices"}
    if "J_regressor" in data and data["J_regressor"].ndim == 2:
        data["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
    data["bs_style"] = "lbs"
    data["bs_type"] = "lrotmin"
    with fake_chumpy() as (ch_cls, add_cls):
        if chumpy and "shapedirs" in data:
            obj = ch_cls()
            obj.__dict__.update(x=data["shapedirs"], _dirty_vars=set(), terms=[], dterms=["x"])
            data["shapedirs"] = obj
        if chumpy:
            expr = add_cls()  # an expression node: no stored value, only operands
            expr.__dict__.update(a=np.zeros(3), b=np.ones(3), _dirty_vars=set())
            data["J"] = expr
        blob = pickle.dumps(data, protocol=protocol)
    if legacy_names:
        for new, old in LEGACY_MODULE_NAMES.items():
            blob = blob.replace(new, old)
    Path(path).write_bytes(blob)
    return Path(path)


def corner_uvs(arrays: dict) -> np.ndarray:
    """Distinct per-corner UVs [F,3,2] (spherical projection plus a per-face offset)."""
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    u = 0.5 + np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi)
    w = 0.5 + 0.5 * v[:, 1] / np.abs(v[:, 1]).max()
    uv = np.stack([u, w], -1)[f]  # [F, 3, 2]
    return (uv * 0.9 + 1e-4 * np.arange(len(f))[:, None, None]).astype(np.float32)


def write_uv_obj(path: Path, arrays: dict, rotate_corners: bool = True) -> np.ndarray:
    """Write a ``head_template_mesh.obj`` (v, vt per corner, f v/vt); returns expected [F,3,2] UVs.

    rotate_corners: start face i at corner (i mod 3), as an exporter may, to test the matching.
    """
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    uvs = corner_uvs(arrays)
    lines = [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in v]
    lines += [f"vt {a:.8f} {b:.8f}" for a, b in uvs.reshape(-1, 2)]
    for i, tri in enumerate(f):
        order = np.roll(np.arange(3), -(i % 3)) if rotate_corners else np.arange(3)
        lines.append("f " + " ".join(f"{tri[k] + 1}/{3 * i + k + 1}" for k in order))
    Path(path).write_text("\n".join(lines) + "\n")
    return uvs


def write_uv_npz(path: Path, arrays: dict) -> np.ndarray:
    """Write a ``FLAME_texture.npz`` (vt [3F,2], ft [F,3]); returns expected [F,3,2] UVs."""
    uvs = corner_uvs(arrays)
    F = uvs.shape[0]
    np.savez(path, vt=uvs.reshape(-1, 2).astype(np.float64), ft=np.arange(3 * F).reshape(F, 3))
    return uvs


class _RunsCommand:
    """Unpickling this calls ``os.system(command)`` (what a malicious model file would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evals:
    """Unpickling this calls ``eval(source)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


def write_malicious_pickle(path: Path, marker: Path, via: str = "os.system") -> Path:
    """A FLAME-looking pickle whose ``f`` entry runs code creating ``marker`` when unpickled."""
    if via == "os.system":
        payload = _RunsCommand(f"touch '{marker}'")
    elif via == "eval":
        payload = _Evals(f"open({str(marker)!r}, 'w').close()")
    else:
        raise ValueError(via)
    data = {"v_template": np.zeros((3, 3)), "f": payload}
    Path(path).write_bytes(pickle.dumps(data, protocol=2))
    return Path(path)
