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

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .headmodel.base import HeadModel, LandmarkEmbedding

MP_NUM_LANDMARKS = 478  # 468 face-mesh points + 2 x 5 iris points (refine_landmarks=True)
MP_GROUPS_FILE = "mediapipe_groups.json"
MP_MIRROR_FILE = "mediapipe_mirror.json"


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


def load_view_embeddings(model: HeadModel) -> ViewEmbeddings | None:
    """The shipped view-dependent embeddings for ``model`` if they match its mesh, else None."""
    z = _shipped_arrays(model, view_embedding_file(model.name))
    if z is None:
        return None
    return ViewEmbeddings(z["yaws_deg"].astype(np.float64), z["pitches_deg"].astype(np.float64),
                          z["face_ids"].astype(np.int64), z["barycentrics"].astype(np.float32))  # fmt: skip


def load_embedding(model: HeadModel) -> LandmarkEmbedding | None:
    """The shipped MediaPipe embedding for ``model`` if one matches its mesh, else None."""
    z = _shipped_arrays(model, embedding_file(model.name))
    if z is None:
        return None
    return LandmarkEmbedding(z["face_ids"].astype(np.int64), z["barycentrics"].astype(np.float32), z["valid"].astype(bool))


def with_mediapipe_embedding(model: HeadModel) -> HeadModel:
    """Return ``model`` with landmarks["mediapipe478"] attached when a matching embedding ships."""
    from dataclasses import replace

    emb = load_embedding(model)
    if emb is None:
        return model
    return replace(model, landmarks={**model.landmarks, "mediapipe478": emb})
