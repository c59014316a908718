"""The photo's person split up with MediaPipe's 478 landmarks and the person mask: the head above the
shoulders (``head_window``), the face's skin colour (``skin_colour``) and the hair (``hair_mask``,
``hair_colour``) and the clothes below the chin (``clothes_mask``). No hair-parsing model is available offline: hair is what of the person above the
shoulders lies outside the face oval and does not have the skin's colour.

Images are [H, W, 3] float in [0, 1]; masks [H, W]; landmarks [478, 2+] in the same pixels.
"""

from __future__ import annotations

import numpy as np

from .face_measures import EYE_OUTER, INNER_LIP_LOWER, interocular, region_masks
from .imaging import dilate, polygon_mask
from .landmarks import mediapipe_groups

CHIN, CHEEK_L, CHEEK_R = 152, 234, 454  # MediaPipe landmarks: chin tip, the face's left / right edge
SHOULDER_WIDTH_FACES = 1.6  # below the chin, the first row where the person is this many face widths wide is the shoulders
# (a neck is ~0.8 face widths and hair hanging beside it stays within ~1.5; shoulders are 2.5-3)
NECK_DROP_FACES = 0.25  # ... searched from this many face widths below the chin (the jaw's own width is ~1 face)
MASK_THRESHOLD = 0.5  # person probability at which a pixel is the person's
FACE_MARGIN_IOD = 0.1  # the face oval grown by this (IODs) is the face: hair is looked for outside it, and the
# build keeps every fitted colour inside it (splats overlap its edge)
HAIR_SKIN_DISTANCE = 0.15  # RGB distance from the median skin colour beyond which a pixel may be hair
BORDER_FRACTION = 0.03  # the background's colour is the median of the image's outer ring this wide (fraction of its side) ...
BACKGROUND_DISTANCE = 0.1  # ... and pixels within this RGB distance of it are not hair ...
BACKDROP_UNSURE = 0.9  # ... where the segmenter's person probability is below this. Halos of backdrop it lets in
# along the outline sit at 0.5-0.9; dark hair before a dark backdrop (the backdrop's colour, but hair) sits at ~1.0.
# Letterbox / pillarbox bars (a portrait video padded to a wider frame) are not the backdrop: they are
# left out of the ring, which is then taken inside them.
BAR_MAX_VALUE = 0.08  # a bar line is dark: its brightest channel's mean at most this ...
BAR_MAX_STD = 0.03  # ... and flat: every channel's spread along the line at most this (codec noise stays under ~0.02)
BAR_MAX_FRACTION = 0.35  # a bar covers at most this fraction of the side it lies on (the rest is the picture)
MIN_HAIR_PART_IOD2 = 0.05  # pieces smaller than this (IOD^2) are specks, not hair
GEODESIC_SIDE_PX = 256  # other people are told apart on the person mask shrunk to at most this side
MIN_HAIR_IOD2 = 0.3  # fewer hair pixels than this (in IOD^2) is no hair shown (a bald head, a hood)
# Below the mouth, what the person shows beside the face may be clothes (a jacket's shoulders, a collar) as well as
# hair hanging down: there a pixel is hair only if its colour fits the hair above the eyes (certainly hair when
# anything is), by squared Mahalanobis distance to their colours' mean and covariance at most HAIR_COLOUR_CHI2 (the
# chi-square 99% point for 3 degrees of freedom). Without it, retalking_5's red jacket became hair Gaussians down
# the back and red scalp texels.
HAIR_COLOUR_CHI2 = 11.34
MIN_TOP_HAIR_IOD2 = 0.05  # fewer hair pixels than this (IOD^2) above the eyes: no colour to compare with (kept as is)
COLOUR_COV_EPS = 1e-4  # added to the hair colours' covariance diagonal (a flat-coloured drawing's hair is singular)
EYE_CORNERS = tuple(EYE_OUTER.values())  # MediaPipe landmarks: the eyes' outer corners


def head_window(person: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """[H, W] bool: the rows above the shoulders (the first row, at least ``NECK_DROP_FACES`` face widths
    below the chin, where the person is ``SHOULDER_WIDTH_FACES`` face widths wide)."""
    h = person.shape[0]
    face_w = float(np.linalg.norm(landmarks[CHEEK_L, :2] - landmarks[CHEEK_R, :2]))
    width = (person >= MASK_THRESHOLD).sum(1)  # [H] person pixels per row
    start = int(np.clip(np.ceil(landmarks[CHIN, 1] + NECK_DROP_FACES * face_w), 0, h))
    wide = np.flatnonzero(width[start:] >= SHOULDER_WIDTH_FACES * face_w)
    stop = start + int(wide[0]) if wide.size else h
    rows = np.zeros(person.shape, dtype=bool)
    rows[:stop] = True
    return rows


def without_other_people(person: np.ndarray, own_box: np.ndarray, other_boxes: np.ndarray | None) -> np.ndarray:
    """[H, W] the person mask without the people of the other faces found. In a group photo or a
    side-by-side composite the segmenter marks every person, and another's hair beside this head became hair
    Gaussians floating beside it. Each pixel of the mask goes to the face it is nearest to along the mask
    (geodesic distance through person pixels, in each face's widths: people touch at the shoulders, far from
    both faces); background pixels go with their nearest person pixel.

    person: [H, W] probability; own_box: [4] x0, y0, x1, y1 photo px; other_boxes: [K, 4] (None or empty:
    the mask unchanged)."""
    if other_boxes is None or len(other_boxes) == 0:
        return person
    from scipy.ndimage import distance_transform_edt, zoom
    from skimage.graph import MCP_Geometric

    h, w = person.shape
    scale = min(1.0, GEODESIC_SIDE_PX / max(h, w))  # the assignment is coarse: a small grid is enough
    inside = zoom((person >= MASK_THRESHOLD).astype(np.float32), scale, order=0) > 0.5
    if not inside.any():
        return person
    sh, sw = inside.shape
    cost = np.where(inside, 1.0, np.inf)  # only through the person
    _, (near_r, near_c) = distance_transform_edt(~inside, return_indices=True)  # each pixel's nearest person pixel

    def distance(box: np.ndarray) -> np.ndarray:  # [sh, sw] geodesic distance from the face centre, in face widths
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64) * scale
        r, c = int(np.clip((y0 + y1) / 2, 0, sh - 1)), int(np.clip((x0 + x1) / 2, 0, sw - 1))
        d, _ = MCP_Geometric(cost).find_costs([(int(near_r[r, c]), int(near_c[r, c]))])
        return d / max(x1 - x0, 1.0)

    own = distance(own_box)
    other = np.min([distance(b) for b in other_boxes], axis=0)
    theirs = (inside & (other < own))[near_r, near_c]  # background pixels: their nearest person pixel's face
    rows = np.minimum((np.arange(h) * scale).astype(np.int64), sh - 1)
    cols = np.minimum((np.arange(w) * scale).astype(np.int64), sw - 1)
    return np.where(theirs[rows][:, cols], 0.0, person).astype(person.dtype)


def face_oval(landmarks: np.ndarray, shape: tuple[int, int], grow_iod: float = 0.0) -> np.ndarray:
    """[H, W] bool: inside MediaPipe's face oval, grown by ``grow_iod`` inter-ocular distances (at least 1 px) when > 0."""
    lm = np.asarray(landmarks, dtype=np.float64)
    oval = polygon_mask(lm[list(mediapipe_groups()["face_oval"]), :2], *shape)
    return dilate(oval, max(1, int(round(grow_iod * interocular(lm))))) if grow_iod > 0 else oval


def skin_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: the face oval without the eyes, brows and mouth (the face's skin)."""
    regions = region_masks(landmarks, *shape)
    return face_oval(landmarks, shape) & ~regions["eyes"] & ~regions["mouth"]


def skin_colour(photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """[3] float32 the median colour of the face's skin."""
    px = photo[skin_mask(landmarks, photo.shape[:2])]
    return (np.median(px, 0) if len(px) else np.median(photo.reshape(-1, 3), 0)).astype(np.float32)


def _unlike_face_skin_backdrop(photo: np.ndarray, person: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """[H, W] bool: the person outside the (grown) face oval, neither skin-coloured nor backdrop-coloured
    (``border_colour``) where the segmenter is unsure (``BACKDROP_UNSURE``): hair or clothes."""
    face = face_oval(lm, person.shape, FACE_MARGIN_IOD)
    skin = np.linalg.norm(photo - skin_colour(photo, lm)[None, None], axis=-1) <= HAIR_SKIN_DISTANCE
    backdrop_coloured = np.linalg.norm(photo - border_colour(photo, person)[None, None], axis=-1) <= BACKGROUND_DISTANCE
    background = backdrop_coloured & (person < BACKDROP_UNSURE)
    return (person >= MASK_THRESHOLD) & ~face & ~skin & ~background


def _hair_pieces(photo: np.ndarray, candidates: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """``hair_mask`` from its candidates (``_unlike_face_skin_backdrop`` above the shoulders)."""
    from scipy.ndimage import label

    mask = candidates & ~unlike_hair_below_mouth(photo, candidates, lm)
    parts, n = label(mask)
    if n == 0:
        return mask
    above = parts[: max(0, int(lm[CHIN, 1]))]
    keep = np.unique(above[above > 0])
    sizes = np.bincount(parts.ravel(), minlength=n + 1)
    keep = keep[sizes[keep] >= MIN_HAIR_PART_IOD2 * interocular(lm) ** 2]  # specks of backdrop the segmenter let in
    return np.isin(parts, keep)


def hair_mask(photo: np.ndarray, person: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """[H, W] bool: the person above the shoulders, outside the (grown) face oval, neither skin-coloured
    nor backdrop-coloured (``border_colour``) where the segmenter is unsure (``BACKDROP_UNSURE``), in pieces that reach above the chin (hair hangs from the head;
    a collar below the chin does not). photo: the head crop (its border is the backdrop)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return _hair_pieces(photo, _unlike_face_skin_backdrop(photo, person, lm) & head_window(person, lm), lm)


def _below_chin(unlike: np.ndarray, hair: np.ndarray, lm: np.ndarray) -> np.ndarray:
    return unlike & (np.arange(unlike.shape[0])[:, None] > lm[CHIN, 1]) & ~hair


def clothes_mask(photo: np.ndarray, person: np.ndarray, landmarks: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """[H, W] bool: the person below the chin that is neither face, skin-coloured, backdrop-coloured (where the
    segmenter is unsure, as in ``hair_mask``) nor ``hair`` [H, W] bool: the clothes (and whatever the person holds
    there). photo: the head crop [H, W, 3] in [0, 1]."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return _below_chin(_unlike_face_skin_backdrop(photo, person, lm), hair, lm)


def hair_and_clothes(photo: np.ndarray, person: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``hair_mask``, ``clothes_mask`` of that hair), sharing their colour tests."""
    lm = np.asarray(landmarks, dtype=np.float64)
    unlike = _unlike_face_skin_backdrop(photo, person, lm)
    hair = _hair_pieces(photo, unlike & head_window(person, lm), lm)
    return hair, _below_chin(unlike, hair, lm)


def unlike_hair_below_mouth(photo: np.ndarray, mask: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels below the mouth whose colour does not fit the hair above the eyes (``HAIR_COLOUR_CHI2``);
    none when ``mask`` (the hair candidates) has too little above the eyes to tell. photo: [H, W, 3] in [0, 1]."""
    rows = np.arange(mask.shape[0])[:, None]
    top = mask & (rows < landmarks[list(EYE_CORNERS), 1].mean())
    if top.sum() < MIN_TOP_HAIR_IOD2 * interocular(landmarks) ** 2:
        return np.zeros_like(mask)
    px = photo[top].astype(np.float64)
    inv = np.linalg.inv(np.cov(px.T) + COLOUR_COV_EPS * np.eye(3))
    low = mask & (rows > landmarks[INNER_LIP_LOWER, 1])  # only these can be cut
    d = photo[low] - px.mean(0)  # [P, 3]
    out = np.zeros_like(mask)
    out[low] = np.einsum("pi,ij,pj->p", d, inv, d) > HAIR_COLOUR_CHI2
    return out


def _bar_lines(lines: np.ndarray) -> int:
    """How many of ``lines`` [L, N, 3] (outermost first) are, from the first, dark flat bar lines."""
    dark = lines.mean(1).max(-1) <= BAR_MAX_VALUE
    flat = lines.std(1).max(-1) <= BAR_MAX_STD
    bar = dark & flat
    return int(np.argmin(bar)) if not bar.all() else len(bar)


def edge_bars(photo: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): how many rows / columns of dark, flat letterbox or pillarbox bars the
    image has along each edge (0 where there is none), each at most ``BAR_MAX_FRACTION`` of its side."""
    h, w = photo.shape[:2]
    rows, cols = int(BAR_MAX_FRACTION * h), int(BAR_MAX_FRACTION * w)
    return (_bar_lines(photo[:rows]), _bar_lines(photo[::-1][:rows]),
            _bar_lines(photo[:, :cols].transpose(1, 0, 2)), _bar_lines(photo[:, ::-1][:, :cols].transpose(1, 0, 2)))


def border_colour(photo: np.ndarray, person: np.ndarray | None = None) -> np.ndarray:
    """[3] float32 the median colour of the image's outer ring (``BORDER_FRACTION`` of its side) inside
    any letterbox or pillarbox bars (``edge_bars``), leaving out the person where ``person`` (its [H, W]
    mask) is given and leaves enough of the ring: the background, in a head crop. Person masks often
    take in a plain backdrop; hair is not its colour."""
    h, w = photo.shape[:2]
    top, bottom, left, right = edge_bars(photo)
    inner = photo[top: h - bottom, left: w - right]
    ih, iw = inner.shape[:2]
    b = max(1, int(round(BORDER_FRACTION * min(ih, iw))))
    ring = np.zeros((ih, iw), dtype=bool)
    ring[:b] = ring[-b:] = ring[:, :b] = ring[:, -b:] = True
    if person is not None:
        backdrop = ring & (person[top: h - bottom, left: w - right] < MASK_THRESHOLD)
        ring = backdrop if backdrop.sum() >= b * min(ih, iw) else ring  # at least one side's worth of ring
    return np.median(inner[ring], 0).astype(np.float32)


def hair_colour(photo: np.ndarray, hair: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """[3] float32 the hair's median colour, or None when the photo shows less than ``MIN_HAIR_IOD2``."""
    if hair.sum() < MIN_HAIR_IOD2 * interocular(landmarks) ** 2:
        return None
    return np.median(photo[hair], 0).astype(np.float32)


__all__ = ["border_colour", "clothes_mask", "edge_bars", "face_oval", "hair_and_clothes", "hair_colour", "hair_mask", "head_window", "skin_colour", "skin_mask",
           "unlike_hair_below_mouth"]
