"""ICT-FaceKit loading, conversion cache, symmetry and download integrity."""

import time

import numpy as np
import pytest
import torch

from sega.testing.arkit_names import ARKIT_53

from sega.errors import HeadModelError
from sega.headmodel import download as dl
from sega.headmodel.ict import ICT_REGION_NAMES, convert_ict, load_ict



def test_ict_shapes_units_regions(ict_model):
    m = ict_model
    assert m.name == "ict"
    assert m.vertices.shape == (m.num_vertices, 3) and m.faces.shape[1] == 3
    assert m.faces.max() < m.num_vertices and m.faces.min() >= 0
    assert m.face_uvs.shape == (m.num_faces, 3, 2)
    assert m.identity_basis.shape == (50, m.num_vertices, 3)
    assert m.expression_basis.shape == (53, m.num_vertices, 3)
    assert tuple(m.expression_names) == ARKIT_53
    assert m.region_names == ICT_REGION_NAMES
    for r in ICT_REGION_NAMES:
        assert m.region_face_mask(r).sum() > 100, r
    # metres: head about 25 cm wide, 34 cm tall with the neck
    ext = m.vertices.max(0) - m.vertices.min(0)
    assert 0.2 < ext[0] < 0.3 and 0.3 < ext[1] < 0.4
    # helper meshes were dropped and vertices re-indexed
    assert set(m.source["dropped_groups"]) == {"M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion"}
    assert m.num_vertices < 26719 and np.unique(m.faces).size == m.num_vertices
    assert len(m.landmarks["ibug68"]) == 68


def test_ict_left_is_plus_x(ict_model):
    """eyeBlink_L moves the subject's left eye, on +X (conventions)."""
    d = np.linalg.norm(ict_model.expression_basis[ict_model.expression_index("eyeBlink_L")].astype(np.float32), axis=1)
    moved = ict_model.vertices[d > 0.5 * d.max()]
    assert (moved[:, 0] > 0).all()
    assert ict_model.region_vertex_mask("eyeball_left") @ (ict_model.vertices[:, 0] > 0) > 0


def test_symmetry_map(ict_model):
    m = ict_model
    mirrored = m.vertices[m.symmetry] * np.array([-1, 1, 1])
    assert np.abs(mirrored - m.vertices).max() < 1e-3  # within 1 mm everywhere
    assert (m.symmetry[m.symmetry] == np.arange(m.num_vertices)).mean() > 0.98
    left = m.region_vertex_mask("eyeball_left")
    assert m.region_vertex_mask("eyeball_right")[m.symmetry[left]].all()


def test_deform_is_linear_blendshapes(ict_model):
    m = ict_model
    buf = m.torch_buffers()
    e = m.expression_vector(jawOpen=0.7, eyeBlink_R=0.3)
    ident = np.zeros(m.num_identity, np.float32)
    ident[3] = 1.5
    v = m.deform(buf, torch.as_tensor(ident), torch.as_tensor(e)).numpy()
    ref = m.vertices + 1.5 * m.identity_basis[3].astype(np.float32) + 0.7 * m.expression_basis[m.expression_index("jawOpen")].astype(np.float32) + 0.3 * m.expression_basis[m.expression_index("eyeBlink_R")].astype(np.float32)
    assert np.abs(v - ref).max() < 1e-6
    jaw = m.expression_basis[m.expression_index("jawOpen")].astype(np.float32)
    assert jaw[:, 1].min() < -0.02  # jawOpen lowers the chin by centimetres


def test_cache_roundtrip_and_reuse(ict_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGA_CACHE_DIR", str(tmp_path))
    a = load_ict(ict_dir, num_identity=5)
    files = list((tmp_path / "headmodels").glob("ict-*.npz"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr("sega.headmodel.ict.convert_ict", lambda *a, **k: calls.append(1))
    b = load_ict(ict_dir, num_identity=5)
    assert not calls  # second load came from the cache
    assert np.array_equal(a.faces, b.faces) and np.allclose(a.vertices, b.vertices)
    # the converting load returns exactly what later loads read (float16 storage), so results agree
    assert np.array_equal(a.expression_basis, b.expression_basis) and np.array_equal(a.identity_basis, b.identity_basis)
    assert b.licence.startswith("Head model: ICT-FaceKit") and "MIT" in b.licence


def test_missing_source_message(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGA_ICT_DIR", raising=False)
    monkeypatch.setenv("SEGA_CACHE_DIR", str(tmp_path))
    with pytest.raises(HeadModelError, match="ICT-FaceKit data not found"):
        load_ict()
    with pytest.raises(HeadModelError, match="not an ICT-FaceKit FaceXModel folder"):
        convert_ict(tmp_path)


def test_download_with_integrity(ict_dir, tmp_path):
    """The downloader fetches, verifies and resumes; a corrupted file is refused (file:// URL, no network)."""
    dest = tmp_path / "FaceXModel"
    base = ict_dir.resolve().as_uri() + "/"
    t0 = time.perf_counter()
    out = dl.download_ict(num_identity=2, base_url=base, dest=dest, show_progress=False)
    assert (out / "generic_neutral_mesh.obj").is_file() and (out / "identity001.obj").is_file()
    assert not (out / "identity002.obj").exists()
    assert not list(out.glob("*.part"))
    model = convert_ict(out, num_identity=2)
    assert model.num_identity == 2
    # corrupted source: a changed vertex line must be caught, and nothing left behind
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ict_dir.iterdir():
        (bad / f.name).symlink_to(f.resolve())
    (bad / "jawOpen.obj").unlink()
    (bad / "jawOpen.obj").write_text((ict_dir / "jawOpen.obj").read_text().replace("v ", "v 1", 1))
    dest2 = tmp_path / "dest2"
    with pytest.raises(HeadModelError, match="jawOpen.obj: vertex data checksum mismatch"):
        dl.download_ict(num_identity=1, base_url=bad.resolve().as_uri() + "/", dest=dest2, show_progress=False)
    assert not (dest2 / "jawOpen.obj").exists() and not list(dest2.glob("*.part"))
    assert time.perf_counter() - t0 < 120


def test_gaze_channels_turn_the_eyeballs(ict_model):
    """eyeLook* at weight 1 turn their eyeball about its centre by the full gaze angle (ICT's own shapes
    leave the eyeballs still): the front of the left eye moves towards +X (the subject's left) for
    eyeLookOut_L, up for eyeLookUp_L, and the other eye stays put."""
    import math

    from sega.headmodel.eyes import GAZE_PITCH_DEG, GAZE_YAW_DEG, sphere_centre

    v = np.asarray(ict_model.vertices, np.float64)
    left, right = ict_model.region_vertex_mask("eyeball_left"), ict_model.region_vertex_mask("eyeball_right")
    centre = sphere_centre(v[left])
    front = np.flatnonzero(left)[np.argmax(v[left, 2])]  # the cornea's apex

    def turned(name: str) -> np.ndarray:
        d = np.asarray(ict_model.expression_basis[ict_model.expression_index(name)], np.float64)
        assert np.abs(d[right]).max() < 1e-6  # the right eyeball does not move with a left-eye channel
        return v[front] + d[front] - centre

    rest = v[front] - centre
    out = turned("eyeLookOut_L")
    assert out[0] > rest[0] + 1e-3
    yaw = math.degrees(math.atan2(out[0], out[2]) - math.atan2(rest[0], rest[2]))
    assert yaw == pytest.approx(GAZE_YAW_DEG, abs=0.5)
    assert np.linalg.norm(out) == pytest.approx(np.linalg.norm(rest), rel=1e-3)  # a rotation: the radius stays
    up = turned("eyeLookUp_L")
    pitch = math.degrees(math.atan2(up[1], up[2]) - math.atan2(rest[1], rest[2]))
    assert pitch == pytest.approx(GAZE_PITCH_DEG, abs=0.5)
