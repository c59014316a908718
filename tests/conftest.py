"""Shared pytest fixtures (keep minimal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's astronaut photo: [512, 512, 3] uint8 RGB with one frontal face."""
    from skimage import data

    return data.astronaut()


@pytest.fixture
def astronaut_path(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """The astronaut written to a temporary PNG."""
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="session")
def face_detector():
    """One sega.face.FaceDetector for the whole session (MediaPipe graphs are slow to build)."""
    from sega.face import FaceDetector

    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="session")
def fast_build(ict_model, astronaut, face_detector):
    """(avatar, build data, reported stages) of the astronaut, fast preset, seed 0: one build shared by
    the avatar and export tests (~15 s on 2 cores). Tests must not modify it."""
    from sega.avatar import AvatarOptions, build_avatar

    stages = []
    avatar, data = build_avatar(astronaut, ict_model, AvatarOptions.preset("fast"), lambda s, f: stages.append((s, f)), face_detector)
    return avatar, data, stages
