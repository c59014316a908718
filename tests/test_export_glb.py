"""GLB export: Khronos-validator clean, ARKit target names, exact geometry, seams, sparse vs dense.

The validator runs through node (``web/tools/validate_gltf.mjs``); its package is installed by
``npm ci --prefix web`` in scripts/setup.sh. A missing install fails the test (it is not skipped).
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from export.glb import (
    GlbExportError,
    default_regions,
    read_accessor,
    read_glb,
    split_uv_seams,
    write_head_glb,
)
from sega.headmodel.base import HeadModel
from sega.uv import Atlas

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / "web" / "tools" / "validate_gltf.mjs"
VALIDATOR_PACKAGE = ROOT / "web" / "node_modules" / "gltf-validator"
TEXTURE_SIDE = 512
CHECKER_TEXELS = 32
GEOMETRY_TOL = 1e-5  # metres


def _validate(path: Path) -> dict:
    """Run the Khronos glTF validator on ``path`` -> its JSON report."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the GLB test needs Node.js >= 20 and `npm ci --prefix web`")
    if not VALIDATOR_PACKAGE.is_dir():
        pytest.fail(f"{VALIDATOR_PACKAGE} is missing: run `npm ci --prefix web` (scripts/setup.sh does)")
    proc = subprocess.run([node, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), f"validator failed to run: {proc.stderr}"
    return json.loads(proc.stdout)


def _summary(report: dict) -> str:
    issues = report["issues"]
    codes = sorted({m["code"] for m in issues["messages"]})
    return f"errors={issues['numErrors']} warnings={issues['numWarnings']} infos={issues['numInfos']} hints={issues['numHints']} codes={codes}"


def _checker_texture(side: int = TEXTURE_SIDE) -> np.ndarray:
    """[side, side, 3] uint8: red/green ramps with a black/white checker in blue."""
    yy, xx = np.mgrid[:side, :side]
    tex = np.zeros((side, side, 3), np.uint8)
    tex[..., 0] = (xx * 255 // (side - 1)).astype(np.uint8)
    tex[..., 1] = (yy * 255 // (side - 1)).astype(np.uint8)
    tex[..., 2] = (((xx // CHECKER_TEXELS) + (yy // CHECKER_TEXELS)) % 2 * 255).astype(np.uint8)
    return tex


@pytest.fixture(scope="module")
def ict_glb(ict_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("glb") / "head.glb"
    summary = write_head_glb(path, ict_model, np.zeros(ict_model.num_identity), texture=_checker_texture())
    return summary


def test_ict_glb_is_validator_clean(ict_glb, record_property):
    report = _validate(ict_glb.path)
    print(f"\nGLB {ict_glb.file_bytes / 1e6:.2f} MB, {ict_glb.num_vertices} vertices, {ict_glb.num_triangles} triangles, "
          f"{ict_glb.num_sparse_targets}/{ict_glb.num_targets} sparse targets; validator: {_summary(report)}")
    record_property("glb_bytes", ict_glb.file_bytes)
    assert report["issues"]["numErrors"] == 0, json.dumps(report["issues"]["messages"][:20], indent=1)
    info = report["info"]
    assert info["hasMorphTargets"] and info["hasTextures"] and info["totalVertexCount"] == ict_glb.num_vertices


def test_ict_glb_targets_and_geometry(ict_model, ict_glb):
    m = ict_model
    doc, binary = read_glb(ict_glb.path)
    mesh = doc["meshes"][0]
    prim = mesh["primitives"][0]
    assert mesh["extras"]["targetNames"] == list(m.expression_names) and len(m.expression_names) == 53
    assert mesh["weights"] == [0.0] * 53 and len(prim["targets"]) == 53
    assert doc["asset"]["version"] == "2.0" and "ICT-FaceKit" in doc["asset"]["copyright"]

    # Independent of the seam splitting: triangle corners must reproduce the model's triangles.
    regions = default_regions(m)
    assert "eyelashes" not in regions and {"face", "head_neck", "teeth", "mouth_interior"} <= set(regions)
    mask = m.region_face_mask(*regions)
    tri = read_accessor(doc, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
    assert tri.shape[0] == mask.sum() == ict_glb.num_triangles
    pos = read_accessor(doc, binary, prim["attributes"]["POSITION"])
    np.testing.assert_allclose(pos[tri], m.vertices[m.faces[mask]], atol=GEOMETRY_TOL)
    jaw = m.expression_index("jawOpen")
    delta = read_accessor(doc, binary, prim["targets"][jaw]["POSITION"])
    basis = m.expression_basis[jaw].astype(np.float32)
    np.testing.assert_allclose((pos + delta)[tri], (m.vertices + basis)[m.faces[mask]], atol=GEOMETRY_TOL)
    assert np.abs(delta).max() > 0.005  # the jaw really opens (> 5 mm)

    # Accessor bounds are the exact extremes (the spec requires them for morph POSITION too).
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_array_equal(acc["min"], pos.min(0))
    np.testing.assert_array_equal(acc["max"], pos.max(0))
    for t in prim["targets"]:
        a = doc["accessors"][t["POSITION"]]
        d = read_accessor(doc, binary, t["POSITION"])
        np.testing.assert_array_equal(a["min"], d.min(0))
        np.testing.assert_array_equal(a["max"], d.max(0))

    # UVs: the packed atlas's UVs with v flipped to glTF's top-left origin; seams split.
    atlas_uvs = Atlas.build(m, resolution=TEXTURE_SIDE, regions=regions).face_atlas_uvs[mask]
    uv = read_accessor(doc, binary, prim["attributes"]["TEXCOORD_0"])
    np.testing.assert_allclose(uv[tri][..., 0], atlas_uvs[..., 0], atol=1e-6)
    np.testing.assert_allclose(uv[tri][..., 1], 1.0 - atlas_uvs[..., 1], atol=1e-6)
    assert ict_glb.num_vertices > m.region_vertex_mask(*regions).sum()  # seam vertices were duplicated

    normals = read_accessor(doc, binary, prim["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    nose = np.argmax(pos[:, 2])  # the most forward vertex faces +Z
    assert normals[nose, 2] > 0.5


def test_sparse_targets_are_smaller_and_equal(ict_model, ict_glb, tmp_path):
    dense = write_head_glb(tmp_path / "dense.glb", ict_model, texture=_checker_texture(), morph_storage="dense")
    print(f"\nGLB size: dense morph targets {dense.file_bytes / 1e6:.2f} MB, auto/sparse {ict_glb.file_bytes / 1e6:.2f} MB")
    assert ict_glb.num_sparse_targets == 53 and dense.num_sparse_targets == 0
    assert ict_glb.file_bytes < 0.7 * dense.file_bytes
    d_doc, d_bin = read_glb(dense.path)
    s_doc, s_bin = read_glb(ict_glb.path)
    d_t, s_t = d_doc["meshes"][0]["primitives"][0]["targets"], s_doc["meshes"][0]["primitives"][0]["targets"]
    for k in (0, 10, 26, 52):
        np.testing.assert_array_equal(read_accessor(d_doc, d_bin, d_t[k]["POSITION"]), read_accessor(s_doc, s_bin, s_t[k]["POSITION"]))
    assert _validate(dense.path)["issues"]["numErrors"] == 0


def test_ict_glb_rejects_udim_uvs(ict_model, tmp_path):
    with pytest.raises(GlbExportError, match="Atlas"):
        write_head_glb(tmp_path / "x.glb", ict_model, face_uvs=ict_model.face_uvs)


# ---- small synthetic model: seams, identity, options, errors ------------------------------------


def _tiny_model() -> HeadModel:
    """Two quads (4 triangles) of 'face' sharing an edge whose UVs differ (a seam), plus one 'eyelashes' triangle."""
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1, 1, 0], [2, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1]], np.float32) * 0.1
    f = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4], [6, 8, 7]], np.int64)
    uv_a = {0: (0.0, 0.0), 1: (0.4, 0.0), 4: (0.4, 0.5), 3: (0.0, 0.5)}
    uv_b = {1: (0.6, 0.0), 2: (1.0, 0.0), 5: (1.0, 0.5), 4: (0.6, 0.5)}  # vertices 1 and 4 on the seam
    uv_c = {6: (0.0, 0.6), 8: (0.3, 0.6), 7: (0.0, 0.9)}
    face_uvs = np.array([[(uv_a if i < 2 else uv_b if i < 4 else uv_c)[k] for k in tri] for i, tri in enumerate(f)], np.float32)
    rng = np.random.default_rng(0)
    expr = np.zeros((3, 9, 3), np.float32)
    expr[0, 4] = (0.0, 0.0, 0.01)  # moves one seam vertex only
    expr[1] = rng.normal(0, 0.01, (9, 3))  # moves everything
    return HeadModel(
        name="tiny",
        vertices=v,
        faces=f,
        face_uvs=face_uvs,
        face_regions=np.array([0, 0, 0, 0, 1], np.int16),
        region_names=("face", "eyelashes"),
        identity_basis=rng.normal(0, 0.01, (2, 9, 3)).astype(np.float32),
        expression_basis=expr,  # expression 2 is all zeros
        expression_names=("bump", "wobble", "nothing"),
        symmetry=np.arange(9),
        pivot=np.zeros(3, np.float32),
    )


def test_split_uv_seams_duplicates_only_seam_vertices():
    m = _tiny_model()
    split = split_uv_seams(m.faces[:4], m.face_uvs[:4])
    assert sorted(split.source_vertex.tolist()) == [0, 1, 1, 2, 3, 4, 4, 5]
    np.testing.assert_array_equal(split.source_vertex[split.faces], m.faces[:4])
    np.testing.assert_array_equal(split.uvs[split.faces], m.face_uvs[:4])


def test_tiny_model_identity_targets_and_storage(tmp_path):
    m = _tiny_model()
    identity = np.array([1.5, -0.5])
    out = {}
    for mode in ("dense", "sparse", "auto"):
        s = write_head_glb(tmp_path / f"{mode}.glb", m, identity, face_uvs=m.face_uvs, morph_storage=mode, regions=("face",))
        doc, binary = read_glb(s.path)
        prim = doc["meshes"][0]["primitives"][0]
        tri = read_accessor(doc, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
        pos = read_accessor(doc, binary, prim["attributes"]["POSITION"])
        shaped = m.vertices + np.einsum("i,ivc->vc", identity, m.identity_basis)
        np.testing.assert_allclose(pos[tri], shaped[m.faces[:4]], atol=1e-7)
        targets = [read_accessor(doc, binary, t["POSITION"]) for t in prim["targets"]]
        for k in range(3):
            np.testing.assert_allclose(targets[k][tri], m.expression_basis[k][m.faces[:4]], atol=1e-7)
        out[mode] = (s, doc)
        report = _validate(s.path)
        assert report["issues"]["numErrors"] == 0, _summary(report)
    assert out["dense"][0].num_sparse_targets == 0 and out["sparse"][0].num_sparse_targets == 3
    # auto: "bump" (one vertex, duplicated on the seam) and "nothing" are sparse, "wobble" is dense
    assert out["auto"][0].num_sparse_targets == 2
    nothing = out["sparse"][1]["accessors"][out["sparse"][1]["meshes"][0]["primitives"][0]["targets"][2]["POSITION"]]
    assert "bufferView" not in nothing and "sparse" not in nothing  # all-zero target: zeros by definition
    assert out["auto"][1]["meshes"][0]["extras"]["targetNames"] == ["bump", "wobble", "nothing"]
    assert "baseColorFactor" in out["auto"][1]["materials"][0]["pbrMetallicRoughness"]


def test_tiny_model_subset_of_expressions_and_tolerance(tmp_path):
    m = _tiny_model()
    s = write_head_glb(tmp_path / "a.glb", m, face_uvs=m.face_uvs, expressions=("wobble",), morph_tolerance=1.0)
    doc, binary = read_glb(s.path)
    assert doc["meshes"][0]["extras"]["targetNames"] == ["wobble"]
    assert s.num_triangles == 4  # eyelashes are left out by default
    # a tolerance above every delta stores nothing
    assert not read_accessor(doc, binary, doc["meshes"][0]["primitives"][0]["targets"][0]["POSITION"]).any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"identity": np.zeros(3)}, "identity"),
        ({"expressions": ("smile",)}, "unknown"),
        ({"regions": ("hair",)}, "hair"),
        ({"texture": np.zeros((4, 4), np.uint8)}, "texture"),
        ({"texture": np.zeros((4, 4, 3), np.float32)}, "texture"),
        ({"morph_storage": "packed"}, "morph_storage"),
        ({"morph_tolerance": -1.0}, "morph_tolerance"),
        ({"face_uvs": np.zeros((2, 3, 2))}, "face_uvs"),
    ],
)
def test_write_rejects_bad_inputs(tmp_path, kwargs, message):
    m = _tiny_model()
    kwargs.setdefault("face_uvs", m.face_uvs)
    with pytest.raises(GlbExportError, match=message):
        write_head_glb(tmp_path / "bad.glb", m, **kwargs)


def test_read_glb_rejects_non_glb(tmp_path):
    (tmp_path / "a.glb").write_bytes(b"not a glb file at all")
    with pytest.raises(GlbExportError, match="not a glTF 2.0 binary"):
        read_glb(tmp_path / "a.glb")
