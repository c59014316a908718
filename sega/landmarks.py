"""MediaPipe landmark topology and the landmark embeddings shipped with SEGA.

``data/mediapipe_groups.json``: index groups of MediaPipe's 478-point face mesh (from
``mediapipe.python.solutions.face_mesh_connections``; "left" = the subject's left).
``data/mediapipe_mirror.json``: which point is the mirror image of which (``scripts/make_mirror_map.py``).
``data/<model>_mediapipe478.npz``: where each of the 478 points lies on a head model's surface
(triangle id + barycentrics), made by ``scripts/make_landmark_embedding.py``.
``data/<model>_mediapipe478_views.npz``: the same per view (yaw x pitch bins), made by
``scripts/make_view_embeddings.py`` (the points slide over the face as it turns).
The scripts write them; this module only reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .headmodel.base import HeadModel, LandmarkEmbedding

MP_NUM_LANDMARKS = 478  # 468 face-mesh points + 2 x 5 iris points (refine_landmarks=True)
MP_GROUPS_FILE = "mediapipe_groups.json"
# MediaPipe's inner-lip contour without the mouth corners (78, 308), upper and lower halves.
INNER_LIP_UPPER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
INNER_LIP_LOWER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
JAW_EXPRESSION = "jawOpen"  # the expression whose motion tells the lower lip from the upper one
LIP_SEARCH_RADIUS_M = 0.015  # triangles considered around an inner-lip point
UPPER_LIP_MAX_FRACTION = 0.2  # upper-lip triangles move at most this fraction of the neighbourhood's largest jaw motion ...
LOWER_LIP_MIN_FRACTION = 0.5  # ... lower-lip triangles at least this fraction
MP_MIRROR_FILE = "mediapipe_mirror.json"
MP_FIRST_IRIS = 468  # the 10 iris points follow the 468 face-mesh points
MIN_IRIS_VIEW_HITS = 8  # of a view bin's 16 renders (``scripts/make_view_embeddings.py``)
MIRROR_SNAP_M = 0.003  # a mirrored point snaps to the surface within this (ICT is symmetric to ~0.1 mm)


@lru_cache(maxsize=1)
def mediapipe_groups() -> dict[str, tuple[int, ...]]:
    """Named index groups: face_oval, lips, left_eye, right_eye, left_eyebrow, right_eyebrow, left_iris, right_iris, nose."""
    data = json.loads(resources.files("sega.data").joinpath(MP_GROUPS_FILE).read_text())
    return {k: tuple(v) for k, v in data.items()}


@lru_cache(maxsize=1)
def mediapipe_mirror() -> np.ndarray:
    """[478] int64: point ``mirror[i]`` of a horizontally flipped face is point ``i`` of the face itself
    (an involution; midline points map to themselves)."""
    data = json.loads(resources.files("sega.data").joinpath(MP_MIRROR_FILE).read_text())
    mirror = np.asarray(data["mirror"], dtype=np.int64)
    mirror.setflags(write=False)
    return mirror


def embedding_file(model_name: str) -> str:
    return f"{model_name}_mediapipe478.npz"


def view_embedding_file(model_name: str) -> str:
    return f"{model_name}_mediapipe478_views.npz"


@dataclass(frozen=True)
class ViewEmbeddings:
    """MediaPipe-478 embeddings per view bin (made by ``scripts/make_view_embeddings.py``).

    A view is the direction from ``sega.synthetic.FACE_CENTRE`` to the camera in the head's canonical
    frame: yaw (degrees, + towards the subject's left, +X) and pitch (degrees, + from above), as
    ``sega.camera.orbit_camera`` places cameras.
    """

    yaws_deg: np.ndarray  # [Y] bin centres, increasing
    pitches_deg: np.ndarray  # [P] bin centres, increasing
    face_ids: np.ndarray  # [P, Y, 478] int64 triangle of each point
    barycentrics: np.ndarray  # [P, Y, 478, 3] float32

    def embedding(self, i: int, j: int) -> LandmarkEmbedding:
        return LandmarkEmbedding(self.face_ids[i, j], self.barycentrics[i, j], None)

    def weights(self, yaw_deg: float, pitch_deg: float) -> list[tuple[int, int, float]]:
        """Bilinear weights [(pitch bin, yaw bin, weight)] of a view (clamped to the grid)."""
        fy = float(np.interp(yaw_deg, self.yaws_deg, np.arange(len(self.yaws_deg))))
        fp = float(np.interp(pitch_deg, self.pitches_deg, np.arange(len(self.pitches_deg))))
        j0, i0 = min(int(fy), len(self.yaws_deg) - 2), min(int(fp), len(self.pitches_deg) - 2)
        wy, wp = fy - j0, fp - i0
        return [(i0, j0, (1 - wp) * (1 - wy)), (i0, j0 + 1, (1 - wp) * wy), (i0 + 1, j0, wp * (1 - wy)), (i0 + 1, j0 + 1, wp * wy)]


def _shipped_arrays(model: HeadModel, name: str) -> dict[str, np.ndarray] | None:
    """Arrays of ``sega/data/<name>`` if it ships and was made for ``model``'s mesh, else None."""
    res = resources.files("sega.data").joinpath(name)
    if not res.is_file():
        return None
    with res.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        if int(z["num_faces"]) != model.num_faces or int(z["num_vertices"]) != model.num_vertices:
            return None
        return {k: z[k] for k in z.files}


_SPLIT_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (file, model key) -> split_inner_lips result
SPLIT_CACHE_VERSION = 1  # bump when split_inner_lips changes what it computes: older cache files are then unused
SPLIT_CACHE_FOLDER = "landmark_splits"  # under ``sega.headmodel.cache.cache_dir()``


def _split_digest(model: HeadModel, name: str, face_ids: np.ndarray, barycentrics: np.ndarray) -> str:
    """What ``split_inner_lips`` depends on, hashed: the file's arrays, the mesh, the jaw's motion, the search's settings."""
    h = hashlib.sha256(json.dumps([SPLIT_CACHE_VERSION, name, model.name, LIP_SEARCH_RADIUS_M, LOWER_LIP_MIN_FRACTION,
                                   UPPER_LIP_MAX_FRACTION]).encode())  # fmt: skip
    jaw = model.expression_basis[model.expression_index(JAW_EXPRESSION)] if JAW_EXPRESSION in model.expression_names else np.zeros(0)
    for a in (face_ids, barycentrics, model.vertices, model.faces, jaw):
        arr = np.ascontiguousarray(a)
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def _split_from_disk(path, face_ids: np.ndarray, barycentrics: np.ndarray, num_faces: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A cached split if it reads back whole and fits (same shapes, face ids in range), else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            f, b = z["face_ids"].astype(np.int64), z["barycentrics"].astype(np.float32)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if f.shape != face_ids.shape or b.shape != barycentrics.shape or f.min(initial=0) < 0 or f.max(initial=0) >= num_faces:
        return None
    return f, b


def _split_cached(model: HeadModel, name: str, face_ids: np.ndarray, barycentrics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``split_inner_lips`` of a shipped file, once per process and head model, and kept in the cache folder
    between runs (~2 s for the view bins: every tracker, eval and prepare worker started paid it)."""
    jaw = model.expression_basis[model.expression_index(JAW_EXPRESSION)] if JAW_EXPRESSION in model.expression_names else 0.0
    key = (name, model.name, model.num_vertices, model.num_faces, float(np.asarray(jaw, np.float64).sum()))
    if key not in _SPLIT_CACHE:
        from .headmodel.cache import cache_dir

        path = cache_dir() / SPLIT_CACHE_FOLDER / f"{_split_digest(model, name, face_ids, barycentrics)}.npz"
        found = _split_from_disk(path, face_ids, barycentrics, model.num_faces) if path.is_file() else None
        if found is None:
            found = split_inner_lips(model, face_ids, barycentrics)
            try:  # best effort: a read-only cache only costs the 2 s again
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
                np.savez(tmp, face_ids=found[0], barycentrics=found[1])
                os.replace(tmp, path)
            except OSError:
                pass
        _SPLIT_CACHE[key] = found
    f, b = _SPLIT_CACHE[key]
    return f.copy(), b.copy()


def load_view_embeddings(model: HeadModel) -> ViewEmbeddings | None:
    """The shipped view-dependent embeddings for ``model`` if they match its mesh, else None (inner lips
    split: ``split_inner_lips``). An iris point that fewer than MIN_IRIS_VIEW_HITS of a bin's renders found
    takes the static embedding's point there (``load_embedding``): the renders rarely found the irises' top and
    bottom points (none of the right's in 22 and 44 of 55 bins), and an eyeball does not slide with the view
    the way the face's contour does."""
    name = view_embedding_file(model.name)
    z = _shipped_arrays(model, name)
    if z is None:
        return None
    face_ids, bary = _split_cached(model, name, z["face_ids"].astype(np.int64), z["barycentrics"].astype(np.float32))
    static = load_embedding(model)
    if static is not None and z["hits"].shape == face_ids.shape:
        weak = z["hits"] < MIN_IRIS_VIEW_HITS
        weak[..., :MP_FIRST_IRIS] = False
        face_ids[weak] = np.broadcast_to(static.face_ids, face_ids.shape)[weak]
        bary[weak] = np.broadcast_to(static.barycentrics, bary.shape)[weak]
    return ViewEmbeddings(z["yaws_deg"].astype(np.float64), z["pitches_deg"].astype(np.float64), face_ids, bary)


def load_embedding(model: HeadModel) -> LandmarkEmbedding | None:
    """The shipped MediaPipe embedding for ``model`` if one matches its mesh, else None (inner lips split;
    points no render found mirrored from their partners: ``mirror_missing``)."""
    name = embedding_file(model.name)
    z = _shipped_arrays(model, name)
    if z is None:
        return None
    face_ids, bary = _split_cached(model, name, z["face_ids"].astype(np.int64), z["barycentrics"].astype(np.float32))
    valid = z["valid"].astype(bool)
    face_ids, bary, valid = mirror_missing(model, face_ids, bary, ~valid, face_ids, bary, valid)
    return LandmarkEmbedding(face_ids, bary, valid)


def mirror_missing(model: HeadModel, face_ids: np.ndarray, bary: np.ndarray, missing: np.ndarray, partner_faces: np.ndarray,
                   partner_bary: np.ndarray, partner_found: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """An embedding ([478] face ids, [478, 3] barycentrics) with each ``missing`` point whose mirror partner
    (``mediapipe_mirror``) is ``partner_found`` in the partner embedding placed at the mirror image (x -> -x,
    the head's mid-plane) of the partner's point on the neutral mesh, snapped to the closest surface
    point there (within MIRROR_SNAP_M). Returns (face ids, barycentrics, found [478] bool): copies.

    Why: the embedding renders never found MediaPipe's top and bottom points of the right iris (470, 472), so
    the right eye's gaze rested on its centre and two side points, and its up / down look read 0.2 higher than
    the left eye's on the same renders. ICT's head is mirror-symmetric, so the left iris's points stand in."""
    face_ids, bary = face_ids.copy(), bary.copy()
    found = ~np.asarray(missing, dtype=bool)
    mirror = mediapipe_mirror()
    verts = np.asarray(model.vertices, np.float64)
    faces = np.asarray(model.faces, np.int64)
    centroids = None
    for i in np.flatnonzero(~found):
        j = int(mirror[i])
        if j == i or not partner_found[j]:
            continue
        if centroids is None:
            centroids = verts[faces].mean(1)
        point = (verts[faces[partner_faces[j]]] * partner_bary[j][:, None]).sum(0) * np.array([-1.0, 1.0, 1.0])
        near = np.flatnonzero(np.linalg.norm(centroids - point, axis=1) < MIRROR_SNAP_M)
        if not len(near):
            continue
        k, b, dist = _closest_on_triangles(point, verts[faces[near]])
        if dist < MIRROR_SNAP_M:
            face_ids[i], bary[i], found[i] = near[k], b.astype(bary.dtype), True
    return face_ids, bary, found


def _closest_on_triangles(p: np.ndarray, tri: np.ndarray) -> tuple[int, np.ndarray, float]:
    """Closest point to p [3] on triangles tri [K, 3 corners, 3] -> (k, barycentrics [3], distance):
    the plane projection where it falls inside, else the closest point of the three edges."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = (ab * ab).sum(1), (ab * ac).sum(1), (ac * ac).sum(1)
    d20, d21 = (ap * ab).sum(1), (ap * ac).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 * d01) > 1e-20, d00 * d11 - d01 * d01, np.inf)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    inside = (v >= 0) & (w >= 0) & (v + w <= 1)
    cands = [(np.stack([1 - v - w, v, w], 1), np.where(inside, np.linalg.norm(a + v[:, None] * ab + w[:, None] * ac - p, axis=1), np.inf))]
    for i, j in ((0, 1), (0, 2), (1, 2)):  # the edges
        x, y = tri[:, i], tri[:, j]
        t = np.clip(((p - x) * (y - x)).sum(1) / np.maximum(((y - x) ** 2).sum(1), 1e-20), 0.0, 1.0)
        bary = np.zeros((tri.shape[0], 3))
        bary[:, i], bary[:, j] = 1 - t, t
        cands.append((bary, np.linalg.norm(x + t[:, None] * (y - x) - p, axis=1)))
    dist = np.stack([d for _, d in cands], 1)  # [K, 4]
    k, which = np.unravel_index(int(np.argmin(dist)), dist.shape)
    return int(k), cands[which][0][k], float(dist[k, which])


def split_inner_lips(model: HeadModel, face_ids: np.ndarray, barycentrics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The embedding with MediaPipe's upper inner-lip points on the upper lip and the lower ones on the
    lower lip: face_ids [..., 478] int64, barycentrics [..., 478, 3] -> the same, changed copies.

    Why: the embeddings were made from renders of the neutral head, whose lips touch, and both halves
    of the inner contour snapped onto the same triangles: the model could not open its inner lips, so
    tracking read every mouth opening as closed (0.005 IOD for a 0.15 IOD gape) and smiles without
    teeth. Each point moves to the closest point of the triangles near it that do not follow the jaw
    (upper) or do (lower), told apart by ``JAW_EXPRESSION``'s motion. Models without that expression
    are returned unchanged."""
    if JAW_EXPRESSION not in model.expression_names:
        return face_ids, barycentrics
    v = np.asarray(model.vertices, dtype=np.float64)
    faces = np.asarray(model.faces)
    jaw = np.linalg.norm(np.asarray(model.expression_basis[model.expression_index(JAW_EXPRESSION)], dtype=np.float64), axis=1)
    from scipy.spatial import cKDTree

    tree = cKDTree(v[faces].mean(1))  # triangle centroids
    out_f, out_b = face_ids.copy(), barycentrics.copy()
    flat_f, flat_b = out_f.reshape(-1, face_ids.shape[-1]), out_b.reshape(-1, face_ids.shape[-1], 3)
    for points, lower in ((INNER_LIP_UPPER, False), (INNER_LIP_LOWER, True)):
        for row in range(flat_f.shape[0]):
            for i in points:
                p = (v[faces[flat_f[row, i]]] * flat_b[row, i][:, None]).sum(0)
                near = np.asarray(tree.query_ball_point(p, LIP_SEARCH_RADIUS_M), dtype=np.int64)
                motion = jaw[faces[near]]  # [K, 3]
                top = motion.max() if near.size else 0.0
                keep = near[(motion.min(1) >= LOWER_LIP_MIN_FRACTION * top) if lower else (motion.max(1) <= UPPER_LIP_MAX_FRACTION * top)]
                if top <= 0 or keep.size == 0:
                    continue
                k, bary, _ = _closest_on_triangles(p, v[faces[keep]])
                flat_f[row, i], flat_b[row, i] = keep[k], bary.astype(flat_b.dtype)
    return out_f, out_b


def with_mediapipe_embedding(model: HeadModel) -> HeadModel:
    """Return ``model`` with landmarks["mediapipe478"] attached when a matching embedding ships."""
    from dataclasses import replace

    emb = load_embedding(model)
    if emb is None:
        return model
    return replace(model, landmarks={**model.landmarks, "mediapipe478": emb})
