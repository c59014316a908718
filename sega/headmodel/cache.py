"""Cache directory and the compact on-disk format of a converted ``HeadModel``.

A cache file is an ``.npz`` (no pickles: ``allow_pickle=False``) holding the arrays of a
``HeadModel`` plus a JSON metadata string. Bases are stored as float16 to stay small.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..errors import HeadModelError
from .base import HeadModel, LandmarkEmbedding

CACHE_FORMAT_VERSION = 1
CACHE_ENV = "SEGA_CACHE_DIR"  # overrides the cache root


def cache_dir() -> Path:
    """Root of SEGA's cache: $SEGA_CACHE_DIR, else $XDG_CACHE_HOME/sega, else ~/.cache/sega."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sega"


_ARRAY_FIELDS = ("vertices", "faces", "face_uvs", "face_regions", "identity_basis", "expression_basis", "symmetry", "pivot")


def save_headmodel(model: HeadModel, path: Path) -> Path:
    """Write ``model`` to ``path`` (.npz) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(model, k) for k in _ARRAY_FIELDS}
    arrays["identity_basis"] = arrays["identity_basis"].astype(np.float16)
    arrays["expression_basis"] = arrays["expression_basis"].astype(np.float16)
    for name, emb in model.landmarks.items():
        arrays[f"lmk__{name}__face_ids"] = emb.face_ids
        arrays[f"lmk__{name}__barycentrics"] = emb.barycentrics
        if emb.valid is not None:
            arrays[f"lmk__{name}__valid"] = emb.valid
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "class": type(model).__name__,
        "name": model.name,
        "region_names": list(model.region_names),
        "expression_names": list(model.expression_names),
        "expression_range": list(model.expression_range),
        "licence": model.licence,
        "source": model.source,
    }
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_headmodel_arrays(path: Path) -> tuple[dict, dict]:
    """Read a cache file -> (arrays, meta). Raises HeadModelError on a bad or old file."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays.pop("meta_json")).decode("utf-8"))
    except Exception as err:  # corrupt file: caller rebuilds
        raise HeadModelError(f"head-model cache {path} is unreadable ({err}); delete it to rebuild") from err
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise HeadModelError(f"head-model cache {path} has format {meta.get('format_version')}, expected {CACHE_FORMAT_VERSION}")
    return arrays, meta


def headmodel_kwargs(arrays: dict, meta: dict) -> dict:
    """Constructor keyword arguments for ``HeadModel`` (or a subclass) from a cache file's contents."""
    landmarks: dict[str, LandmarkEmbedding] = {}
    for key in arrays:
        if key.startswith("lmk__") and key.endswith("__face_ids"):
            name = key[len("lmk__") : -len("__face_ids")]
            landmarks[name] = LandmarkEmbedding(
                arrays[key].astype(np.int64),
                arrays[f"lmk__{name}__barycentrics"].astype(np.float32),
                arrays.get(f"lmk__{name}__valid"),
            )
    kw = {k: arrays[k] for k in _ARRAY_FIELDS}
    kw.update(
        name=meta["name"],
        region_names=tuple(meta["region_names"]),
        expression_names=tuple(meta["expression_names"]),
        expression_range=tuple(meta["expression_range"]),
        licence=meta["licence"],
        source=meta["source"],
        landmarks=landmarks,
    )
    known = {f.name for f in fields(HeadModel)}
    return {k: v for k, v in kw.items() if k in known}
