"""3DGS PLY export: exact INRIA layout, activations, extra properties, round trip, malformed files."""

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from sega.conventions import SH_C0
from export.ply import STANDARD_PROPERTIES, SplatPlyError, read_splat_ply, write_splat_ply

N = 257


def _gaussians(n: int = N, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "means": rng.normal(0.0, 0.1, (n, 3)),
        "quats": rng.normal(size=(n, 4)) * 3.0,  # not unit on purpose
        "scales": np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), (n, 3))),
        "opacities": rng.uniform(0.01, 0.99, n),
        "colors": rng.uniform(-0.1, 1.1, (n, 3)),
    }


def test_layout_and_stored_values(tmp_path):
    g = _gaussians()
    extra = {"sega_tri": np.arange(N, dtype=np.int64), "sega_b0": np.linspace(0, 1, N, dtype=np.float32)}
    path = write_splat_ply(tmp_path / "a.ply", **g, extra=extra)
    head = path.read_bytes()[:2000].split(b"end_header")[0].decode("ascii")
    assert head.startswith("ply\nformat binary_little_endian 1.0\n")
    props = [ln.split() for ln in head.splitlines() if ln.startswith("property")]
    names = [p[-1] for p in props]
    assert names == list(STANDARD_PROPERTIES) + ["sega_tri", "sega_b0"]
    assert names[:17] == "x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3".split()
    assert all(p[1] == "float" for p in props[:17])
    assert [p[1] for p in props[17:]] == ["int", "float"]
    assert any("+Y up" in ln for ln in head.splitlines() if ln.startswith("comment"))

    raw = PlyData.read(str(path))["vertex"].data
    assert len(raw) == N
    np.testing.assert_allclose(np.stack([raw[f"f_dc_{i}"] for i in range(3)], 1), (g["colors"] - 0.5) / SH_C0, rtol=1e-6, atol=1e-6)
    op = g["opacities"]
    np.testing.assert_allclose(raw["opacity"], np.log(op / (1 - op)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack([raw[f"scale_{i}"] for i in range(3)], 1), np.log(g["scales"]), rtol=1e-6)
    q = np.stack([raw[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(q, g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True), atol=1e-6)
    for k in ("nx", "ny", "nz"):
        assert (raw[k] == 0).all()


def test_round_trip(tmp_path):
    g = _gaussians(seed=1)
    extra = {"sega_tri": np.arange(N, dtype=np.int32)[::-1].copy(), "sega_b1": np.full(N, 0.25, np.float32), "sega_flag": np.arange(N) % 2 == 0}
    back = read_splat_ply(write_splat_ply(tmp_path / "b.ply", **g, extra=extra))
    np.testing.assert_allclose(back["means"], g["means"], atol=1e-7)
    np.testing.assert_allclose(back["quats"], g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(back["scales"], g["scales"], rtol=1e-5)
    np.testing.assert_allclose(back["opacities"], g["opacities"], atol=1e-6)
    np.testing.assert_allclose(back["colors"], g["colors"], atol=1e-6)
    assert list(back["extra"]) == ["sega_tri", "sega_b1", "sega_flag"]
    np.testing.assert_array_equal(back["extra"]["sega_tri"], extra["sega_tri"])
    assert back["extra"]["sega_flag"].dtype == np.uint8
    np.testing.assert_array_equal(back["extra"]["sega_flag"], extra["sega_flag"].astype(np.uint8))
    assert back["means"].dtype == np.float32 and back["quats"].shape == (N, 4)


def test_extreme_opacities_are_finite(tmp_path):
    g = _gaussians(4)
    g["opacities"] = np.array([0.0, 1.0, 0.5, 1e-9])
    back = read_splat_ply(write_splat_ply(tmp_path / "c.ply", **g))
    raw = PlyData.read(str(tmp_path / "c.ply"))["vertex"].data
    assert np.isfinite(raw["opacity"]).all()
    np.testing.assert_allclose(back["opacities"], [0.0, 1.0, 0.5, 0.0], atol=2e-6)


def test_reads_inria_file_with_higher_sh(tmp_path):
    """A file written by the INRIA code (f_rest_*, no sega_*) reads; unknown properties go to extra."""
    n = 5
    names = list(STANDARD_PROPERTIES[:9]) + [f"f_rest_{i}" for i in range(45)] + list(STANDARD_PROPERTIES[9:])
    data = np.zeros(n, dtype=[(k, "f4") for k in names])
    data["rot_0"] = 1.0
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "inria.ply"))
    back = read_splat_ply(tmp_path / "inria.ply")
    assert list(back["extra"]) == [f"f_rest_{i}" for i in range(45)]
    np.testing.assert_allclose(back["colors"], 0.5)
    np.testing.assert_allclose(back["opacities"], 0.5)
    np.testing.assert_allclose(back["scales"], 1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g.update(means=g["means"][:, :2]), "means"),
        (lambda g: g.update(quats=g["quats"][:-1]), "quats"),
        (lambda g: g.update(scales=-g["scales"]), "positive"),
        (lambda g: g.update(opacities=g["opacities"] + 1.0), "opacities"),
        (lambda g: g["colors"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda g: g["quats"].__setitem__(3, 0.0), "zero-length"),
    ],
)
def test_write_rejects_bad_arrays(tmp_path, change, message):
    g = _gaussians(8)
    change(g)
    with pytest.raises(SplatPlyError, match=message):
        write_splat_ply(tmp_path / "bad.ply", **g)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"tri": np.zeros(8)}, "sega_"),
        ({"sega_bad name": np.zeros(8)}, "sega_"),
        ({"sega_tri": np.zeros(7)}, "shape"),
        ({"sega_tri": np.full(8, 2**40)}, "32-bit"),
        ({"sega_c": np.zeros(8, dtype=np.complex64)}, "cannot store"),
    ],
)
def test_write_rejects_bad_extras(tmp_path, extra, message):
    with pytest.raises(SplatPlyError, match=message):
        write_splat_ply(tmp_path / "bad.ply", **_gaussians(8), extra=extra)


def test_read_rejects_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_splat_ply(tmp_path / "missing.ply")
    (tmp_path / "text.ply").write_text("hello, not a ply\n")
    with pytest.raises(SplatPlyError, match="not a readable PLY"):
        read_splat_ply(tmp_path / "text.ply")

    pts = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(SplatPlyError, match=r"missing vertex properties \['f_dc_0'"):
        read_splat_ply(tmp_path / "points.ply")

    PlyData([PlyElement.describe(pts, "point")]).write(str(tmp_path / "noverts.ply"))
    with pytest.raises(SplatPlyError, match="no 'vertex' element"):
        read_splat_ply(tmp_path / "noverts.ply")

    good = write_splat_ply(tmp_path / "good.ply", **_gaussians(50))
    data = good.read_bytes()
    (tmp_path / "truncated.ply").write_bytes(data[: len(data) - 100])
    with pytest.raises(SplatPlyError):
        read_splat_ply(tmp_path / "truncated.ply")

    nan = np.zeros(2, dtype=[(k, "f4") for k in STANDARD_PROPERTIES])
    nan["rot_0"] = 1.0
    nan["x"][1] = np.nan
    PlyData([PlyElement.describe(nan, "vertex")]).write(str(tmp_path / "nan.ply"))
    with pytest.raises(SplatPlyError, match="NaN"):
        read_splat_ply(tmp_path / "nan.ply")
