"""sega.face_measures: what the eval measures on landmarks and images (eye and mouth opening, gaze,
brows, teeth), checked on the astronaut's real landmarks moved by known amounts."""

from __future__ import annotations

import numpy as np
import pytest

from sega.face_measures import (
    INNER_LIPS,
    IRIS_CENTRE,
    LID_LOWER,
    OUTER_LIPS,
    interocular,
    landmark_measures,
    region_masks,
    teeth_fraction,
    teeth_shown,
)
from sega.imaging import polygon_mask


@pytest.fixture(scope="module")
def face(face_detector, astronaut):
    return face_detector.detect(astronaut).landmarks.astype(np.float64)


def test_measures_follow_moved_landmarks(face):
    base = landmark_measures(face)
    iod = interocular(face)
    assert 0.0 < base["eye_opening_left"] < 0.2 and 0.0 < base["eye_opening_right"] < 0.2
    assert 0.3 < base["mouth_width"] < 0.9 and abs(base["gaze_x"]) < 0.1 and base["brow_height"] > 0.1

    opened = face.copy()
    opened[LID_LOWER["left"], 1] += 0.05 * iod  # the left lower lid 0.05 IOD lower: that eye opens by 0.05
    m = landmark_measures(opened)
    assert m["eye_opening_left"] - base["eye_opening_left"] == pytest.approx(0.05, abs=0.01)
    assert m["eye_opening_right"] == pytest.approx(base["eye_opening_right"])

    looking = face.copy()
    for side in ("left", "right"):  # both irises 2 px towards the subject's left (image right)
        looking[IRIS_CENTRE[side], 0] += 2.0
    assert landmark_measures(looking)["gaze_x"] > base["gaze_x"] + 0.02
    jaw = face.copy()
    jaw[14, 1] += 0.1 * iod  # inner lower lip down
    assert landmark_measures(jaw)["mouth_opening"] - base["mouth_opening"] == pytest.approx(0.1, abs=0.02)


def _painted_mouth(face: np.ndarray, inside_rgb, size=(512, 512)) -> np.ndarray:
    """Skin image with red lips (outer lips minus inner lips) and ``inside_rgb`` inside the inner lips (opened 0.15 IOD)."""
    lm = face.copy()
    lm[[14, 87, 178, 88, 95, 317, 402, 318, 324], 1] += 0.15 * interocular(face)  # open the inner lower lip
    img = np.full((*size, 3), (0.85, 0.65, 0.55), np.float32)
    outer = polygon_mask(lm[list(OUTER_LIPS), :2], *size) | polygon_mask(lm[list(INNER_LIPS), :2], *size)
    img[outer] = (0.70, 0.25, 0.25)
    img[polygon_mask(lm[list(INNER_LIPS), :2], *size)] = inside_rgb
    return (img * 255).astype(np.uint8), lm


def test_teeth_are_told_from_lips_and_a_dark_mouth(face):
    teeth, lm = _painted_mouth(face, (0.92, 0.90, 0.84))
    dark, _ = _painted_mouth(face, (0.30, 0.08, 0.08))
    tongue, _ = _painted_mouth(face, (0.75, 0.30, 0.32))
    assert teeth_fraction(teeth, lm) > 0.9 and teeth_shown(teeth, lm)
    assert teeth_fraction(dark, lm) < 0.05 and not teeth_shown(dark, lm)
    assert teeth_fraction(tongue, lm) < 0.05 and not teeth_shown(tongue, lm)
    assert not teeth_shown(teeth, face)  # the closed mouth of the unmoved landmarks shows none
    warm = np.clip(teeth.astype(np.float32) * (1.1, 0.9, 0.7), 0, 255).astype(np.uint8)  # a warm colour cast
    assert teeth_shown(warm, lm)


def test_region_masks_cover_mouth_and_eyes(face):
    regions = region_masks(face, 512, 512)
    mouth, eyes = regions["mouth"], regions["eyes"]
    assert mouth[int(face[13, 1]), int(face[13, 0])] and not mouth[int(face[IRIS_CENTRE["left"], 1]), int(face[IRIS_CENTRE["left"], 0])]
    assert eyes[int(face[IRIS_CENTRE["left"], 1]), int(face[IRIS_CENTRE["left"], 0])] and not (mouth & eyes).any()
