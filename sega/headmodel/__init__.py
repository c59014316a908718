"""Parametric head models behind one interface (``HeadModel``): ICT-FaceKit (default) and FLAME."""

from .base import HeadModel, HeadModelTensors, LandmarkEmbedding

__all__ = ["HeadModel", "HeadModelTensors", "LandmarkEmbedding", "load_head_model"]


def load_head_model(kind: str = "ict", **kwargs) -> HeadModel:
    """Load a head model by name: "ict" (ICT-FaceKit) or "flame" (user-supplied FLAME files)."""
    if kind == "ict":
        from .ict import load_ict

        return load_ict(**kwargs)
    if kind == "flame":
        from .flame import load_flame

        return load_flame(**kwargs)
    raise ValueError(f"unknown head model {kind!r}; choose 'ict' or 'flame'")
