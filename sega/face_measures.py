"""What a face is doing, measured on MediaPipe's 478 landmarks (+ the image for the teeth).

The evaluation compares these on a render and on its target frame, so that a report sees what the
pictures show: half-closed eyes, a closed-lip smile where the speaker showed teeth, eyes that do not
look sideways. Lengths are divided by the inter-ocular distance (IOD: outer eye corners), so the
measures do not depend on the face's size in the image. "Left" and "right" are the subject's.

* ``eye_opening_left`` / ``_right``: gap between the upper and lower lid midpoints / IOD;
* ``mouth_opening``: gap between the inner lips' midpoints / IOD; ``mouth_width``: corner to corner / IOD;
* ``gaze_x`` / ``gaze_y``: the iris centre's offset from the eye's centre along / across the eye's
  corner-to-corner axis, over the eye's width, averaged over both eyes (x positive towards the
  subject's left, y positive downwards in the image);
* ``brow_height``: mean distance of the brows' middle points above the line through the eye corners / IOD;
* ``teeth_fraction``: fraction of the pixels inside the inner-lip polygon that are teeth-like: less
  saturated than the lips around them and not much darker (relative to the lips, so warm or cool
  colour casts of a video do not matter; the mouth's inside is dark, the tongue as saturated as the
  lips); ``teeth_shown``: that fraction is at least ``TEETH_SHOWN_FRACTION`` and
  the mouth is open by ``TEETH_MIN_OPENING``.

``region_masks`` gives the mouth and eye regions (from one image's landmarks) used for regional PSNR / SSIM.
"""

from __future__ import annotations

import numpy as np

from .imaging import dilate, polygon_mask

# MediaPipe FaceMesh indices (see sega.landmarks for the groups).
EYE_OUTER = {"right": 33, "left": 263}  # outer corners (the IOD's end points)
EYE_INNER = {"right": 133, "left": 362}
LID_UPPER = {"right": 159, "left": 386}  # upper / lower lid midpoints
LID_LOWER = {"right": 145, "left": 374}
IRIS_CENTRE = {"right": 468, "left": 473}
BROW_MIDDLE = {"right": (105, 66), "left": (334, 296)}  # two points on the middle of each brow
INNER_LIP_UPPER, INNER_LIP_LOWER = 13, 14
MOUTH_CORNERS = (61, 291)
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)  # polygon, in order
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
EYE_CONTOURS = {"right": (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
                "left": (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)}  # fmt: skip
BROWS = {"right": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107), "left": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)}

# A teeth pixel inside the inner lips: value max(r, g, b) at least this times the lips' median value, and
# saturation (max - min) / max at most this times the lips' median saturation. Checked on 52 frames of the
# 13 dev clips against the pictures (scripts in the closing note): closed mouths and dark open ones give
# 0.00-0.04, mouths showing a row of teeth 0.15-0.74, a glimpse of teeth 0.08-0.12.
TEETH_LIP_VALUE_RATIO = 0.8
TEETH_LIP_SATURATION_RATIO = 0.7
TEETH_SHOWN_FRACTION = 0.15  # teeth are "shown" when this fraction of the inner-lip polygon is teeth-like ...
TEETH_MIN_OPENING = 0.02  # ... and the lips are at least this far apart (IOD): a closed mouth shows none
MIN_POLYGON_PX = 12  # an inner-lip polygon of fewer pixels counts as closed (no teeth measured)
REGION_GROW_IOD = 0.12  # mouth / eye regions: the landmark hull grown by this fraction of the IOD (skin around them)

MEASURES = ("eye_opening_left", "eye_opening_right", "mouth_opening", "mouth_width", "gaze_x", "gaze_y", "brow_height")


def interocular(landmarks: np.ndarray) -> float:
    """Outer-eye-corner distance in px (>= 1)."""
    return max(float(np.linalg.norm(landmarks[EYE_OUTER["left"], :2] - landmarks[EYE_OUTER["right"], :2])), 1.0)


def _gaze(lm: np.ndarray, side: str) -> tuple[float, float]:
    """Iris offset from the eye centre along / across the corner axis (oriented +x to the subject's left), / eye width."""
    outer, inner = lm[EYE_OUTER[side], :2], lm[EYE_INNER[side], :2]
    a, b = (outer, inner) if side == "right" else (inner, outer)  # a -> b runs towards the subject's left (image right)
    axis = b - a
    width = max(float(np.linalg.norm(axis)), 1e-6)
    u = axis / width
    v = np.array([-u[1], u[0]])  # image-down when the eye is level
    d = lm[IRIS_CENTRE[side], :2] - (a + b) / 2
    return float(d @ u / width), float(d @ v / width)


def landmark_measures(landmarks: np.ndarray) -> dict[str, float]:
    """landmarks: [478, 2|3] image px -> ``MEASURES`` (see the module docstring)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    iod = interocular(lm)

    def gap(i: int, j: int) -> float:
        return float(np.linalg.norm(lm[i, :2] - lm[j, :2]) / iod)

    gx, gy = zip(*(_gaze(lm, s) for s in ("right", "left")))
    brows = []
    for side in ("right", "left"):
        a, b = lm[EYE_OUTER[side], :2], lm[EYE_INNER[side], :2]
        d = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
        up = np.array([-d[1], d[0]])
        if up[1] > 0:  # the normal of the eye line that points up in the image (y grows downwards)
            up = -up
        mid = lm[list(BROW_MIDDLE[side]), :2].mean(0)
        brows.append(float((mid - (a + b) / 2) @ up / iod))
    return {
        "eye_opening_left": gap(LID_UPPER["left"], LID_LOWER["left"]),
        "eye_opening_right": gap(LID_UPPER["right"], LID_LOWER["right"]),
        "mouth_opening": gap(INNER_LIP_UPPER, INNER_LIP_LOWER),
        "mouth_width": gap(*MOUTH_CORNERS),
        "gaze_x": float(np.mean(gx)),
        "gaze_y": float(np.mean(gy)),
        "brow_height": float(np.mean(brows)),
    }


def value_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rgb [..., 3] in [0, 1] -> (value max(r, g, b), saturation (max - min) / max), each [...]."""
    value = rgb.max(-1)
    return value, (value - rgb.min(-1)) / np.maximum(value, 1e-6)


def teeth_pixels(image: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """[H, W] bool: teeth-like pixels anywhere, judged against the lips' median colour (``lips``: [H, W]
    bool, the lip pixels). image: [H, W, 3] float in [0, 1]. All False when there are too few lip pixels."""
    if lips.sum() < MIN_POLYGON_PX:
        return np.zeros(lips.shape, dtype=bool)
    lip_value, lip_saturation = (float(np.median(x)) for x in value_saturation(image[lips]))
    value, saturation = value_saturation(image)
    return (value >= TEETH_LIP_VALUE_RATIO * lip_value) & (saturation <= TEETH_LIP_SATURATION_RATIO * lip_saturation)


def lip_polygons(landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """([H, W] bool inside the inner-lip polygon, [H, W] bool the lips: inside the outer one, outside the
    inner); (None, None) for a degenerate (flat) polygon, which Qhull refuses: a closed mouth."""
    lm = np.asarray(landmarks, dtype=np.float64)
    try:
        inner = polygon_mask(lm[list(INNER_LIPS), :2], height, width)
        return inner, polygon_mask(lm[list(OUTER_LIPS), :2], height, width) & ~inner
    except Exception:
        return None, None


def teeth_fraction(image: np.ndarray, landmarks: np.ndarray) -> float | None:
    """Fraction of teeth-like pixels inside the inner-lip polygon; None when the polygon is too small.
    image: [H, W, 3] uint8 or float in [0, 1]; landmarks: [478, 2|3] image px."""
    img = np.asarray(image)
    rgb = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    inner, lips = lip_polygons(landmarks, *rgb.shape[:2])
    if inner is None or inner.sum() < MIN_POLYGON_PX or lips.sum() < MIN_POLYGON_PX:
        return None
    return float(teeth_pixels(rgb, lips)[inner].mean())


def teeth_shown(image: np.ndarray, landmarks: np.ndarray) -> bool:
    """True when the open mouth shows teeth (``teeth_fraction`` and ``TEETH_MIN_OPENING``)."""
    if landmark_measures(landmarks)["mouth_opening"] < TEETH_MIN_OPENING:
        return False
    f = teeth_fraction(image, landmarks)
    return f is not None and f >= TEETH_SHOWN_FRACTION


def region_masks(landmarks: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """{"mouth": [H, W] bool, "eyes": [H, W] bool}: the lips' hull and the eyes' + brows' hulls, grown by
    ``REGION_GROW_IOD`` of the IOD (from one image's landmarks, e.g. the target's)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    grow = max(int(round(REGION_GROW_IOD * interocular(lm))), 1)
    mouth = dilate(polygon_mask(lm[list(OUTER_LIPS), :2], height, width), grow)
    eyes = np.zeros((height, width), dtype=bool)
    for side in ("right", "left"):
        eyes |= polygon_mask(lm[list(EYE_CONTOURS[side] + BROWS[side]), :2], height, width)
    return {"mouth": mouth, "eyes": dilate(eyes, grow)}
