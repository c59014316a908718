"""Tests for the numba triangle rasteriser (coverage, fill rule, z-buffer, perspective, drawing)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from sega.camera import Camera, intrinsics, orbit_camera, project_points
from sega.meshraster import (
    EMPTY_FACE,
    draw_points,
    draw_wireframe,
    project_vertices,
    rasterize,
    render_mesh,
    shade,
)


def _cross2(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _inside_strict(xy_tri: np.ndarray, px: np.ndarray, py: np.ndarray, margin: float) -> np.ndarray:
    """Pixel centres at least ``margin`` (pixels) inside a triangle (either winding)."""
    out = np.ones(px.shape, dtype=bool)
    area2 = _cross2(xy_tri[1] - xy_tri[0], xy_tri[2] - xy_tri[0])
    for k in range(3):
        a, b = xy_tri[k], xy_tri[(k + 1) % 3]
        e = b - a
        d = (e[0] * (py - a[1]) - e[1] * (px - a[0])) * np.sign(area2) / np.linalg.norm(e)
        out &= d > margin
    return out


def _pixel_centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.mgrid[0:h, 0:w]
    return j + 0.5, i + 0.5


def _coverage_count(xy: np.ndarray, faces: np.ndarray, h: int, w: int) -> np.ndarray:
    """How many triangles cover each pixel (each face rasterised alone)."""
    count = np.zeros((h, w), dtype=np.int64)
    for f in range(faces.shape[0]):
        mask = np.zeros(faces.shape[0], dtype=bool)
        mask[f] = True
        count += rasterize(xy, None, faces, h, w, face_mask=mask).mask
    return count


def test_single_triangle_area_and_barycentrics():
    xy = np.array([[3.3, 4.1], [50.7, 10.2], [20.2, 40.9]])
    faces = np.array([[0, 1, 2]])
    frag = rasterize(xy, None, faces, 48, 64)
    area = 0.5 * abs(_cross2(xy[1] - xy[0], xy[2] - xy[0]))
    perimeter = sum(np.linalg.norm(xy[(k + 1) % 3] - xy[k]) for k in range(3))
    assert abs(frag.mask.sum() - area) < perimeter
    # Every pixel centre clearly inside is covered; nothing clearly outside is.
    px, py = _pixel_centres(48, 64)
    assert np.all(frag.mask[_inside_strict(xy, px, py, 1e-6)])
    assert not np.any(frag.mask & ~_inside_strict(xy, px, py, -1e-6))
    # Barycentrics reproduce the pixel centre and are a partition of unity.
    b = frag.bary[frag.mask].astype(np.float64)
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-6)
    assert b.min() >= -1e-6
    np.testing.assert_allclose(b @ xy, np.stack([px[frag.mask], py[frag.mask]], 1), atol=1e-3)
    assert np.all(frag.face_id[~frag.mask] == EMPTY_FACE)
    assert np.all(np.isinf(frag.depth[~frag.mask])) and np.all(frag.depth[frag.mask] == 0.0)


def test_both_windings_drawn_and_backface_culling():
    ccw_on_screen = np.array([[2.0, 2.0], [2.0, 30.0], [30.0, 2.0]])  # (x right, y down): counter-clockwise
    faces = np.array([[0, 1, 2]])
    frag_front = rasterize(ccw_on_screen, np.ones(3), faces, 32, 32, cull_backfaces=True)
    frag_back = rasterize(ccw_on_screen, np.ones(3), faces[:, ::-1], 32, 32, cull_backfaces=True)
    frag_any = rasterize(ccw_on_screen, np.ones(3), faces[:, ::-1], 32, 32)
    assert frag_front.mask.sum() > 300
    assert frag_back.mask.sum() == 0
    assert frag_any.mask.sum() == frag_front.mask.sum()


def test_shared_edge_no_cracks_no_overlap():
    rng = np.random.default_rng(0)
    for _ in range(20):
        # A convex quad: four points on a circle in angular order.
        ang = np.sort(rng.uniform(0, 2 * np.pi, size=4))
        quad = rng.uniform(30, 34, size=2) + rng.uniform(10, 28) * np.stack([np.cos(ang), np.sin(ang)], 1)
        faces = np.array([[0, 1, 2], [0, 2, 3]])
        count = _coverage_count(quad, faces, 64, 64)
        assert count.max() <= 1
        px, py = _pixel_centres(64, 64)
        inside = _inside_strict(quad[[0, 1, 2]], px, py, -1e-9) | _inside_strict(quad[[0, 2, 3]], px, py, -1e-9)
        inner = np.ones_like(inside)
        for a, b in ((0, 1), (1, 2), (2, 3), (3, 0)):  # away from the quad's outer edges
            inner &= _inside_strict(quad[[a, b, (b + 1) % 4]], px, py, 1e-6) | ~inside
        assert np.all(count[inside & inner] == 1)


def test_edges_and_vertices_through_pixel_centres():
    # A fan of 8 triangles around a vertex sitting exactly on a pixel centre; spokes pass through
    # pixel centres (axis-aligned and diagonal), the hardest case for a fill rule.
    c = np.array([16.5, 16.5])
    ring = np.array([[10, 0], [10, 10], [0, 10], [-10, 10], [-10, 0], [-10, -10], [0, -10], [10, -10]], dtype=np.float64)
    xy = np.vstack([c, c + ring])
    faces = np.array([[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)])
    count = _coverage_count(xy, faces, 34, 34)
    assert count.max() == 1
    # The fan is the axis-aligned square [6.5, 26.5]^2: interior centres covered exactly once.
    assert np.all(count[7:26, 7:26] == 1)
    assert count[16, 16] == 1


def test_random_mesh_covers_every_pixel_once():
    rng = np.random.default_rng(1)
    n = 9
    g = np.stack(np.meshgrid(np.linspace(4, 60, n), np.linspace(4, 60, n)), -1).reshape(-1, 2)
    border = (g[:, 0] == 4) | (g[:, 0] == 60) | (g[:, 1] == 4) | (g[:, 1] == 60)
    g[~border] += rng.uniform(-2.5, 2.5, size=(int((~border).sum()), 2))
    faces = []
    for r in range(n - 1):
        for cc in range(n - 1):
            a, b, c2, d = r * n + cc, r * n + cc + 1, (r + 1) * n + cc, (r + 1) * n + cc + 1
            faces += [[a, b, d], [a, d, c2]] if (r + cc) % 2 else [[a, b, c2], [b, d, c2]]
    faces = np.array(faces)
    count = _coverage_count(g, faces, 64, 64)
    assert count.max() == 1
    # Square [4, 60]^2: pixel centres 4.5 .. 59.5 -> rows/cols 4 .. 59
    assert np.all(count[4:60, 4:60] == 1)
    assert count.sum() == 56 * 56


def test_zbuffer_nearer_wins_in_any_order():
    xy = np.array([[5.0, 5.0], [40.0, 8.0], [10.0, 40.0], [5.0, 5.0], [40.0, 8.0], [10.0, 40.0]])
    depth = np.array([2.0, 2.0, 2.0, 1.0, 1.0, 1.0])
    for faces, near_id in ((np.array([[0, 1, 2], [3, 4, 5]]), 1), (np.array([[3, 4, 5], [0, 1, 2]]), 0)):
        frag = rasterize(xy, depth, faces, 48, 48)
        assert frag.mask.sum() > 100
        assert np.all(frag.face_id[frag.mask] == near_id)
        np.testing.assert_allclose(frag.depth[frag.mask], 1.0, rtol=1e-6)
    # Interpenetrating triangles: each pixel shows the nearer surface.
    depth2 = np.array([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    frag = rasterize(xy, depth2, faces, 48, 48)
    alone = [rasterize(xy, depth2, faces, 48, 48, face_mask=np.array([k == 0, k == 1])) for k in range(2)]
    assert len(np.unique(frag.face_id[frag.mask])) == 2
    np.testing.assert_array_equal(frag.depth, np.minimum(alone[0].depth, alone[1].depth))
    nearer = np.where(alone[0].depth <= alone[1].depth, 0, 1)
    assert np.all(frag.face_id[frag.mask] == nearer[frag.mask])


def test_perspective_correct_barycentrics():
    cam = orbit_camera(30.0, 15.0, distance=0.5, fov_deg=40.0, width=128, height=96)
    verts = np.array([[-0.1, -0.08, 0.05], [0.12, -0.05, -0.1], [0.0, 0.1, 0.02]])  # strongly slanted
    faces = np.array([[0, 1, 2]])
    frag = render_mesh(verts, faces, cam)
    assert frag.mask.sum() > 500
    b = frag.bary[frag.mask].astype(np.float64)
    pts = b @ verts  # 3D points at the pixel centres
    xy, z = project_vertices(pts, cam)
    px, py = _pixel_centres(96, 128)
    np.testing.assert_allclose(xy, np.stack([px[frag.mask], py[frag.mask]], 1), atol=1e-3)
    np.testing.assert_allclose(frag.depth[frag.mask], z, rtol=1e-5)
    # Affine (non-perspective) barycentrics would be off by far more on this triangle.
    xy_v, _ = project_vertices(verts, cam)
    assert np.abs(b @ xy_v - xy).max() > 0.05


def test_project_vertices_matches_torch():
    cam = orbit_camera(-20.0, 5.0, distance=0.7, target=np.array([0.01, 0.02, 0.0]))
    pts = np.random.default_rng(2).normal(scale=0.1, size=(50, 3))
    xy, z = project_vertices(pts, cam)
    k, vm = cam.torch(torch.float64)
    xy_t, z_t = project_points(torch.as_tensor(pts), k, vm)
    np.testing.assert_allclose(xy, xy_t.numpy(), atol=1e-9)
    np.testing.assert_allclose(z, z_t.numpy(), atol=1e-12)


def _sphere(n_lat: int, n_lon: int, radius: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """UV sphere with counter-clockwise (outward) faces."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    v = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    v = np.vstack([[0, 1, 0], v, [0, -1, 0]]) * radius
    faces = []
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, idx(0, j), idx(0, j + 1)])
        faces.append([len(v) - 1, idx(n_lat - 2, j + 1), idx(n_lat - 2, j)])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [[a, c, d], [a, d, b]]
    return v, np.array(faces)


def test_sphere_front_faces_and_shading():
    v, f = _sphere(24, 48)
    cam = orbit_camera(0.0, 0.0, distance=0.5, fov_deg=30.0, width=96, height=96)
    # Outward normals of CCW faces: with culling the silhouette is unchanged (closed surface).
    full = render_mesh(v, f, cam)
    culled = render_mesh(v, f, cam, cull_backfaces=True)
    assert np.array_equal(full.mask, culled.mask)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert np.all((n * v[f].mean(1)).sum(1) > 0)  # outward
    img = shade(full, v, f, cam, background=(0.0, 0.0, 1.0))
    assert img.dtype == np.float32 and img.shape == (96, 96, 3)
    assert np.all(img[~full.mask] == np.array([0, 0, 1], dtype=np.float32))
    assert 0.0 <= img.min() and img.max() <= 1.0
    # The default light is above the camera: the upper half of the sphere is brighter.
    rows = np.nonzero(full.mask.any(1))[0]
    mid = (rows[0] + rows[-1]) // 2
    top, bottom = img[:mid][full.mask[:mid]].mean(), img[mid + 1 :][full.mask[mid + 1 :]].mean()
    assert top > bottom
    colours = np.tile([[1.0, 0.0, 0.0]], (v.shape[0], 1))
    red = shade(full, v, f, cam, vertex_colors=colours)
    assert np.all(red[full.mask][:, 1:] == 0) and red[full.mask][:, 0].max() > 0.5


def test_wireframe_and_points_draw_pixels():
    img = np.zeros((40, 40, 3), dtype=np.float32)
    xy = np.array([[5.2, 5.7], [34.1, 8.3], [12.0, 33.9]])
    draw_wireframe(img, xy, np.array([[0, 1, 2]]), color=(0.0, 1.0, 0.0))
    drawn = img[..., 1] == 1.0
    assert drawn.sum() > 60
    for x, y in xy:  # every corner's pixel is on the wireframe
        assert drawn[int(y), int(x)]
    assert np.all(img[..., 0] == 0)
    # Points: a disc of the requested radius around each point; uint8 images work too.
    img8 = np.zeros((40, 40, 3), dtype=np.uint8)
    draw_points(img8, np.array([[20.0, 20.0]]), color=(255, 0, 0), radius=3.0)
    disc = img8[..., 0] == 255
    assert abs(disc.sum() - np.pi * 9) < 2 * np.pi * 3
    assert disc[19, 19] and not disc[10, 10]
    # Off-screen and non-finite coordinates are ignored.
    draw_points(img8, np.array([[-50.0, 5.0], [np.nan, 1.0]]), color=(0, 255, 0))
    draw_wireframe(img8, np.array([[-100.0, -100.0], [np.inf, 3.0], [5.0, 5.0]]), np.array([[0, 1, 2]]), color=(0, 0, 255))
    assert img8[..., 1].sum() == 0


def test_wireframe_visible_only():
    v, f = _sphere(12, 24)
    cam = orbit_camera(0.0, 0.0, distance=0.5, fov_deg=30.0, width=64, height=64)
    xy, _ = project_vertices(v, cam)
    frag = render_mesh(v, f, cam)
    all_edges = draw_wireframe(np.zeros((64, 64, 1)), xy, f, color=(1.0,))
    visible = draw_wireframe(np.zeros((64, 64, 1)), xy, f, color=(1.0,), visible=frag)
    assert 0 < visible.sum() <= all_edges.sum()


def test_rasterise_speed_26k_triangles():
    v, f = _sphere(92, 144)  # ~26k triangles
    assert 25_000 < f.shape[0] < 27_000
    cam = orbit_camera(0.0, 0.0, distance=0.32, fov_deg=40.0, width=512, height=512)
    render_mesh(v, f, cam)  # JIT warm-up (or cache load)
    t0 = time.perf_counter()
    frag = render_mesh(v, f, cam)
    elapsed = time.perf_counter() - t0
    assert frag.mask.mean() > 0.3
    assert elapsed < 0.5, f"rasterising 26k triangles at 512x512 took {elapsed:.3f} s"


def test_input_validation():
    with pytest.raises(ValueError):
        rasterize(np.zeros((3, 3)), None, np.array([[0, 1, 2]]), 8, 8)
    with pytest.raises(ValueError):
        rasterize(np.zeros((3, 2)), None, np.array([[0, 1, 3]]), 8, 8)
    with pytest.raises(ValueError):
        rasterize(np.zeros((3, 2)), np.ones(2), np.array([[0, 1, 2]]), 8, 8)


def test_camera_behind_and_near_plane():
    cam = Camera(intrinsics(50.0, 32, 32), np.eye(4), 32, 32)
    verts = np.array([[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, -0.5]])  # one vertex behind the camera
    frag = render_mesh(verts, np.array([[0, 1, 2]]), cam)
    assert frag.mask.sum() == 0


def test_top_left_fill_rule():
    # Square with edges through pixel centres: top and left edges are in, bottom and right out.
    xy = np.array([[0.5, 0.5], [4.5, 0.5], [4.5, 4.5], [0.5, 4.5]])
    expected = np.zeros((6, 6), dtype=bool)
    expected[:4, :4] = True
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]], [[1, 3, 0], [1, 2, 3]]):
        assert np.array_equal(rasterize(xy, None, np.array(faces), 6, 6).mask, expected)
