"""sega.imaging / sega.metrics helpers that work on a region's box only: they must give exactly what the
whole-image computation gives (polygon masks, dilation, SSIM)."""

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from scipy.spatial import ConvexHull

from sega.imaging import dilate, polygon_mask
from sega.metrics import ssim_map, ssim_map_within


def _polygon_mask_whole(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every pixel centre of the image tested against every hull edge."""
    hull = points[ConvexHull(points).vertices]
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    inside = np.ones((height, width), dtype=bool)
    for k in range(len(hull)):
        (x0, y0), (x1, y1) = hull[k], hull[(k + 1) % len(hull)]
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside


def test_polygon_mask_and_dilate_match_the_whole_image_computation():
    rng = np.random.default_rng(0)
    for k in range(60):
        h, w = (int(v) for v in rng.integers(20, 200, 2))
        # hulls inside the image, crossing its border, and wholly outside it
        pts = rng.uniform(-40, max(h, w) + 40, (10, 2)) if k % 3 else rng.uniform(0, 25, (6, 2)) + rng.uniform(-60, 220, 2)
        got = polygon_mask(pts, h, w)
        assert np.array_equal(got, _polygon_mask_whole(pts, h, w))
        marks = rng.uniform(size=(h, w)) > 0.998
        for radius in (1, 4, 15):
            assert np.array_equal(dilate(marks, radius), distance_transform_edt(~marks) <= radius if marks.any() else marks)
    assert polygon_mask(np.array([[5.0, 5.0], [9.0, 5.0], [5.0, 9.0]]), 20, 20).sum() > 0


def test_ssim_within_a_box_equals_the_whole_image_map_there():
    rng = np.random.default_rng(1)
    for k in range(12):
        h, w = (int(v) for v in rng.integers(30, 120, 2))
        a, b = (rng.uniform(size=(h, w, 3)).astype(np.float32) for _ in range(2))
        where = np.zeros((h, w), dtype=bool)
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        where[max(y - 15, 0) : y + 4, max(x - 2, 0) : x + 25] = True  # boxes at the border and inside
        whole = ssim_map(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        part = ssim_map_within(a, b, where)
        known = ~np.isnan(part)
        assert np.array_equal(known, where)  # a rectangle is its own box
        np.testing.assert_allclose(part[known], whole[known], rtol=0, atol=1e-6)
    assert np.isnan(ssim_map_within(a, b, np.zeros((h, w), dtype=bool))).all()
