"""FLAME files: finding the model and UV files in a folder, reading and validating their arrays.

The pickles are read with ``sega.headmodel.safe_pickle`` (arrays only, no code); every problem is a
``HeadModelError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import HeadModelError
from .safe_pickle import to_numpy

FLAME_SHAPE_SPACE_DIM = 300  # shapedirs[..., :300] are identity (shape) components
FLAME_EXPRESSION_SPACE_DIM = 100  # shapedirs[..., 300:400] are expression components
FLAME_NUM_JOINTS = 5  # root (global), neck, jaw, left eye, right eye
FLAME_NECK_JOINT = 1
FLAME_POSE_FEATURES = 9 * (FLAME_NUM_JOINTS - 1)  # pose-corrective features: (R - I) of the 4 non-root joints

# Model files looked for (case-insensitively) in a folder and then its direct subfolders,
# first match wins: FLAME 2020 generic, FLAME 2023, FLAME 2023 without jaw rotation in the
# template, the gendered 2020 models, and smplx-style names.
FLAME_MODEL_NAMES = (
    "generic_model.pkl",
    "flame2023.pkl",
    "flame2023_no_jaw.pkl",
    "female_model.pkl",
    "male_model.pkl",
    "FLAME_NEUTRAL.pkl",
    "FLAME_GENERIC.pkl",
)
# Pickles that sit beside FLAME models but are not models (never picked by the fallback).
FLAME_AUX_PICKLES = ("flame_static_embedding.pkl", "flame_masks.pkl", "landmark_embedding.pkl")
# UV files looked for beside the model, in this order.
FLAME_UV_NAMES = ("head_template_mesh.obj", "head_template.obj", "FLAME_texture.npz")


# ---- finding files --------------------------------------------------------------------------
def _find_named(folder: Path, names: tuple[str, ...]) -> Path | None:
    """First of ``names`` present in ``folder`` (case-insensitive), else None."""
    try:
        present = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    except OSError:
        return None
    for name in names:
        if name.lower() in present:
            return present[name.lower()]
    return None


def find_flame_pkl(source: str | Path) -> Path:
    """The FLAME model file for ``source`` (a ``.pkl`` file or a folder).

    In a folder, ``FLAME_MODEL_NAMES`` are tried in order in the folder itself, then in each
    direct subfolder (sorted by name, e.g. ``FLAME2020/``); failing that, a folder holding
    exactly one other ``.pkl`` (not one of ``FLAME_AUX_PICKLES``) uses it.
    """
    src = Path(source).expanduser()
    if src.is_file():
        return src
    if not src.is_dir():
        raise HeadModelError(f"FLAME model {src} does not exist; pass the FLAME .pkl file or the folder holding it")
    folders = [src] + sorted((p for p in src.iterdir() if p.is_dir()), key=lambda p: p.name)
    for folder in folders:
        found = _find_named(folder, FLAME_MODEL_NAMES)
        if found is not None:
            return found
    aux = {n.lower() for n in FLAME_AUX_PICKLES}
    others = [p for p in src.glob("*.pkl") if p.is_file() and p.name.lower() not in aux]
    if len(others) == 1:
        return others[0]
    raise HeadModelError(
        f"no FLAME model found in {src}: expected one of {', '.join(FLAME_MODEL_NAMES)} "
        "(in the folder or a direct subfolder). Download FLAME from https://flame.is.tue.mpg.de "
        "(free registration, non-commercial licence) and pass the .pkl or its folder."
    )


def find_uv_file(pkl: Path, source: str | Path | None = None) -> Path:
    """A UV file (``FLAME_UV_NAMES``) beside ``pkl``, in the ``source`` folder, or one level up."""
    dirs = [pkl.parent]
    if source is not None and Path(source).is_dir():
        dirs.append(Path(source))
    dirs.append(pkl.parent.parent)
    for folder in dict.fromkeys(d.resolve() for d in dirs):
        found = _find_named(folder, FLAME_UV_NAMES)
        if found is not None:
            return found
    raise HeadModelError(
        f"no FLAME UV layout found beside {pkl}: expected {' or '.join(FLAME_UV_NAMES)} "
        "(from the FLAME downloads); pass it with uv=..."
    )


# ---- reading and validating -----------------------------------------------------------------
def _get(raw: dict, key: str, path: Path, what: str, densify: bool = True) -> np.ndarray:
    if key not in raw:
        raise HeadModelError(f"{path} is not a FLAME model: missing '{key}' ({what}); keys present: {sorted(raw)}")
    arr = to_numpy(raw[key], name=key, densify=densify)
    if arr.dtype.kind not in "biuf":
        raise HeadModelError(f"{path}: '{key}' ({what}) must be numeric, got dtype {arr.dtype}")
    return arr


def _expect_shape(arr: np.ndarray, expected: tuple, key: str, what: str, path: Path) -> None:
    """Check ``arr.shape`` against ``expected`` (None = any size) with a readable message."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        spec = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise HeadModelError(f"{path}: '{key}' ({what}) must have shape {spec}, got {list(arr.shape)}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise HeadModelError(f"{path}: '{key}' ({what}) contains NaN or infinite values")


def validate_flame_arrays(raw: dict, path: Path, num_identity: int, num_expressions: int) -> dict[str, np.ndarray]:
    """Check a loaded FLAME dict and return plain arrays.

    Returns v_template [V,3] f64 metres, f [F,3] i64, shapedirs [V,3,S] f32, posedirs [V,3,36] f32,
    J_regressor [5,V] f64 (dense), kintree_table [2,5] i64, weights [V,5] f32.
    """
    v = _get(raw, "v_template", path, "template vertices").astype(np.float64)
    _expect_shape(v, (None, 3), "v_template", "template vertices", path)
    V = v.shape[0]
    if V < 3:
        raise HeadModelError(f"{path}: 'v_template' has only {V} vertices")
    f = _get(raw, "f", path, "triangle list")
    _expect_shape(f, (None, 3), "f", "triangle list", path)
    if f.dtype.kind == "f":
        raise HeadModelError(f"{path}: 'f' (triangle list) must hold integers, got dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.shape[0] == 0:
        raise HeadModelError(f"{path}: 'f' (triangle list) is empty")
    if f.min() < 0 or f.max() >= V:
        raise HeadModelError(f"{path}: 'f' must index the {V} vertices of 'v_template' (found range {f.min()}..{f.max()})")
    shapedirs = _get(raw, "shapedirs", path, "shape + expression basis").astype(np.float32)
    _expect_shape(shapedirs, (V, 3, None), "shapedirs", "shape + expression basis", path)
    S = shapedirs.shape[2]
    if num_identity > min(S, FLAME_SHAPE_SPACE_DIM) or S < FLAME_SHAPE_SPACE_DIM + num_expressions:
        raise HeadModelError(
            f"{path}: 'shapedirs' has {S} components; FLAME stores {FLAME_SHAPE_SPACE_DIM} shape then "
            f"{FLAME_EXPRESSION_SPACE_DIM} expression components, so num_identity={num_identity} and "
            f"num_expressions={num_expressions} need at least {FLAME_SHAPE_SPACE_DIM + num_expressions}"
        )
    posedirs = _get(raw, "posedirs", path, "pose-corrective basis").astype(np.float32)
    _expect_shape(posedirs, (V, 3, FLAME_POSE_FEATURES), "posedirs", "pose-corrective basis", path)
    j_reg = _get(raw, "J_regressor", path, "joint regressor").astype(np.float64)
    _expect_shape(j_reg, (FLAME_NUM_JOINTS, V), "J_regressor", "joint regressor", path)
    kintree = _get(raw, "kintree_table", path, "joint hierarchy")
    _expect_shape(kintree, (2, FLAME_NUM_JOINTS), "kintree_table", "joint hierarchy", path)
    kintree = kintree.astype(np.int64)
    parents = kintree[0, 1:]
    if np.any(parents < 0) or np.any(parents >= np.arange(1, FLAME_NUM_JOINTS)):
        raise HeadModelError(f"{path}: 'kintree_table' parents {kintree[0].tolist()} must precede their children")
    weights = _get(raw, "weights", path, "skinning weights").astype(np.float32)
    _expect_shape(weights, (V, FLAME_NUM_JOINTS), "weights", "skinning weights", path)
    return {
        "v_template": v,
        "f": f,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": j_reg,
        "kintree_table": kintree,
        "weights": weights,
    }


def _read_obj_uvs(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OBJ -> (vt [T,2], face vertex ids [F,3], face vt ids [F,3]), 0-based; triangles only."""
    num_v = 0
    vts: list[list[str]] = []
    fv: list[list[int]] = []
    ft: list[list[int]] = []

    def index(token: str, count: int) -> int:
        i = int(token)
        return i - 1 if i > 0 else count + i  # OBJ: 1-based, negative = relative to the end

    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.startswith("v "):
                    num_v += 1
                elif line.startswith("vt "):
                    vts.append(line.split()[1:3])
                elif line.startswith("f "):
                    corners = [c.split("/") for c in line.split()[1:]]
                    if len(corners) != 3:
                        raise HeadModelError(f"{path}:{lineno}: only triangles are supported, found a {len(corners)}-gon")
                    if any(len(c) < 2 or not c[1] for c in corners):
                        raise HeadModelError(f"{path}:{lineno}: face has no texture coordinates (need 'f v/vt ...')")
                    fv.append([index(c[0], num_v) for c in corners])
                    ft.append([index(c[1], len(vts)) for c in corners])
        vt = np.array(vts, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise HeadModelError(f"cannot read UVs from {path}: {err}") from err
    if vt.ndim != 2 or vt.shape[1] != 2 or not fv:
        raise HeadModelError(f"{path} has no usable 'vt' and 'f' lines")
    return vt, np.array(fv, dtype=np.int64), np.array(ft, dtype=np.int64)


def read_uv_file(path: Path, faces: np.ndarray) -> np.ndarray:
    """Per-corner UVs [F,3,2] (float32, OBJ origin bottom-left) for FLAME's ``faces`` [F,3].

    ``.obj``: faces are matched to FLAME's by their vertex ids (any order, any cyclic corner
    rotation). ``.npz``: ``vt`` [T,2] and ``ft`` [F,3] in FLAME's face order.
    """
    path = Path(path)
    F = faces.shape[0]
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "vt" not in z.files or "ft" not in z.files:
                    raise HeadModelError(f"{path} needs arrays 'vt' and 'ft'; has {sorted(z.files)}")
                vt, ft = z["vt"].astype(np.float64), z["ft"].astype(np.int64)
        except HeadModelError:
            raise
        except Exception as err:
            raise HeadModelError(f"cannot read UVs from {path}: {err}") from err
        if vt.ndim != 2 or vt.shape[1] != 2 or ft.shape != (F, 3):
            raise HeadModelError(f"{path}: expected vt [T, 2] and ft [{F}, 3], got {list(vt.shape)} and {list(ft.shape)}")
    elif path.suffix.lower() == ".obj":
        vt, obj_fv, obj_ft = _read_obj_uvs(path)
        if obj_fv.shape == faces.shape and np.array_equal(obj_fv, faces):
            ft = obj_ft
        else:
            lookup: dict[tuple[int, int, int], np.ndarray] = {}
            for tri, tex in zip(obj_fv, obj_ft):
                for r in range(3):
                    lookup[tuple(np.roll(tri, -r).tolist())] = np.roll(tex, -r)
            missing = [i for i, tri in enumerate(faces) if tuple(tri.tolist()) not in lookup]
            if missing:
                raise HeadModelError(
                    f"{path} does not match the FLAME model's triangles ({len(missing)} of {F} not found, "
                    f"e.g. {faces[missing[0]].tolist()}); use the UV file that belongs to this FLAME version"
                )
            ft = np.stack([lookup[tuple(tri.tolist())] for tri in faces])
    else:
        raise HeadModelError(f"unsupported UV file {path}: use head_template_mesh.obj or FLAME_texture.npz")
    if ft.min() < 0 or ft.max() >= vt.shape[0]:
        raise HeadModelError(f"{path}: texture indices out of range for {vt.shape[0]} UVs")
    if not np.all(np.isfinite(vt)):
        raise HeadModelError(f"{path}: UVs contain NaN or infinite values")
    return vt[ft].astype(np.float32)
