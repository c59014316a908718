"""A small CPU triangle rasteriser (numba) for the few places SEGA needs exact per-pixel triangle ids.

Why not a GPU rasteriser: the avatar itself is rendered with Gaussian splatting; triangle
rasterisation is only needed for (a) visibility / triangle-id buffers of the head mesh seen
from a camera (fitting, masks), (b) building the UV atlas (which triangle owns each texel) and
(c) quick shaded previews, wireframe overlays and synthetic test faces. These run on CPU, off
the differentiable path, so a deterministic, dependency-free rasteriser is the simplest fit.

Conventions (``sega.conventions``): continuous pixel coordinates put the centre of pixel
(row i, col j) at (x, y) = (j + 0.5, i + 0.5); cameras use OpenCV axes and a world-to-camera
``viewmat``; depth is the camera-space z in metres.

Coverage uses edge functions evaluated at pixel centres with a top-left fill rule. Each edge
function is evaluated in a canonical endpoint order so that the two triangles sharing an edge
compute exactly opposite values; together with the fill rule every pixel centre on a shared
edge belongs to exactly one of them (no cracks, no double coverage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .camera import Camera

EMPTY_FACE = -1  # face_id of pixels no triangle covers
DEFAULT_NEAR = 1e-3  # metres; triangles with a vertex at or in front of this depth are dropped (no clipping)
DEFAULT_LIGHT_DIR = (0.0, -0.5, -1.0)  # camera coords (OpenCV): direction *towards* the light, above the camera
DEFAULT_AMBIENT = 0.3  # fraction of the albedo lit regardless of the normal
DEFAULT_ALBEDO = 0.75  # grey used when no vertex colours are given


@dataclass(frozen=True, eq=False)
class Fragments:
    """Per-pixel result of rasterisation.

    face_id: [H, W] int64, index into ``faces`` (``EMPTY_FACE`` = -1 where nothing is drawn)
    bary: [H, W, 3] float32, barycentrics w.r.t. ``faces[face_id]``'s three corners (sum to 1;
        perspective-correct when depth was given); zeros where empty
    depth: [H, W] float32, camera z in the caller's depth units (metres); ``inf`` where empty.
        For 2D rasterisation (no depth) covered pixels hold 0.
    """

    face_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """[H, W] bool: pixels covered by some triangle."""
        return self.face_id >= 0

    @property
    def height(self) -> int:
        return int(self.face_id.shape[0])

    @property
    def width(self) -> int:
        return int(self.face_id.shape[1])


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _edge(ax, ay, bx, by, px, py):
    """Edge function (b - a) x (p - a); exactly antisymmetric in (a, b) thanks to a canonical order."""
    if ax < bx or (ax == bx and ay < by):
        return (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    return -((ax - bx) * (py - by) - (ay - by) * (px - bx))


@njit(cache=True, inline="always")
def _owns_edge(ax, ay, bx, by, sign):
    """Top-left rule for a pixel centre exactly on edge a->b of a triangle with orientation ``sign``.

    After multiplying by ``sign`` the triangle is traversed clockwise on screen (y down); its
    left edges then run upwards (dy < 0) and its top edges run right (dy == 0, dx > 0). The
    neighbour across the edge traverses it the other way, so exactly one of the two owns it.
    """
    dx = (bx - ax) * sign
    dy = (by - ay) * sign
    return dy < 0.0 or (dy == 0.0 and dx > 0.0)


@njit(cache=True)
def _rasterize_kernel(xy, z, faces, face_mask, use_depth, cull_backfaces, near, face_id, bary, depth):
    height, width = face_id.shape
    for f in range(faces.shape[0]):
        if not face_mask[f]:
            continue
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = xy[i0, 0], xy[i0, 1]
        x1, y1 = xy[i1, 0], xy[i1, 1]
        x2, y2 = xy[i2, 0], xy[i2, 1]
        if not (np.isfinite(x0) and np.isfinite(y0) and np.isfinite(x1) and np.isfinite(y1) and np.isfinite(x2) and np.isfinite(y2)):
            continue
        if use_depth:
            z0, z1, z2 = z[i0], z[i1], z[i2]
            if not (z0 > near and z1 > near and z2 > near):
                continue
            iz0, iz1, iz2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
        else:
            iz0 = iz1 = iz2 = 1.0
        area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area2 == 0.0 or not np.isfinite(area2):
            continue
        # Front-facing (counter-clockwise as seen by the camera) has a negative signed area in y-down pixels.
        if cull_backfaces and area2 > 0.0:
            continue
        sign = 1.0 if area2 > 0.0 else -1.0
        own0 = _owns_edge(x1, y1, x2, y2, sign)
        own1 = _owns_edge(x2, y2, x0, y0, sign)
        own2 = _owns_edge(x0, y0, x1, y1, sign)
        # Pixels whose centre (j + 0.5, i + 0.5) lies inside the bounding box.
        xmin = min(x0, min(x1, x2))
        xmax = max(x0, max(x1, x2))
        ymin = min(y0, min(y1, y2))
        ymax = max(y0, max(y1, y2))
        j_lo = max(0, int(np.ceil(max(xmin - 0.5, -1.0))))
        j_hi = min(width - 1, int(np.floor(min(xmax - 0.5, width + 1.0))))
        i_lo = max(0, int(np.ceil(max(ymin - 0.5, -1.0))))
        i_hi = min(height - 1, int(np.floor(min(ymax - 0.5, height + 1.0))))
        for i in range(i_lo, i_hi + 1):
            py = i + 0.5
            for j in range(j_lo, j_hi + 1):
                px = j + 0.5
                w0 = _edge(x1, y1, x2, y2, px, py) * sign
                if w0 < 0.0 or (w0 == 0.0 and not own0):
                    continue
                w1 = _edge(x2, y2, x0, y0, px, py) * sign
                if w1 < 0.0 or (w1 == 0.0 and not own1):
                    continue
                w2 = _edge(x0, y0, x1, y1, px, py) * sign
                if w2 < 0.0 or (w2 == 0.0 and not own2):
                    continue
                total = w0 + w1 + w2
                if total <= 0.0:
                    continue
                b0, b1, b2 = w0 / total, w1 / total, w2 / total
                if use_depth:
                    # Perspective-correct: 1/z is affine in screen space.
                    q0, q1, q2 = b0 * iz0, b1 * iz1, b2 * iz2
                    inv_z = q0 + q1 + q2
                    zz = 1.0 / inv_z
                    if not zz < depth[i, j]:
                        continue
                    b0, b1, b2 = q0 * zz, q1 * zz, q2 * zz
                    depth[i, j] = zz
                else:
                    if face_id[i, j] >= 0:  # 2D: the first triangle drawn keeps the pixel
                        continue
                    depth[i, j] = 0.0
                face_id[i, j] = f
                bary[i, j, 0] = b0
                bary[i, j, 1] = b1
                bary[i, j, 2] = b2


@njit(cache=True)
def _draw_lines_kernel(img, xy, edges, color):
    height, width = img.shape[0], img.shape[1]
    for e in range(edges.shape[0]):
        xa, ya = xy[edges[e, 0], 0], xy[edges[e, 0], 1]
        xb, yb = xy[edges[e, 1], 0], xy[edges[e, 1], 1]
        if not (np.isfinite(xa) and np.isfinite(ya) and np.isfinite(xb) and np.isfinite(yb)):
            continue
        steps = int(np.ceil(max(abs(xb - xa), abs(yb - ya)))) + 1
        if steps > 4 * (height + width):  # absurdly long edge (e.g. vertex behind the camera): skip
            continue
        for s in range(steps + 1):
            t = s / steps
            j = int(np.floor(xa + (xb - xa) * t))
            i = int(np.floor(ya + (yb - ya) * t))
            if 0 <= i < height and 0 <= j < width:
                for c in range(img.shape[2]):
                    img[i, j, c] = color[c]


@njit(cache=True)
def _draw_points_kernel(img, xy, color, radius):
    height, width = img.shape[0], img.shape[1]
    r2 = radius * radius
    for p in range(xy.shape[0]):
        x, y = xy[p, 0], xy[p, 1]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        i_lo = max(0, int(np.ceil(y - radius - 0.5)))
        i_hi = min(height - 1, int(np.floor(y + radius - 0.5)))
        j_lo = max(0, int(np.ceil(x - radius - 0.5)))
        j_hi = min(width - 1, int(np.floor(x + radius - 0.5)))
        for i in range(i_lo, i_hi + 1):
            for j in range(j_lo, j_hi + 1):
                dx = j + 0.5 - x
                dy = i + 0.5 - y
                if dx * dx + dy * dy <= r2:
                    for c in range(img.shape[2]):
                        img[i, j, c] = color[c]


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def _as_numpy(a, dtype) -> np.ndarray:
    """numpy copy-free view of an array or (detached, CPU) torch tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=dtype)


def rasterize(
    xy: np.ndarray,
    depth: np.ndarray | None,
    faces: np.ndarray,
    height: int,
    width: int,
    face_mask: np.ndarray | None = None,
    cull_backfaces: bool = False,
    near: float = DEFAULT_NEAR,
) -> Fragments:
    """Rasterise triangles given in continuous pixel coordinates.

    xy: [N, 2] pixel coordinates (x = column, y = row; pixel (i, j) is sampled at (j + 0.5, i + 0.5))
    depth: [N] camera z per vertex (metres) for z-buffering and perspective-correct barycentrics,
        or None for flat 2D rasterisation (e.g. UV space): no depth test, the lowest face index
        drawn first keeps a pixel, barycentrics are affine.
    faces: [F, 3] int vertex indices into ``xy``
    height, width: output size in pixels
    face_mask: [F] bool, only these faces are drawn (None = all)
    cull_backfaces: drop triangles that are clockwise as seen by the camera (i.e. positive signed
        area in y-down pixel coordinates). Counter-clockwise-from-outside meshes (``HeadModel``)
        then keep only their front faces. Off by default: both facings are drawn.
    near: with depth, triangles with any vertex at depth <= near are dropped (there is no clipping).
    returns: ``Fragments`` of size [height, width]
    """
    xy = _as_numpy(xy, np.float64)
    faces = _as_numpy(faces, np.int64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be [N, 2], got {xy.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {faces.shape}")
    use_depth = depth is not None
    z = _as_numpy(depth, np.float64) if use_depth else np.zeros(1, dtype=np.float64)
    if use_depth and z.shape != (xy.shape[0],):
        raise ValueError(f"depth must be [{xy.shape[0]}], got {z.shape}")
    mask = np.ones(faces.shape[0], dtype=np.bool_) if face_mask is None else _as_numpy(face_mask, np.bool_)
    if mask.shape != (faces.shape[0],):
        raise ValueError(f"face_mask must be [{faces.shape[0]}], got {mask.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= xy.shape[0]):
        raise ValueError("faces index outside xy")
    face_id = np.full((height, width), EMPTY_FACE, dtype=np.int64)
    bary = np.zeros((height, width, 3), dtype=np.float32)
    zbuf = np.full((height, width), np.inf, dtype=np.float64)  # float64 while testing, float32 out
    if faces.shape[0]:
        _rasterize_kernel(xy, z, faces, mask, use_depth, bool(cull_backfaces), float(near), face_id, bary, zbuf)
    return Fragments(face_id, bary, zbuf.astype(np.float32))


def project_vertices(vertices: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of ``sega.camera.project_points`` (float64).

    vertices: [V, 3] world metres -> (xy [V, 2] continuous pixels, depth [V] metres along camera z)
    """
    v = _as_numpy(vertices, np.float64)
    cam = v @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
    z = cam[:, 2]
    xy = cam[:, :2] / np.maximum(z, 1e-6)[:, None]
    xy = xy @ camera.K[:2, :2].T + camera.K[:2, 2]
    return xy, z


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    face_mask: np.ndarray | None = None,
    cull_backfaces: bool = False,
    near: float = DEFAULT_NEAR,
) -> Fragments:
    """Triangle-id / barycentric / depth buffers of a mesh seen from ``camera``.

    vertices: [V, 3] world metres (numpy or torch); faces: [F, 3]; face_mask: [F] bool or None.
    returns: ``Fragments`` of size [camera.height, camera.width], perspective-correct barycentrics,
        depth in metres.
    """
    xy, z = project_vertices(vertices, camera)
    return rasterize(xy, z, faces, camera.height, camera.width, face_mask=face_mask, cull_backfaces=cull_backfaces, near=near)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, outward for counter-clockwise faces.

    vertices: [V, 3]; faces: [F, 3] -> [V, 3] float64 (zero for unused vertices)
    """
    v = _as_numpy(vertices, np.float64)
    f = _as_numpy(faces, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    idx = f.reshape(-1)  # corner c of face i is entry 3 * i + c
    fn3 = np.repeat(fn, 3, axis=0)
    n = np.stack([np.bincount(idx, weights=fn3[:, k], minlength=v.shape[0]) for k in range(3)], axis=1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def shade(
    fragments: Fragments,
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    vertex_colors: np.ndarray | None = None,
    light_dir: tuple[float, float, float] = DEFAULT_LIGHT_DIR,
    ambient: float = DEFAULT_AMBIENT,
    background: float | tuple[float, float, float] = 0.0,
) -> np.ndarray:
    """Lambert + ambient shading of rasterised fragments (previews, synthetic faces).

    fragments: from ``render_mesh(vertices, faces, camera)``
    vertices: [V, 3] world metres; faces: [F, 3]
    vertex_colors: [V, 3] albedo in [0, 1] (interpolated), or None for uniform grey
    light_dir: [3] direction towards a distant light in *camera* coordinates (OpenCV: y down,
        z forward), so the light moves with the camera; the default is above the camera.
    ambient: in [0, 1]; radiance = albedo * (ambient + (1 - ambient) * max(0, n . l))
    background: value of empty pixels (scalar or RGB)
    returns: [H, W, 3] float32 in [0, 1]. Lighting is two-sided: normals are flipped towards the
        camera, so inner surfaces (mouth interior) are lit too.
    """
    h, w = fragments.height, fragments.width
    out = np.empty((h, w, 3), dtype=np.float32)
    out[:] = np.asarray(background, dtype=np.float32)
    mask = fragments.mask
    if not mask.any():
        return out
    v = _as_numpy(vertices, np.float64)
    f = _as_numpy(faces, np.int64)
    rot = camera.viewmat[:3, :3]
    n_cam = vertex_normals(v, f) @ rot.T  # [V, 3]
    p_cam = v @ rot.T + camera.viewmat[:3, 3]  # [V, 3]
    tri = f[fragments.face_id[mask]]  # [P, 3]
    b = fragments.bary[mask].astype(np.float64)[..., None]  # [P, 3, 1]
    n = (n_cam[tri] * b).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    p = (p_cam[tri] * b).sum(1)
    n *= np.where((n * p).sum(1, keepdims=True) > 0.0, -1.0, 1.0)  # face the camera
    light = np.asarray(light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    lambert = np.clip(n @ light, 0.0, None)[:, None]
    if vertex_colors is None:
        albedo = np.full((tri.shape[0], 3), DEFAULT_ALBEDO)
    else:
        albedo = (_as_numpy(vertex_colors, np.float64)[tri] * b).sum(1)
    out[mask] = np.clip(albedo * (ambient + (1.0 - ambient) * lambert), 0.0, 1.0)
    return out


def _color_array(img: np.ndarray, color) -> np.ndarray:
    c = np.broadcast_to(np.asarray(color, dtype=np.float64), (img.shape[2],))
    return np.ascontiguousarray(c.astype(img.dtype))


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3:
        raise ValueError("img must be a numpy array [H, W, C]")


def mesh_edges(faces: np.ndarray, face_mask: np.ndarray | None = None) -> np.ndarray:
    """Unique undirected edges of the (selected) triangles. faces: [F, 3] -> [E, 2] int64."""
    f = _as_numpy(faces, np.int64)
    if face_mask is not None:
        f = f[_as_numpy(face_mask, np.bool_)]
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def draw_wireframe(
    img: np.ndarray,
    xy: np.ndarray,
    faces: np.ndarray,
    color=(0.0, 1.0, 0.0),
    face_mask: np.ndarray | None = None,
    visible: Fragments | None = None,
) -> np.ndarray:
    """Draw the triangle edges (1-pixel, aliased) into ``img`` in place and return it.

    img: [H, W, C] numpy (float or uint8); xy: [N, 2] continuous pixel coordinates (e.g. from
    ``project_vertices``); faces: [F, 3]; color: C values in img's range; face_mask: [F] bool or
    None. visible: fragments of the same mesh and camera; when given only faces that own at least
    one pixel are drawn (a cheap hidden-line removal for fit overlays).
    Pixel (i, j) is the one containing the point, i.e. (floor(y), floor(x)).
    """
    _check_image(img)
    faces = _as_numpy(faces, np.int64)
    if visible is not None:
        seen = np.zeros(faces.shape[0], dtype=bool)
        seen[visible.face_id[visible.face_id >= 0]] = True
        face_mask = seen if face_mask is None else seen & _as_numpy(face_mask, np.bool_)
    edges = mesh_edges(faces, face_mask)
    if edges.shape[0]:
        _draw_lines_kernel(img, _as_numpy(xy, np.float64), edges, _color_array(img, color))
    return img


def draw_points(img: np.ndarray, xy: np.ndarray, color=(1.0, 0.0, 0.0), radius: float = 2.0) -> np.ndarray:
    """Draw filled discs (pixel centres within ``radius`` pixels) into ``img`` in place and return it.

    img: [H, W, C] numpy; xy: [P, 2] continuous pixel coordinates; color: C values; radius: pixels.
    A radius below sqrt(0.5) may draw nothing; radius >= 0.71 always hits the containing pixel.
    """
    _check_image(img)
    pts = _as_numpy(xy, np.float64).reshape(-1, 2)
    if pts.shape[0]:
        _draw_points_kernel(img, pts, _color_array(img, color), float(radius))
    return img
