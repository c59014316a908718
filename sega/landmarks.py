"""MediaPipe landmark topology and the landmark embeddings shipped with SEGA.

``data/mediapipe_groups.json``: index groups of MediaPipe's 478-point face mesh (from
``mediapipe.python.solutions.face_mesh_connections``; "left" = the subject's left).
``data/<model>_mediapipe478.npz``: where each of the 478 points lies on a head model's surface
(triangle id + barycentrics), made by ``scripts/make_landmark_embedding.py``.
Both are written by that script; this module only reads them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from .headmodel.base import HeadModel, LandmarkEmbedding

MP_NUM_LANDMARKS = 478  # 468 face-mesh points + 2 x 5 iris points (refine_landmarks=True)
MP_GROUPS_FILE = "mediapipe_groups.json"


@lru_cache(maxsize=1)
def mediapipe_groups() -> dict[str, tuple[int, ...]]:
    """Named index groups: face_oval, lips, left_eye, right_eye, left_eyebrow, right_eyebrow, left_iris, right_iris, nose."""
    data = json.loads(resources.files("sega.data").joinpath(MP_GROUPS_FILE).read_text())
    return {k: tuple(v) for k, v in data.items()}


def embedding_file(model_name: str) -> str:
    return f"{model_name}_mediapipe478.npz"


def load_embedding(model: HeadModel) -> LandmarkEmbedding | None:
    """The shipped MediaPipe embedding for ``model`` if one matches its mesh, else None."""
    res = resources.files("sega.data").joinpath(embedding_file(model.name))
    if not res.is_file():
        return None
    with res.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        if int(z["num_faces"]) != model.num_faces or int(z["num_vertices"]) != model.num_vertices:
            return None
        return LandmarkEmbedding(z["face_ids"].astype(np.int64), z["barycentrics"].astype(np.float32), z["valid"].astype(bool))


def with_mediapipe_embedding(model: HeadModel) -> HeadModel:
    """Return ``model`` with landmarks["mediapipe478"] attached when a matching embedding ships."""
    from dataclasses import replace

    emb = load_embedding(model)
    if emb is None:
        return model
    return replace(model, landmarks={**model.landmarks, "mediapipe478": emb})
