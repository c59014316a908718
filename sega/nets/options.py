"""JSON round trip of the networks' options (frozen dataclasses stored in checkpoints and avatar files)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields


def options_to_dict(options) -> dict:
    """JSON-able dict of an options dataclass (tuples become lists)."""
    return json.loads(json.dumps(asdict(options)))


def options_from_dict(cls, d: dict):
    """Inverse of ``options_to_dict``: lists become tuples again; unknown keys are an error (a file
    written by a newer layout)."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
