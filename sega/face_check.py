"""Is the face MediaPipe found a human face? Refuse animals and objects before a head is built from them.

MediaPipe's face detector and FaceMesh fire on animal faces (a cat scores 0.51-0.65, a CGI creature
up to 0.81, where people score 0.72-0.98) and FaceMesh then places a human landmark set on them, so a cat photo used to
build a human head wearing fur. No face-parsing or animal classifier is available offline; two
independent detectors are:

* MediaPipe's detector score (``Detection.score``), and
* dlib's HOG frontal-face detector (in the ``dlib-bin`` wheel; no model file), run on a crop around
  the MediaPipe face, turned so the eyes are level and scaled to ``HOG_FACE_PX``. HOG is trained on
  human faces only and is indifferent to how a face is painted: photos, paintings, cartoons, anime
  and statues of people all score 0.19 or more on the checks below, animals 0.07 or less.

Evidence = HOG score + ``DETECTOR_WEIGHT`` x (detector score - ``DETECTOR_CENTRE``); a face with
evidence below ``MIN_HUMAN_EVIDENCE`` is refused. Measured with ``scripts/check_human_faces.py``:
524 faces of people (24 dev photos as they are, rolled +-30 degrees and mirrored; the astronaut;
Grace Hopper; every 6th frame of the 13 dev videos) give evidence 0.78 to 3.73; the 60 animal faces
MediaPipe finds among crops, sizes, rolls and mirrors of the skimage cat, Gradio's cheetah and lion
photos and a CGI tree creature give -2.17 to 0.16. The threshold sits between the two.
A face only FaceMesh found (no detector score) counts as ``FACEMESH_ONLY_SCORE``: it needs strong HOG evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

HOG_FACE_PX = 160  # the crop is scaled so the landmark box's longer side is this many px (HOG's window is 80 px)
HOG_CROP_FACES = 2.2  # crop side in face sizes (HOG needs some context around the face)
HOG_ADJUST = -1.0  # dlib's adjust_threshold: report weak detections too (the score is what we use)
HOG_CENTRE_TOLERANCE = 0.35  # a HOG box counts when its centre is within this many face sizes of the crop centre ...
HOG_SIZE_RANGE = (0.4, 1.6)  # ... and its width is within this range of face sizes
NO_HOG_SCORE = -2.0  # evidence when HOG finds nothing at the face (its scores of real faces are > 0)
DETECTOR_WEIGHT = 2.0  # weight of MediaPipe's detector score in the evidence
DETECTOR_CENTRE = 0.6  # detector score counted as neutral
FACEMESH_ONLY_SCORE = 0.5  # detector score of a face FaceMesh alone found: the detector's own threshold (it did not fire)
MIN_HUMAN_EVIDENCE = 0.4  # below this: not a human face (people >= 0.69, animals <= 0.16 on the dev checks)
PAD_GREY = (128, 128, 128)  # fill outside the photo
RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER = 468, 473  # FaceMesh indices (sega.face)

NOT_HUMAN_MESSAGE = ("No human face found in the photo (it looks like an animal, a toy or an object). SEGA builds "
                     "avatars of people: use a photo where a person's face is clearly visible, facing the camera.")  # fmt: skip


@dataclass(frozen=True)
class HumanFaceEvidence:
    """What the check measured for one face."""

    detector_score: float  # MediaPipe detector score (NaN: FaceMesh alone found the face)
    hog_score: float  # best dlib HOG score at the face (NO_HOG_SCORE: none)
    evidence: float  # the combination compared with MIN_HUMAN_EVIDENCE

    @property
    def is_human(self) -> bool:
        return self.evidence >= MIN_HUMAN_EVIDENCE

    def to_dict(self) -> dict:
        return {"detector_score": None if math.isnan(self.detector_score) else round(self.detector_score, 4),
                "hog_score": round(self.hog_score, 4), "evidence": round(self.evidence, 4)}  # fmt: skip


_HOG = None


def _hog_detector():
    """dlib's HOG frontal-face detector (made once; about 10 ms)."""
    global _HOG
    if _HOG is None:
        import dlib

        _HOG = dlib.get_frontal_face_detector()
    return _HOG


def level_face_crop(img: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A square crop around the face with the eyes level, the face ``HOG_FACE_PX`` wide.

    img: [H, W, 3] uint8; landmarks: [478, 3] photo px; box: [4] x0, y0, x1, y1 photo px.
    Returns [S, S, 3] uint8 with S = round(HOG_CROP_FACES * HOG_FACE_PX), the face centred."""
    x0, y0, x1, y1 = (float(v) for v in box)
    face = max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    right, left = landmarks[RIGHT_IRIS_CENTER, :2], landmarks[LEFT_IRIS_CENTER, :2]
    roll = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    k = HOG_FACE_PX / face  # crop px per photo px
    side = int(round(HOG_CROP_FACES * HOG_FACE_PX))
    c, s = math.cos(roll), math.sin(roll)
    # Pillow's AFFINE maps each output pixel (u, v) to the input: centre + R(roll) ((u, v) - side / 2) / k.
    h = side / 2
    coeffs = (c / k, -s / k, cx - (c * h - s * h) / k, s / k, c / k, cy - (s * h + c * h) / k)
    return np.asarray(Image.fromarray(img).transform((side, side), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=PAD_GREY))


def hog_face_score(crop: np.ndarray) -> float:
    """Best HOG score of a face at the centre of a ``level_face_crop`` (``NO_HOG_SCORE`` if none)."""
    side = crop.shape[0]
    boxes, scores, _ = _hog_detector().run(np.ascontiguousarray(crop), 0, HOG_ADJUST)
    best = NO_HOG_SCORE
    for b, score in zip(boxes, scores):
        w = b.right() - b.left()
        off = max(abs((b.left() + b.right()) / 2 - side / 2), abs((b.top() + b.bottom()) / 2 - side / 2))
        if off < HOG_CENTRE_TOLERANCE * HOG_FACE_PX and HOG_SIZE_RANGE[0] * HOG_FACE_PX < w < HOG_SIZE_RANGE[1] * HOG_FACE_PX:
            best = max(best, float(score))
    return best


def human_face_evidence(img: np.ndarray, landmarks: np.ndarray, box: np.ndarray, detector_score: float) -> HumanFaceEvidence:
    """img: [H, W, 3] uint8 photo; landmarks [478, 3] and box [4] of the face (photo px); detector_score in [0, 1] or NaN."""
    hog = hog_face_score(level_face_crop(img, landmarks, box))
    det = FACEMESH_ONLY_SCORE if math.isnan(detector_score) else float(detector_score)
    return HumanFaceEvidence(float(detector_score), hog, hog + DETECTOR_WEIGHT * (det - DETECTOR_CENTRE))
