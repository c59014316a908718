"""Image helpers on numpy arrays: polygon masks, dilation, bilinear sampling, contact sheets.

Pixel convention (``sega.conventions``): the centre of pixel (row i, col j) is at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import ConvexHull


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of [H, W] bool by a disc of ``radius`` pixels: pixels within ``radius`` of a set
    pixel (Euclidean distance transform: linear time, where a disc structuring element costs radius^2).
    The transform runs on the set pixels' box grown by ``radius`` only: nothing outside it is that close."""
    if radius <= 0:
        return mask.copy()
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return mask.copy()
    (y0, y1), (x0, x1) = (grown_span(mask.any(axis), radius, n) for axis, n in ((1, mask.shape[0]), (0, mask.shape[1])))
    out = np.zeros_like(mask, dtype=bool)
    out[y0:y1, x0:x1] = distance_transform_edt(~mask[y0:y1, x0:x1]) <= radius
    return out


def grown_span(occupied: np.ndarray, margin: int, size: int) -> tuple[int, int]:
    """(start, stop) of the set entries of ``occupied`` [N] bool (at least one), widened by ``margin`` and clipped to [0, size]."""
    idx = np.flatnonzero(occupied)
    return max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, size)


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] bool: pixel centres inside the convex hull of ``points [P, 2]`` (pixels, centres at +0.5).
    Only the pixels of the hull's bounding box (and one more on each side) are tested: none outside it can be in."""
    hull = points[ConvexHull(points).vertices]
    inside = np.zeros((height, width), dtype=bool)
    lo, hi = np.floor(hull.min(0)).astype(int) - 1, np.ceil(hull.max(0)).astype(int) + 1  # (x, y)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], width), min(hi[1], height)
    if x1 <= x0 or y1 <= y0:
        return inside
    yy, xx = np.mgrid[y0:y1, x0:x1]
    px, py = xx + 0.5, yy + 0.5
    box = np.ones(px.shape, dtype=bool)
    n = hull.shape[0]
    # ConvexHull vertices are counter-clockwise in (x, y); with y down that is clockwise on screen.
    for k in range(n):
        (ax, ay), (bx, by) = hull[k], hull[(k + 1) % n]
        box &= (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0
    inside[y0:y1, x0:x1] = box
    return inside


def bilinear_sample(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample img [H, W, C] float at continuous pixel coordinates xy [N, 2] (centres at +0.5), edge-clamped -> [N, C]."""
    h, w = img.shape[:2]
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def contact_sheet(images: list[np.ndarray], columns: int = 3, background: float = 1.0) -> np.ndarray:
    """Tile equally sized [H, W, 3] images row-major into one image; blank cells are ``background``
    (1.0 white for float images in [0, 1]; 255 for uint8). Returns the images' dtype."""
    h, w = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    sheet = np.full((rows * h, columns * w, 3), background, dtype=images[0].dtype)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return sheet
