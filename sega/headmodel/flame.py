"""FLAME head model from the user's own files (SEGA never ships FLAME).

FLAME (Li et al. 2017, "Learning a model of facial shape and expression from 4D scans") is
released by the Max Planck Institute for Intelligent Systems under a non-commercial research
licence; users register at https://flame.is.tue.mpg.de, accept it, and download the model
themselves. ``load_flame`` reads those files safely (``safe_pickle``: arrays only, no code),
validates them, converts them once into SEGA's cache and returns a ``FlameHeadModel`` whose
``deform`` runs ``smplx.FLAME`` (jaw / neck / eye articulation available via ``flame_forward``).

Files
    Model: a FLAME 2020 / 2023 ``.pkl`` (or a folder holding one; see ``FLAME_MODEL_NAMES``).
    UVs: ``head_template_mesh.obj`` (``vt`` + ``f v/vt``) or ``FLAME_texture.npz`` (``vt``,
    ``ft``); when not given, searched beside the model (see ``FLAME_UV_NAMES``).

Cache layout (``cache_dir()/flame/<key>/``, key = sha256 of model + UV bytes + converter version)
    ``FLAME_GENERIC.npz``            validated arrays in the form ``smplx.FLAME(ext="npz")`` reads
    ``flame_static_embedding.pkl``   landmark embedding ``smplx.FLAME`` requires (a one-landmark
                                     placeholder: SEGA's own landmark embeddings are derived later)
    ``headmodel-i<I>-e<E>.npz``      the ``HeadModel`` arrays (``cache.save_headmodel`` format)

Conventions: FLAME is in metres, +Y up, +Z out of the face and +X towards the subject's left,
which already matches ``sega.conventions``; no conversion is applied.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import tempfile
import threading
from dataclasses import dataclass, field, replace
from math import prod
from pathlib import Path
from typing import Callable

import numpy as np
import smplx
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torch import Tensor

from ..errors import HeadModelError
from ..io import file_sha256
from .base import HeadModel, HeadModelTensors
from .cache import cache_dir, headmodel_kwargs, load_headmodel_arrays, save_headmodel
from .flame_files import (  # noqa: F401 (importable from here, as before)
    FLAME_AUX_PICKLES,
    FLAME_EXPRESSION_SPACE_DIM,
    FLAME_MODEL_NAMES,
    FLAME_NECK_JOINT,
    FLAME_NUM_JOINTS,
    FLAME_POSE_FEATURES,
    FLAME_SHAPE_SPACE_DIM,
    FLAME_UV_NAMES,
    find_flame_pkl,
    find_uv_file,
    read_uv_file,
    validate_flame_arrays,
)
from .safe_pickle import safe_load_pickle

FLAME_DEFAULT_IDENTITY = 100
FLAME_DEFAULT_EXPRESSIONS = 50
FLAME_EXPRESSION_RANGE = (-3.0, 3.0)  # coefficients are ~N(0, 1); +-3 sigma
FLAME_CONVERTER_VERSION = 1  # bump when the conversion changes so old caches are rebuilt
FLAME_SMPLX_GENDER = "generic"  # smplx.FLAME then reads FLAME_GENERIC.npz
FLAME_SMPLX_FILE = f"FLAME_{FLAME_SMPLX_GENDER.upper()}.npz"
FLAME_EMBEDDING_FILE = "flame_static_embedding.pkl"  # name smplx.FLAME requires
EXPRESSION_NAME_FORMAT = "flame_exp_{:03d}"


# Placeholder landmark embedding for smplx (it insists on one): the centroid of triangle 0.
PLACEHOLDER_LANDMARK_FACES = np.array([0], dtype=np.int64)
PLACEHOLDER_LANDMARK_BARYCENTRICS = np.full((1, 3), 1.0 / 3.0)

FLAME_LICENCE = (
    "Head model: FLAME (Li, Bolkart, Black, Li, Romero: 'Learning a model of facial shape and "
    "expression from 4D scans', SIGGRAPH Asia 2017), (c) Max Planck Institute for Intelligent "
    "Systems. Used under the FLAME licence: non-commercial scientific research only; users must "
    "register at https://flame.is.tue.mpg.de and accept the licence before downloading the model. "
    "SEGA does not ship FLAME; artefacts derived from it fall under the same terms."
)

Progress = Callable[[int, int, str], None]


# ---- the runtime half: smplx.FLAME, built lazily --------------------------------------------
class FlameRuntime:
    """Holds what ``smplx.FLAME`` needs and the modules built from it (lazily, per device/dtype).

    Either ``model_dir`` (a folder with ``FLAME_GENERIC.npz`` + ``flame_static_embedding.pkl``,
    i.e. the cache) or ``arrays`` (the same content in memory; written to a temporary folder
    only while the module is built, for ``load_flame(cache=False)``).
    """

    def __init__(
        self,
        num_identity: int,
        num_expressions: int,
        model_dir: Path | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        if (model_dir is None) == (arrays is None):
            raise ValueError("FlameRuntime needs exactly one of model_dir or arrays")
        self.num_identity = num_identity
        self.num_expressions = num_expressions
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._arrays = arrays
        self._modules: dict[tuple[str, torch.dtype], torch.nn.Module] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Pickle/deepcopy without the built modules or the lock (rebuilt lazily)."""
        state = self.__dict__.copy()
        state["_modules"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _build(self, model_dir: Path) -> torch.nn.Module:
        for name in (FLAME_SMPLX_FILE, FLAME_EMBEDDING_FILE):
            if not (model_dir / name).is_file():
                raise HeadModelError(f"FLAME cache file {model_dir / name} is missing; load the model again to rebuild it")
        module = smplx.FLAME(
            model_path=str(model_dir),
            ext="npz",
            gender=FLAME_SMPLX_GENDER,
            num_betas=self.num_identity,
            num_expression_coeffs=self.num_expressions,
            use_face_contour=False,
            batch_size=1,
            dtype=torch.float32,
            # Every input is passed to forward(); no per-module parameters.
            create_betas=False,
            create_expression=False,
            create_global_orient=False,
            create_neck_pose=False,
            create_jaw_pose=False,
            create_leye_pose=False,
            create_reye_pose=False,
            create_body_pose=False,
            create_transl=False,
        )
        return module.eval()

    def module(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The ``smplx.FLAME`` module on ``device`` with float buffers in ``dtype``."""
        key = (str(torch.device(device)), dtype)
        with self._lock:
            if key not in self._modules:
                base_key = ("cpu", torch.float32)
                if base_key not in self._modules:
                    if self.model_dir is not None:
                        self._modules[base_key] = self._build(self.model_dir)
                    else:
                        with tempfile.TemporaryDirectory(prefix="sega-flame-") as tmp:
                            write_smplx_files(Path(tmp), self._arrays)
                            self._modules[base_key] = self._build(Path(tmp))
                if key != base_key:
                    self._modules[key] = copy.deepcopy(self._modules[base_key]).to(device=device, dtype=dtype)
            return self._modules[key]


@dataclass(frozen=True)
class FlameHeadModel(HeadModel):
    """FLAME as a ``HeadModel``; deformation runs ``smplx.FLAME`` (linear blend skinning).

    The base fields hold FLAME's data in SEGA's layout: ``identity_basis`` = shapedirs[..., :I]
    and ``expression_basis`` = shapedirs[..., 300:300+E] as [I|E, V, 3] (metres per unit
    coefficient), ``pivot`` = the neck joint of the template. ``runtime`` builds the smplx module
    on first use.
    """

    runtime: FlameRuntime | None = field(default=None, repr=False, compare=False)

    def _runtime(self) -> FlameRuntime:
        if self.runtime is None:
            raise HeadModelError("this FLAME head model has no smplx runtime; load it with sega.headmodel.flame.load_flame")
        return self.runtime

    def smplx_module(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The underlying ``smplx.FLAME`` module (built on first use, cached per device/dtype)."""
        return self._runtime().module(device, dtype)

    def flame_forward(
        self,
        identity: Tensor,
        expression: Tensor,
        jaw_pose: Tensor | None = None,
        neck_pose: Tensor | None = None,
        global_orient: Tensor | None = None,
        leye_pose: Tensor | None = None,
        reye_pose: Tensor | None = None,
    ) -> Tensor:
        """FLAME forward pass (differentiable).

        identity: Tensor  # [..., I] shape coefficients (FLAME betas)
        expression: Tensor  # [..., E] expression coefficients
        jaw_pose, neck_pose, global_orient, leye_pose, reye_pose: Tensor | None  # [..., 3] axis-angle, radians; None = 0
        returns: Tensor  # [..., V, 3] metres, FLAME's frame (global_orient rotates about the root joint; no translation)
        Leading dimensions broadcast; dtype/device follow ``identity`` (float32 for integer input).
        """
        if identity.shape[-1:] != (self.num_identity,) or expression.shape[-1:] != (self.num_expressions,):
            raise ValueError(
                f"expected identity [..., {self.num_identity}] and expression [..., {self.num_expressions}], "
                f"got {tuple(identity.shape)} and {tuple(expression.shape)}"
            )
        dtype = identity.dtype if identity.is_floating_point() else torch.float32
        device = identity.device
        poses = {
            "global_orient": global_orient,
            "neck_pose": neck_pose,
            "jaw_pose": jaw_pose,
            "leye_pose": leye_pose,
            "reye_pose": reye_pose,
        }
        for name, pose in poses.items():
            if pose is not None and pose.shape[-1:] != (3,):
                raise ValueError(f"{name} must be [..., 3] axis-angle, got {tuple(pose.shape)}")
        lead = torch.broadcast_shapes(
            identity.shape[:-1], expression.shape[:-1], *(p.shape[:-1] for p in poses.values() if p is not None)
        )
        n = prod(lead)
        if n == 0:
            return torch.zeros(*lead, self.num_vertices, 3, dtype=dtype, device=device)

        def flat(t: Tensor, width: int) -> Tensor:
            return t.to(device=device, dtype=dtype).expand(*lead, width).reshape(n, width)

        kwargs = {
            name: flat(p, 3) if p is not None else torch.zeros(n, 3, dtype=dtype, device=device) for name, p in poses.items()
        }
        out = self.smplx_module(device, dtype)(
            betas=flat(identity, self.num_identity),
            expression=flat(expression, self.num_expressions),
            pose2rot=True,
            **kwargs,
        )
        return out.vertices.reshape(*lead, self.num_vertices, 3)

    def deform(self, buffers: HeadModelTensors, identity: Tensor, expression: Tensor) -> Tensor:
        """Unposed vertices via ``smplx.FLAME`` with all joint rotations zero.

        identity: Tensor  # [..., I]
        expression: Tensor  # [..., E]
        returns: Tensor  # [..., V, 3] metres, dtype/device of ``buffers.vertices``
        """
        ref = buffers.vertices
        return self.flame_forward(identity.to(ref.device, ref.dtype), expression.to(ref.device, ref.dtype))


# ---- derived data ---------------------------------------------------------------------------
def mirror_partners(vertices: np.ndarray) -> np.ndarray:
    """[V] int64: nearest vertex to each vertex mirrored in x (subject's left <-> right)."""
    _, idx = cKDTree(vertices).query(vertices * np.array([-1.0, 1.0, 1.0]))
    return idx.astype(np.int64)


def derive_regions(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Regions from connectivity -> (face_regions [F] int16, region_names).

    FLAME's eyeballs are separate mesh components. When the mesh is one large component plus
    exactly two others on opposite sides of x = 0, those become "eyeball_left" (+X, subject's
    left) and "eyeball_right"; everything else is "head". Otherwise all faces are "head".
    """
    V = vertices.shape[0]
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(V, V))
    _, labels = connected_components(graph, directed=False)
    face_comp = labels[faces[:, 0]]
    comps, counts = np.unique(face_comp, return_counts=True)
    regions = np.zeros(faces.shape[0], dtype=np.int16)
    if len(comps) != 3:
        return regions, ("head",)
    small = comps[np.argsort(counts)[:2]]
    centre_x = [vertices[np.unique(faces[face_comp == c])][:, 0].mean() for c in small]
    if np.sign(centre_x[0]) * np.sign(centre_x[1]) >= 0:
        return regions, ("head",)
    left, right = (small[0], small[1]) if centre_x[0] > 0 else (small[1], small[0])
    regions[face_comp == left] = 1
    regions[face_comp == right] = 2
    return regions, ("head", "eyeball_left", "eyeball_right")


def smplx_arrays(flame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validated arrays -> the npz content ``smplx.FLAME(ext="npz")`` reads.

    shapedirs is padded with zeros (or cut) to exactly 300 + 100 components so smplx applies
    FLAME's split (it falls back to a 10 + 10 split for fewer than 400).
    """
    total = FLAME_SHAPE_SPACE_DIM + FLAME_EXPRESSION_SPACE_DIM
    sd = flame["shapedirs"][:, :, :total]
    if sd.shape[2] < total:
        sd = np.concatenate([sd, np.zeros((*sd.shape[:2], total - sd.shape[2]), dtype=sd.dtype)], axis=2)
    return {
        "v_template": flame["v_template"].astype(np.float32),
        "f": flame["f"].astype(np.int64),
        "shapedirs": np.ascontiguousarray(sd, dtype=np.float32),
        "posedirs": flame["posedirs"].astype(np.float32),
        "J_regressor": flame["J_regressor"].astype(np.float32),
        "kintree_table": flame["kintree_table"].astype(np.int64),
        "weights": flame["weights"].astype(np.float32),
    }


def write_smplx_files(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``FLAME_GENERIC.npz`` and a placeholder ``flame_static_embedding.pkl`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (FLAME_SMPLX_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, folder / FLAME_SMPLX_FILE)
    embedding = {
        "lmk_face_idx": PLACEHOLDER_LANDMARK_FACES.copy(),
        "lmk_b_coords": PLACEHOLDER_LANDMARK_BARYCENTRICS.copy(),
    }
    tmp = folder / (FLAME_EMBEDDING_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(embedding, fh, protocol=2)  # plain numpy arrays only
    os.replace(tmp, folder / FLAME_EMBEDDING_FILE)


def _check_counts(num_identity: int, num_expressions: int) -> None:
    if not 1 <= num_identity <= FLAME_SHAPE_SPACE_DIM:
        raise HeadModelError(f"num_identity must be in 1..{FLAME_SHAPE_SPACE_DIM}, got {num_identity}")
    if not 1 <= num_expressions <= FLAME_EXPRESSION_SPACE_DIM:
        raise HeadModelError(f"num_expressions must be in 1..{FLAME_EXPRESSION_SPACE_DIM}, got {num_expressions}")


def convert_flame(
    pkl: Path,
    uv: Path,
    num_identity: int = FLAME_DEFAULT_IDENTITY,
    num_expressions: int = FLAME_DEFAULT_EXPRESSIONS,
    progress: Progress | None = None,
) -> tuple[FlameHeadModel, dict[str, np.ndarray]]:
    """Read + validate a FLAME pickle and UV file -> (model with in-memory runtime, smplx arrays)."""
    _check_counts(num_identity, num_expressions)
    steps = ("reading FLAME model", "reading UVs", "deriving regions and symmetry")
    if progress:
        progress(0, len(steps), steps[0])
    flame = validate_flame_arrays(safe_load_pickle(pkl), pkl, num_identity, num_expressions)
    if progress:
        progress(1, len(steps), steps[1])
    face_uvs = read_uv_file(uv, flame["f"])
    if progress:
        progress(2, len(steps), steps[2])
    v = flame["v_template"]
    regions, region_names = derive_regions(v, flame["f"])
    joints = flame["J_regressor"] @ v  # [5, 3]
    shapedirs = flame["shapedirs"]
    start = FLAME_SHAPE_SPACE_DIM
    arrays = smplx_arrays(flame)
    model = FlameHeadModel(
        name="flame",
        vertices=v.astype(np.float32),
        faces=flame["f"],
        face_uvs=face_uvs,
        face_regions=regions,
        region_names=region_names,
        identity_basis=np.ascontiguousarray(np.transpose(shapedirs[:, :, :num_identity], (2, 0, 1))),
        expression_basis=np.ascontiguousarray(np.transpose(shapedirs[:, :, start : start + num_expressions], (2, 0, 1))),
        expression_names=tuple(EXPRESSION_NAME_FORMAT.format(i) for i in range(num_expressions)),
        symmetry=mirror_partners(v),
        pivot=joints[FLAME_NECK_JOINT].astype(np.float32),
        landmarks={},
        expression_range=FLAME_EXPRESSION_RANGE,
        licence=FLAME_LICENCE,
        source={
            "model": "FLAME",
            "file": str(pkl),
            "uv_file": str(uv),
            "num_identity": num_identity,
            "num_expressions": num_expressions,
            "shapedirs_components": int(shapedirs.shape[2]),
            "converter_version": FLAME_CONVERTER_VERSION,
            "landmarks": "none (smplx gets a one-landmark placeholder embedding)",
        },
        runtime=FlameRuntime(num_identity, num_expressions, arrays=arrays),
    )
    if progress:
        progress(len(steps), len(steps), "done")
    return model, arrays


def flame_cache_key(pkl: Path, uv: Path) -> str:
    """Cache folder name: sha256 over the model's and UV file's bytes and the converter version."""
    h = hashlib.sha256()
    h.update(f"flame-converter={FLAME_CONVERTER_VERSION};".encode())
    h.update(file_sha256(pkl).encode())
    h.update(file_sha256(uv).encode())
    return h.hexdigest()[:16]


def load_flame(
    source: str | Path,
    uv: str | Path | None = None,
    num_identity: int = FLAME_DEFAULT_IDENTITY,
    num_expressions: int = FLAME_DEFAULT_EXPRESSIONS,
    cache: bool = True,
    progress: Progress | None = None,
) -> FlameHeadModel:
    """Load the user's FLAME model as a ``FlameHeadModel``, converting once into the cache.

    source: a FLAME ``.pkl`` or a folder holding one (``find_flame_pkl``).
    uv: ``head_template_mesh.obj`` or ``FLAME_texture.npz``; default: searched beside the model.
    num_identity: shape components used (1..300); num_expressions: expression components (1..100).
    cache: read/write ``cache_dir()/flame/<key>/`` (key from the files' sha256); a cache hit never
        unpickles anything. With ``cache=False`` nothing is written except a temporary folder
        while the smplx module is built.
    progress: optional callable(done, total, step) for a progress display.
    """
    _check_counts(num_identity, num_expressions)
    pkl = find_flame_pkl(source)
    uv_path = Path(uv).expanduser() if uv is not None else find_uv_file(pkl, source)
    if not uv_path.is_file():
        raise HeadModelError(f"FLAME UV file {uv_path} does not exist")
    if not cache:
        return convert_flame(pkl, uv_path, num_identity, num_expressions, progress)[0]
    folder = cache_dir() / "flame" / flame_cache_key(pkl, uv_path)
    model_path = folder / f"headmodel-i{num_identity}-e{num_expressions}.npz"
    runtime = FlameRuntime(num_identity, num_expressions, model_dir=folder)
    smplx_ready = (folder / FLAME_SMPLX_FILE).is_file() and (folder / FLAME_EMBEDDING_FILE).is_file()
    if smplx_ready and model_path.is_file():
        try:
            arrays, meta = load_headmodel_arrays(model_path)
            kwargs = headmodel_kwargs(arrays, meta)
            kwargs["source"] = {**kwargs["source"], "file": str(pkl), "uv_file": str(uv_path)}
            return FlameHeadModel(**kwargs, runtime=runtime)
        except (HeadModelError, KeyError):
            model_path.unlink(missing_ok=True)  # corrupt or old: rebuild below
    model, arrays = convert_flame(pkl, uv_path, num_identity, num_expressions, progress)
    write_smplx_files(folder, arrays)
    save_headmodel(replace(model, runtime=runtime), model_path)
    # Return what was stored (float16 bases), so the converting run and later runs agree.
    arrays, meta = load_headmodel_arrays(model_path)
    kwargs = headmodel_kwargs(arrays, meta)
    kwargs["source"] = {**kwargs["source"], "file": str(pkl), "uv_file": str(uv_path)}
    return FlameHeadModel(**kwargs, runtime=runtime)


__all__ = [
    "FLAME_LICENCE",
    "FLAME_MODEL_NAMES",
    "FLAME_UV_NAMES",
    "FlameHeadModel",
    "FlameRuntime",
    "convert_flame",
    "find_flame_pkl",
    "find_uv_file",
    "load_flame",
    "read_uv_file",
    "validate_flame_arrays",
]
