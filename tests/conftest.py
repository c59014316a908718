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
