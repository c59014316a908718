"""Test environment: head-model data location, throw-away caches, shared fixtures."""

import os

import pytest

import sega  # noqa: F401  (sega/__init__.py sets OMP_WAIT_POLICY before anything loads torch)


# ---- head-model data (CI: ../shared beside the clone; elsewhere $SEGA_ICT_DIR) ----------------

from pathlib import Path as _Path

_REPO = _Path(__file__).resolve().parent
_SHARED_ICT = _REPO.parent / "shared" / "ict-facekit" / "FaceXModel"


def pytest_configure(config):
    """Point SEGA at test data and a throw-away cache unless the caller chose otherwise; never download."""
    if not os.environ.get("SEGA_ICT_DIR") and _SHARED_ICT.is_dir():
        os.environ["SEGA_ICT_DIR"] = str(_SHARED_ICT)
    os.environ.setdefault("SEGA_CACHE_DIR", str(_REPO / ".cache" / "sega"))
    os.environ.setdefault("MPLCONFIGDIR", str(_REPO / ".cache" / "matplotlib"))


@pytest.fixture(scope="session")
def ict_dir() -> _Path:
    path = os.environ.get("SEGA_ICT_DIR")
    if not path or not _Path(path).is_dir():
        pytest.fail("ICT-FaceKit data missing: set SEGA_ICT_DIR to a FaceXModel folder (CI uses ../shared)")
    return _Path(path)


@pytest.fixture(scope="session")
def ict_model(ict_dir):
    from sega.headmodel.ict import load_ict
    from sega.landmarks import with_mediapipe_embedding

    return with_mediapipe_embedding(load_ict(ict_dir))
