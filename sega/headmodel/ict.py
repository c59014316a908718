"""ICT-FaceKit (MIT) head model: reader for the upstream ``FaceXModel`` folder, conversion to the cache.

The neutral mesh gives topology, UVs and material groups; every other OBJ contributes only its
``v`` lines (full positions; we store deltas to the neutral). Units are converted from
centimetres to metres. Helper meshes (lacrimal fluid, eye blend, eye occlusion) are dropped and
the remaining vertices re-indexed; ``source["vertex_ids"]`` maps back to upstream vertex ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..conventions import ICT_CM_TO_M
from ..errors import HeadModelError
from .base import HeadModel, LandmarkEmbedding
from .cache import cache_dir, headmodel_kwargs, load_headmodel_arrays, save_headmodel
from .eyes import add_eye_rotation

ICT_ENV = "SEGA_ICT_DIR"  # folder holding the upstream FaceXModel files
ICT_NUM_VERTICES = 26719  # upstream vertex count of every OBJ
ICT_NUM_IDENTITY_SHAPES = 100  # identity000.obj .. identity099.obj
ICT_DEFAULT_IDENTITY = 50  # identity components used by default
ICT_NEUTRAL_OBJ = "generic_neutral_mesh.obj"
ICT_INDICES_JSON = "vertex_indices.json"
# Centre of head rotation (cm, ICT template): upper neck, near the top of the spine.
ICT_PIVOT_CM = (0.0, -5.0, 0.0)
# Upstream material group -> our region name. Groups not listed are helper meshes and dropped.
ICT_REGIONS: dict[str, str] = {
    "M_Face": "face",
    "M_BackHead": "head_neck",
    "M_GumsTongue": "mouth_interior",
    "M_Teeth": "teeth",
    "M_ScleraLeft": "eyeball_left",
    "M_IrisLeft": "eyeball_left",
    "M_ScleraRight": "eyeball_right",
    "M_IrisRight": "eyeball_right",
    "M_EyeLashes": "eyelashes",
}
ICT_REGION_NAMES = ("face", "head_neck", "mouth_interior", "teeth", "eyeball_left", "eyeball_right", "eyelashes")
ICT_CONVERTER_VERSION = 2  # bump when the conversion changes so old caches are rebuilt (2: eyeballs turn with eyeLook*)

ICT_LICENCE = (
    "Head model: ICT-FaceKit, Copyright (c) 2020 USC Institute for Creative Technologies, "
    "MIT licence (https://github.com/ICT-VGL/ICT-FaceKit)."
)


def read_obj_vertices(path: Path) -> np.ndarray:
    """``v`` lines of an OBJ -> [N, 3] float64 in the file's units."""
    try:
        with open(path, "rb") as fh:
            lines = [ln[2:] for ln in fh.read().split(b"\n") if ln.startswith(b"v ")]
        arr = np.array(b" ".join(lines).split(), dtype=np.float64)
    except (OSError, ValueError) as err:
        raise HeadModelError(f"cannot read vertices from {path}: {err}") from err
    if arr.size % 3:
        raise HeadModelError(f"{path}: vertex lines do not hold 3 numbers each")
    return arr.reshape(-1, 3)


def read_neutral_obj(path: Path) -> dict:
    """Neutral mesh -> vertices [V,3] (cm), uvs [T,2], polygons (vertex ids, uv ids, material)."""
    verts, uvs, polys = [], [], []
    material = None
    with open(path, "r", encoding="utf-8") as fh:
        for ln in fh:
            if ln.startswith("v "):
                verts.append(ln.split()[1:4])
            elif ln.startswith("vt "):
                uvs.append(ln.split()[1:3])
            elif ln.startswith("usemtl"):
                material = ln.split()[1]
            elif ln.startswith("f "):
                corners = [c.split("/") for c in ln.split()[1:]]
                polys.append(([int(c[0]) - 1 for c in corners], [int(c[1]) - 1 for c in corners], material))
    return {"vertices": np.array(verts, dtype=np.float64), "uvs": np.array(uvs, dtype=np.float64), "polygons": polys}


def triangulate(polys: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Fan-split polygons -> (faces [F,3] vertex ids, face_uv_ids [F,3], materials [F])."""
    faces, fuv, mats = [], [], []
    for vids, tids, mat in polys:
        for k in range(1, len(vids) - 1):
            faces.append((vids[0], vids[k], vids[k + 1]))
            fuv.append((tids[0], tids[k], tids[k + 1]))
            mats.append(mat)
    return np.array(faces, dtype=np.int64), np.array(fuv, dtype=np.int64), mats


def mirror_map(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left<->right partner of each vertex (nearest vertex to (-x, y, z)) and its distance [V]."""
    tree = cKDTree(vertices)
    dist, idx = tree.query(vertices * np.array([-1.0, 1.0, 1.0]))
    return idx.astype(np.int64), dist


def vertex_landmarks(vertex_ids: np.ndarray, faces: np.ndarray) -> LandmarkEmbedding:
    """Embedding that puts each landmark exactly on a vertex (one-hot barycentrics)."""
    fids, bary = [], []
    for vid in vertex_ids:
        rows, cols = np.nonzero(faces == vid)
        if rows.size == 0:
            raise HeadModelError(f"landmark vertex {vid} is not used by any kept face")
        b = np.zeros(3, dtype=np.float32)
        b[cols[0]] = 1.0
        fids.append(rows[0])
        bary.append(b)
    return LandmarkEmbedding(np.array(fids, dtype=np.int64), np.stack(bary))


def convert_ict(source_dir: Path, num_identity: int = ICT_DEFAULT_IDENTITY, progress=None) -> HeadModel:
    """Read the upstream FaceXModel folder -> HeadModel (metres, helper meshes dropped).

    progress: optional callable(done, total, name) for a progress bar.
    """
    source_dir = Path(source_dir)
    if not (source_dir / ICT_NEUTRAL_OBJ).is_file() or not (source_dir / ICT_INDICES_JSON).is_file():
        raise HeadModelError(
            f"{source_dir} is not an ICT-FaceKit FaceXModel folder (needs {ICT_NEUTRAL_OBJ} and {ICT_INDICES_JSON})"
        )
    if not 1 <= num_identity <= ICT_NUM_IDENTITY_SHAPES:
        raise HeadModelError(f"num_identity must be in 1..{ICT_NUM_IDENTITY_SHAPES}, got {num_identity}")
    indices = json.loads((source_dir / ICT_INDICES_JSON).read_text())
    expression_names = tuple(indices["expressions"])
    neutral = read_neutral_obj(source_dir / ICT_NEUTRAL_OBJ)
    if neutral["vertices"].shape[0] != ICT_NUM_VERTICES:
        raise HeadModelError(f"{ICT_NEUTRAL_OBJ} has {neutral['vertices'].shape[0]} vertices, expected {ICT_NUM_VERTICES}")
    faces_all, fuv_all, mats = triangulate(neutral["polygons"])
    keep = np.array([m in ICT_REGIONS for m in mats])
    faces_src = faces_all[keep]
    regions = np.array([ICT_REGION_NAMES.index(ICT_REGIONS[m]) for m, k in zip(mats, keep) if k], dtype=np.int16)
    vertex_ids = np.unique(faces_src)  # upstream ids of kept vertices
    remap = -np.ones(ICT_NUM_VERTICES, dtype=np.int64)
    remap[vertex_ids] = np.arange(vertex_ids.size)
    faces = remap[faces_src]
    face_uvs = neutral["uvs"][fuv_all[keep]].astype(np.float32)

    base = neutral["vertices"]
    names = [f"identity{i:03d}" for i in range(num_identity)] + list(expression_names)
    deltas = []
    for k, name in enumerate(names):
        if progress:
            progress(k, len(names), name)
        path = source_dir / f"{name}.obj"
        if not path.is_file():
            raise HeadModelError(f"ICT-FaceKit file missing: {path}")
        v = read_obj_vertices(path)
        if v.shape[0] != ICT_NUM_VERTICES:
            raise HeadModelError(f"{path} has {v.shape[0]} vertices, expected {ICT_NUM_VERTICES}")
        deltas.append(((v - base)[vertex_ids] * ICT_CM_TO_M).astype(np.float32))
    if progress:
        progress(len(names), len(names), "done")
    deltas = np.stack(deltas)

    vertices = (base[vertex_ids] * ICT_CM_TO_M).astype(np.float32)
    # ICT's eyeLook* shapes leave the eyeballs still: turn them (sega.headmodel.eyes).
    eyes = {side: np.isin(np.arange(vertices.shape[0]), faces[regions == ICT_REGION_NAMES.index(f"eyeball_{side}")])
            for side in ("left", "right")}  # fmt: skip
    deltas[num_identity:] = add_eye_rotation(vertices, eyes, deltas[num_identity:], expression_names)
    symmetry, _ = mirror_map(vertices.astype(np.float64))
    landmarks = {"ibug68": vertex_landmarks(remap[np.array(indices["idx_to_landmark_verts"])], faces)}
    return HeadModel(
        name="ict",
        vertices=vertices,
        faces=faces,
        face_uvs=face_uvs,
        face_regions=regions,
        region_names=ICT_REGION_NAMES,
        identity_basis=deltas[:num_identity],
        expression_basis=deltas[num_identity:],
        expression_names=expression_names,
        symmetry=symmetry,
        pivot=(np.array(ICT_PIVOT_CM) * ICT_CM_TO_M).astype(np.float32),
        landmarks=landmarks,
        expression_range=(0.0, 1.0),
        licence=ICT_LICENCE,
        source={
            "model": "ICT-FaceKit",
            "num_identity": num_identity,
            "converter_version": ICT_CONVERTER_VERSION,
            "vertex_ids": vertex_ids.tolist(),
            "dropped_groups": sorted({m for m in mats if m not in ICT_REGIONS}),
        },
    )


def find_ict_source(source_dir: str | Path | None = None) -> Path | None:
    """The FaceXModel folder: the argument, else $SEGA_ICT_DIR, else the download cache (if complete)."""
    if source_dir is not None:
        return Path(source_dir).expanduser()
    env = os.environ.get(ICT_ENV)
    if env:
        return Path(env).expanduser()
    downloaded = cache_dir() / "ict-facekit" / "FaceXModel"
    if (downloaded / ICT_NEUTRAL_OBJ).is_file():
        return downloaded
    return None


def _cache_key(source_dir: Path, num_identity: int) -> str:
    """Key from the neutral mesh's and indices' bytes (cheap) + options."""
    h = hashlib.sha256()
    for name in (ICT_NEUTRAL_OBJ, ICT_INDICES_JSON):
        st = (source_dir / name).stat()
        h.update(f"{name}:{st.st_size}".encode())
    h.update((source_dir / ICT_INDICES_JSON).read_bytes())
    h.update(f"id={num_identity};conv={ICT_CONVERTER_VERSION}".encode())
    return h.hexdigest()[:16]


def load_ict(
    source_dir: str | Path | None = None,
    num_identity: int = ICT_DEFAULT_IDENTITY,
    cache: bool = True,
    download: bool = False,
    progress=None,
) -> HeadModel:
    """Load ICT-FaceKit, converting once into the cache.

    source_dir: the upstream ``FaceXModel`` folder; default $SEGA_ICT_DIR, then a previous download.
    download: when no folder is found, fetch the needed files from upstream into the cache
        (``sega.headmodel.download``). Off by default so nothing downloads unasked.
    """
    src = find_ict_source(source_dir)
    if src is None:
        if not download:
            raise HeadModelError(
                "ICT-FaceKit data not found. Set SEGA_ICT_DIR to an ICT-FaceKit 'FaceXModel' folder, "
                "pass --ict-dir, or run `python -m sega headmodel download` (needs internet)."
            )
        from .download import download_ict

        src = download_ict(num_identity=num_identity)
    if not src.is_dir():
        raise HeadModelError(f"ICT-FaceKit folder {src} does not exist")
    if not cache:
        return convert_ict(src, num_identity, progress)
    path = cache_dir() / "headmodels" / f"ict-{_cache_key(src, num_identity)}.npz"
    if path.is_file():
        try:
            arrays, meta = load_headmodel_arrays(path)
            return HeadModel(**headmodel_kwargs(arrays, meta))
        except HeadModelError:
            path.unlink(missing_ok=True)  # corrupt or old: rebuild below
    save_headmodel(convert_ict(src, num_identity, progress), path)
    # Read back what was stored (float16 bases) so a first and a later load give the same model:
    # otherwise results (fits, avatars) would differ between the converting run and every other.
    arrays, meta = load_headmodel_arrays(path)
    return HeadModel(**headmodel_kwargs(arrays, meta))
