"""Tests for the UV atlas (packing, texel rasterisation, tangent frames, symmetry, persistence)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sega.conventions import pixel_to_uv
from sega.geometry import axis_angle_to_matrix
from sega.headmodel.base import HeadModel
from sega.uv import Atlas, face_frames, uv_islands

SHEET_SIZE_M = 0.2  # side of the synthetic sheets
SHEET_N = 13  # vertices per side (odd, so x = 0 is a vertex column)


def _sheet(n: int, z_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """An n x n vertex grid over [-0.1, 0.1]^2 m, gently curved, faces counter-clockwise seen from +z."""
    s = np.linspace(-SHEET_SIZE_M / 2, SHEET_SIZE_M / 2, n)
    x, y = np.meshgrid(s, s)  # row = y index, col = x index
    z = z_offset + 0.5 * (x**2 + y**2)
    v = np.stack([x, y, z], -1).reshape(-1, 3)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, cc, d = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            # Mirror-symmetric diagonals so that the mirrored triangles exist.
            faces += [[a, b, d], [a, d, cc]] if (c < (n - 1) // 2) == (r % 2 == 0) else [[a, b, cc], [b, d, cc]]
    return v, np.array(faces, dtype=np.int64)


def _lin(t: np.ndarray) -> np.ndarray:
    """[-0.1, 0.1] -> [0.05, 0.95]."""
    return 0.05 + 0.9 * (t + SHEET_SIZE_M / 2) / SHEET_SIZE_M


def synthetic_model() -> HeadModel:
    """Two symmetric sheets. The outer sheet's left (x < 0) half is UV-mapped into UDIM tile 0 and its
    right half into tile 1; the inner sheet is mapped into tile 0 as a whole, overlapping the outer
    sheet's left half (like ICT's eyes overlapping its face), so it needs its own layer."""
    n = SHEET_N
    v_out, f_out = _sheet(n, 0.0)
    v_in, f_in = _sheet(n, -0.05)
    verts = np.vstack([v_out, v_in])
    faces = np.vstack([f_out, f_in + v_out.shape[0]])
    corners = verts[faces]  # [F, 3, 3]
    is_outer = np.arange(faces.shape[0]) < f_out.shape[0]
    right = corners[:, :, 0].mean(1) > 0
    uvs = np.zeros((faces.shape[0], 3, 2))
    half = SHEET_SIZE_M / 2
    # Outer halves: each half stretched over its own tile.
    uvs[..., 0] = np.where(right[:, None], 1.0 + _lin(2 * corners[..., 0] - half), _lin(2 * corners[..., 0] + half))
    uvs[..., 1] = _lin(corners[..., 1])
    uvs[~is_outer, :, 0] = _lin(corners[~is_outer, :, 0])
    regions = np.where(is_outer, np.where(right, 1, 0), 2).astype(np.int16)
    grid = np.arange(n * n).reshape(n, n)
    sym_sheet = grid[:, ::-1].reshape(-1)
    symmetry = np.concatenate([sym_sheet, sym_sheet + v_out.shape[0]])
    nv = verts.shape[0]
    return HeadModel(
        name="synthetic",
        vertices=verts.astype(np.float32),
        faces=faces,
        face_uvs=uvs.astype(np.float32),
        face_regions=regions,
        region_names=("outer_right_side", "outer_left_side", "inner"),
        identity_basis=np.zeros((1, nv, 3), dtype=np.float32),
        expression_basis=np.zeros((1, nv, 3), dtype=np.float32),
        expression_names=("none",),
        symmetry=symmetry.astype(np.int64),
        pivot=np.zeros(3, dtype=np.float32),
    )


@pytest.fixture(scope="module")
def model() -> HeadModel:
    return synthetic_model()


@pytest.fixture(scope="module")
def atlas(model: HeadModel) -> Atlas:
    return Atlas.build(model, resolution=128)


def _check_texels(atlas: Atlas) -> None:
    """Invariants every atlas must satisfy."""
    res = atlas.resolution
    # Barycentrics: a partition of unity, inside the triangle.
    b = atlas.texel_bary.astype(np.float64)
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-5)
    assert b.min() >= -1e-5
    # The texel's surface point, mapped through the atlas UVs, is the texel centre.
    uv = (atlas.face_atlas_uvs[atlas.texel_face].astype(np.float64) * b[:, :, None]).sum(1)
    np.testing.assert_allclose(uv, atlas.texel_uv, atol=1e-4)
    u, v = pixel_to_uv(atlas.texel_rc[:, 0], atlas.texel_rc[:, 1], res, res)
    np.testing.assert_allclose(atlas.texel_uv, np.stack([u, v], 1))
    # Dense map and texel list agree; each texel is owned by a selected face.
    assert atlas.face_id_map.shape == (res, res)
    assert np.array_equal(atlas.face_id_map[atlas.texel_rc[:, 0], atlas.texel_rc[:, 1]], atlas.texel_face)
    assert (atlas.face_id_map >= 0).sum() == atlas.num_texels
    assert np.all(atlas.face_mask[atlas.texel_face])
    # Texels lie in their face's cell, off the gutter.
    box = atlas.cell_box[atlas.face_cell[atlas.texel_face]]
    pad = atlas.options.padding_texels
    r, c = atlas.texel_rc[:, 0], atlas.texel_rc[:, 1]
    assert np.all((r >= box[:, 0] + pad) & (r < box[:, 0] + box[:, 2] - pad))
    assert np.all((c >= box[:, 1] + pad) & (c < box[:, 1] + box[:, 2] - pad))
    # Cells are inside the atlas and disjoint.
    occupied = np.zeros((res, res), dtype=np.int64)
    for r0, c0, side in atlas.cell_box:
        assert r0 >= 0 and c0 >= 0 and r0 + side <= res and c0 + side <= res
        occupied[r0 : r0 + side, c0 : c0 + side] += 1
    assert occupied.max() == 1


def _barycentric_2d(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentrics of points p [N, 2] in triangles tri [N, 3, 2]."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    m = np.stack([b - a, c - a], -1)  # [N, 2, 2]
    w = np.linalg.solve(m, (p - a)[..., None])[..., 0]
    return np.column_stack([1 - w.sum(1), w])


def test_atlas_texels_on_synthetic_model(atlas: Atlas, model: HeadModel):
    _check_texels(atlas)
    assert atlas.num_tiles == 2
    # Tile 0 holds the outer-left half and (on a second layer) the inner sheet; tile 1 the right half.
    assert atlas.num_cells == 3
    assert sorted(map(tuple, np.column_stack([atlas.cell_tile, atlas.cell_layer]).tolist())) == [(0, 0, 0), (0, 0, 1), (1, 0, 0)]
    # Texel barycentrics recomputed from the texel centre agree with the stored ones.
    tri_uv = atlas.face_atlas_uvs[atlas.texel_face].astype(np.float64)
    np.testing.assert_allclose(_barycentric_2d(atlas.texel_uv, tri_uv), atlas.texel_bary, atol=1e-4)
    # Every region gets about as many texels as its atlas UV area says (layers lost nothing).
    d1 = atlas.face_atlas_uvs[:, 1] - atlas.face_atlas_uvs[:, 0]
    d2 = atlas.face_atlas_uvs[:, 2] - atlas.face_atlas_uvs[:, 0]
    area_texels = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]) * atlas.resolution**2
    for k, name in enumerate(model.region_names):
        expected = area_texels[model.face_regions == k].sum()
        got = atlas.region_mask(name).sum()
        assert abs(got - expected) < 0.05 * expected + 40, (name, got, expected)
    # "area" packing: equal 3D areas get (about) equal texel counts.
    counts = [atlas.region_mask(n).sum() for n in model.region_names]
    assert max(counts[:2]) < 1.3 * min(counts[:2])
    assert 1.3 * max(counts[:2]) < counts[2] < 2.7 * max(counts[:2])  # the inner sheet has twice the area


def test_atlas_regions_grid_and_errors(model: HeadModel):
    inner = Atlas.build(model, resolution=64, regions=("inner",), packing="grid")
    _check_texels(inner)
    assert inner.num_tiles == 1 and inner.num_cells == 1
    assert np.all(inner.region_mask("inner"))
    assert inner.options.regions == ("inner",) and inner.options.packing == "grid"
    grid = Atlas.build(model, resolution=96, packing="grid", padding_texels=3)
    _check_texels(grid)
    assert len(set(grid.cell_box[:, 2].tolist())) == 1  # equal cells
    with pytest.raises(KeyError):
        Atlas.build(model, regions=("nose",))
    with pytest.raises(KeyError):
        grid.region_mask("nose")
    with pytest.raises(ValueError):
        Atlas.build(model, packing="tetris")
    with pytest.raises(ValueError):
        Atlas.build(model, resolution=8, padding_texels=4)


def test_uv_islands(model: HeadModel):
    labels = uv_islands(model.faces, model.face_uvs)
    # The outer sheet is cut into two islands at its UV seam, the inner sheet is one island.
    assert len(np.unique(labels)) == 3
    for k in range(3):
        assert len(np.unique(labels[model.face_regions == k])) == 1


def test_image_scatter_gather(atlas: Atlas):
    vals = np.random.default_rng(0).random((atlas.num_texels, 3)).astype(np.float32)
    img = atlas.to_image(vals, fill=-1.0)
    assert img.shape == (atlas.resolution, atlas.resolution, 3)
    assert np.array_equal(atlas.from_image(img), vals)
    assert np.all(img[atlas.face_id_map < 0] == -1.0)
    assert atlas.to_image(vals[:, 0]).shape == (atlas.resolution, atlas.resolution)
    t = torch.tensor(vals, requires_grad=True)
    timg = atlas.to_image(t)
    (atlas.from_image(timg) * 2).sum().backward()
    assert torch.allclose(t.grad, torch.full_like(t, 2.0))
    with pytest.raises(ValueError):
        atlas.to_image(vals[:-1])
    with pytest.raises(ValueError):
        atlas.from_image(np.zeros((3, 3)))


def _random_mesh(seed: int, n_faces: int = 40) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    verts = torch.tensor(rng.normal(size=(3 * n_faces, 3)))
    faces = np.arange(3 * n_faces).reshape(-1, 3)
    uvs = rng.uniform(size=(n_faces, 3, 2))
    return verts, faces, uvs


def test_face_frames_orthonormal_and_aligned():
    verts, faces, uvs = _random_mesh(0)
    fr = face_frames(verts, faces, uvs)
    assert fr.shape == (faces.shape[0], 3, 3)
    eye = torch.eye(3, dtype=fr.dtype).expand_as(fr)
    assert torch.allclose(fr.transpose(-1, -2) @ fr, eye, atol=1e-10)
    assert torch.allclose(torch.linalg.det(fr), torch.ones(fr.shape[0], dtype=fr.dtype), atol=1e-10)
    p = verts[torch.as_tensor(faces)]  # [F, 3, 3]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    n = torch.linalg.cross(e1, e2)
    assert torch.allclose(fr[..., 2], n / n.norm(dim=-1, keepdim=True), atol=1e-10)
    # Tangent = dP/du direction: solve [e1 e2] = [dP/du dP/dv] [duv1 duv2].
    duv = torch.as_tensor(np.stack([uvs[:, 1] - uvs[:, 0], uvs[:, 2] - uvs[:, 0]], -1))  # [F, 2(uv), 2(edges)]
    dpd = torch.stack([e1, e2], -1) @ torch.linalg.inv(duv)  # [F, 3, 2]: columns dP/du, dP/dv
    dpdu = dpd[..., 0] / dpd[..., 0].norm(dim=-1, keepdim=True)
    assert torch.allclose(fr[..., 0], dpdu, atol=1e-8)  # dP/du already lies in the plane
    # Bitangent follows +v where the UV map keeps orientation and -v where it is mirrored.
    orient = torch.sign(torch.linalg.det(duv))
    assert torch.all((fr[..., 1] * dpd[..., 1]).sum(-1) * orient > 0)
    # Mirroring u flips the tangent but keeps the normal.
    mirrored = uvs.copy()
    mirrored[..., 0] *= -1
    fm = face_frames(verts, faces, mirrored)
    assert torch.allclose(fm[..., 0], -fr[..., 0], atol=1e-8)
    assert torch.allclose(fm[..., 2], fr[..., 2])


def test_face_frames_degenerate_uvs_and_batching():
    verts, faces, uvs = _random_mesh(1, 6)
    uvs[0] = 0.5  # all corners at one UV
    fr = face_frames(verts.float(), faces, uvs)
    assert torch.isfinite(fr).all()
    e1 = verts[1] - verts[0]
    assert torch.allclose(fr[0, :, 0].double(), e1 / e1.norm(), atol=1e-5)
    batch = torch.stack([verts, 2 * verts + 1])
    fb = face_frames(batch, torch.as_tensor(faces), torch.as_tensor(uvs))
    assert fb.shape == (2, 6, 3, 3)
    assert torch.allclose(fb[0], face_frames(verts, faces, uvs))
    assert torch.allclose(fb[1], fb[0], atol=1e-10)  # frames ignore scale and translation


def test_frames_rotate_with_mesh(atlas: Atlas, model: HeadModel):
    v = torch.as_tensor(model.vertices, dtype=torch.float64)
    rot = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64))
    t = torch.tensor([0.01, -0.2, 0.5], dtype=torch.float64)
    f0 = atlas.texel_frames(v)
    f1 = atlas.texel_frames(v @ rot.T + t)
    assert f0.shape == (atlas.num_texels, 3, 3)
    assert torch.allclose(f1, rot @ f0, atol=1e-10)
    p0, p1 = atlas.texel_points(v), atlas.texel_points(v @ rot.T + t)
    assert torch.allclose(p1, p0 @ rot.T + t, atol=1e-7)  # float32 barycentrics sum to 1 within ~1e-7
    # Texel frames are the frames of the texels' faces; normals agree with the triangle normals.
    ff = face_frames(v, atlas.faces, atlas.face_atlas_uvs)
    assert torch.allclose(f0, ff[torch.as_tensor(atlas.texel_face)])
    tri = v[torch.as_tensor(atlas.texel_triangles)]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert torch.all((f0[..., 2] * n).sum(-1) > 0.999 * n.norm(dim=-1))
    # The outer sheet faces +z and its u runs along +x in both tiles (texels near the centre).
    centre = (p0[:, :2].norm(dim=-1) < 0.02) & torch.as_tensor(atlas.region_mask("outer_left_side", "outer_right_side"))
    assert centre.sum() > 5
    assert torch.all(f0[centre][:, :, 0] @ torch.tensor([1.0, 0, 0], dtype=torch.float64) > 0.99)
    assert torch.all(f0[centre][:, :, 2] @ torch.tensor([0, 0, 1.0], dtype=torch.float64) > 0.99)


def test_texel_points_differentiable(atlas: Atlas, model: HeadModel):
    v = torch.as_tensor(model.vertices).clone().requires_grad_(True)
    loss = atlas.texel_points(v).square().sum() + atlas.texel_frames(v)[..., 0].sum()
    loss.backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    batch = torch.stack([v.detach(), v.detach()])
    assert atlas.texel_points(batch).shape == (2, atlas.num_texels, 3)
    assert atlas.texel_frames(batch).shape == (2, atlas.num_texels, 3, 3)


def test_mirror_texels(atlas: Atlas, model: HeadModel):
    m = atlas.mirror_texels(model)
    assert m.shape == (atlas.num_texels,) and m.dtype == np.int64
    p = atlas.texel_points(torch.as_tensor(model.vertices, dtype=torch.float64)).numpy()
    # The partner sits at the x-mirrored position, within about a texel's footprint on the surface.
    texel_m = SHEET_SIZE_M / 2 / (atlas.cell_box[:, 2].min() * 0.9)
    err = np.linalg.norm(p[m] * np.array([-1.0, 1.0, 1.0]) - p, axis=1)
    assert err.max() < 2.0 * texel_m
    # Left <-> right outer halves swap; the inner sheet maps onto itself.
    names = atlas.region_names
    reg = atlas.texel_region
    assert np.all(reg[m][reg == names.index("inner")] == names.index("inner"))
    assert np.all(reg[m][reg == names.index("outer_left_side")] == names.index("outer_right_side"))
    assert (m[m] == np.arange(m.size)).mean() > 0.8


def test_save_load_roundtrip(atlas: Atlas, tmp_path: Path):
    path = atlas.save(tmp_path / "atlas" / "a.npz")
    loaded = Atlas.load(path)
    assert loaded.options == atlas.options
    assert loaded.region_names == atlas.region_names
    for name in Atlas._ARRAYS:
        a, b = getattr(atlas, name), getattr(loaded, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    _check_texels(loaded)


def test_ict_atlas(ict_model: HeadModel):
    t0 = time.perf_counter()
    atlas = Atlas.build(ict_model, resolution=256)
    elapsed = time.perf_counter() - t0
    _check_texels(atlas)
    counts = {name: int(atlas.region_mask(name).sum()) for name in ict_model.region_names}
    print(f"\nICT atlas 256: {atlas.num_texels} texels, {atlas.num_tiles} UDIM tiles, {atlas.num_cells} cells, "
          f"built in {elapsed:.2f} s; per region {counts}")
    assert atlas.num_texels > 10_000
    assert atlas.num_tiles >= 2
    assert all(c > 0 for c in counts.values()), counts
    assert elapsed < 5.0
    # Symmetry: partners sit at the x-mirrored position (the template is symmetric about x = 0).
    m = atlas.mirror_texels(ict_model)
    p = atlas.texel_points(torch.as_tensor(ict_model.vertices, dtype=torch.float64)).numpy()
    err = np.linalg.norm(p[m] * np.array([-1.0, 1.0, 1.0]) - p, axis=1)
    assert np.median(err) < 1e-3 and np.percentile(err, 99) < 5e-3
    face = atlas.region_mask("face")
    assert np.all(face[m[face]])


def test_painted_eyeballs_have_pupil_iris_and_sclera(ict_model, astronaut, face_detector):
    """Eyeball texels the photo does not show are painted by their angle from the eye's axis: the pupil
    at the front, the photo's iris colour around it, sclera behind; other texels are left alone."""
    import torch

    from sega.avatar.build import atlas_regions
    from sega.avatar.build.init import PUPIL_COLOR, eye_colours, paint_eyeballs
    from sega.headmodel.eyes import sphere_centre
    from sega.uv import Atlas

    atlas = Atlas.build(ict_model, 128, regions=atlas_regions(ict_model))
    assert "eyelashes" not in {atlas.region_names[r] for r in np.unique(atlas.texel_region)}  # lash cards get no splats
    lm = face_detector.detect(astronaut).landmarks
    eyes = atlas.region_mask("eyeball_left", "eyeball_right")
    before = np.zeros((atlas.num_texels, 3), np.float32)
    out = paint_eyeballs(ict_model, atlas, before, eyes, astronaut.astype(np.float32) / 255.0, lm)
    assert np.array_equal(out[~eyes], before[~eyes])
    iris, sclera = eye_colours(astronaut.astype(np.float32) / 255.0, lm)
    assert sclera.mean() > iris.mean() + 0.2  # the astronaut's eyes are open: a light sclera, a darker iris
    left = atlas.region_mask("eyeball_left")
    pts = atlas.texel_points(torch.as_tensor(ict_model.vertices)).numpy()[left]
    d = pts - sphere_centre(np.asarray(ict_model.vertices, np.float64)[ict_model.region_vertex_mask("eyeball_left")])
    front, back = np.argmax(d[:, 2] / np.linalg.norm(d, axis=1)), np.argmin(d[:, 2])
    np.testing.assert_allclose(out[left][front], PUPIL_COLOR)
    np.testing.assert_allclose(out[left][back], sclera)
    assert (np.abs(out[left] - iris).max(1) < 0.05).sum() > 5  # an iris ring


def test_unseen_eyeball_texels_are_painted_not_mirrored(ict_model, astronaut, fast_build):
    """Eyeball texels the photo does not show are painted (``paint_eyeballs``), never copied from the other
    eye's mirrored texel, as unseen skin is: each eyeball turns with the gaze, so with the photo's look to
    one side the other eye's mirrored spot is iris where this one's is sclera, and the copied patches showed
    as coloured blots once the eyes turned (sadtalker_wda_aoc: a teal patch on the iris)."""
    from sega.avatar.build.init import initial_maps, paint_eyeballs
    from sega.gaze import gaze_channels, with_look

    avatar, data, _ = fast_build
    expression = np.asarray(data.fit.expression, np.float32).copy()
    for cols in gaze_channels(list(ict_model.expression_names)).values():
        with_look(expression, cols, 0.5, 0.0)  # both eyes well to one side
    buf = ict_model.torch_buffers()
    with torch.no_grad():
        vertices = ict_model.deform(buf, torch.as_tensor(data.fit.identity), torch.as_tensor(expression)).numpy()
    person = np.ones(astronaut.shape[:2], np.float32)
    lm = data.detection.landmarks
    init = initial_maps(ict_model, avatar.atlas, vertices, astronaut, person, data.fit.camera, avatar.options, lm, expression)
    colors = init.maps.color.detach().cpu().numpy()
    eyes = avatar.atlas.region_mask("eyeball_left", "eyeball_right")
    unseen = eyes & (init.confidence == 0)
    painted = paint_eyeballs(ict_model, avatar.atlas, colors.copy(), eyes, astronaut.astype(np.float32) / 255.0, lm)
    as_painted = np.abs(colors - painted).max(1) < 1e-6
    # (before: 13 of the 324 unseen texels took the other eye's colours, from its 68 seen ones)
    assert unseen.sum() > 100 and as_painted[unseen].all(), int((~as_painted[unseen]).sum())
