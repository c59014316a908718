"""Single-photo fitting: synthetic cases with known answers, and the astronaut photo."""

import json

import numpy as np
import pytest
import torch

from sega.fit import FitOptions, FitResult, fit_landmarks, fit_photo
from sega.landmarks import MP_NUM_LANDMARKS, mediapipe_groups
from sega.synthetic import random_case, similarity_align

NUM_SYNTHETIC = 20  # issue 2: at least 20 cases


@pytest.fixture(scope="module")
def synthetic_results(ict_model):
    rng = np.random.default_rng(1234)
    buf = ict_model.torch_buffers()
    face = ict_model.region_vertex_mask("face")
    rows = []
    for _ in range(NUM_SYNTHETIC):
        case = random_case(ict_model, rng, max_yaw_deg=30.0, noise_px=1.0)
        fit = fit_landmarks(ict_model, case.landmarks, (512, 512), FitOptions())
        with torch.no_grad():
            v = ict_model.deform(buf, torch.as_tensor(fit.identity), torch.as_tensor(fit.expression)).numpy()
        aligned = similarity_align(v[face], case.vertices[face])
        rows.append(
            {
                "mae": float(np.abs(fit.expression - case.expression).mean()),
                "vertex_mm": float(np.linalg.norm(aligned - case.vertices[face], axis=1).mean() * 1000),
                "yaw": case.yaw_deg,
            }
        )
    return rows


def test_embedding_ships_and_matches_model(ict_model):
    emb = ict_model.landmarks["mediapipe478"]
    assert len(emb) == MP_NUM_LANDMARKS and emb.valid.sum() >= 470
    b = emb.barycentrics[emb.valid]
    assert np.allclose(b.sum(1), 1, atol=1e-5) and (b >= -1e-6).all()
    # iris points lie on the eyeballs, the rest on skin
    eyes = ict_model.region_face_mask("eyeball_left", "eyeball_right")
    iris = [i for i in mediapipe_groups()["left_iris"] + mediapipe_groups()["right_iris"] if emb.valid[i]]
    assert eyes[emb.face_ids[iris]].all()
    # MediaPipe's "left" eye is the subject's left: +X
    buf = ict_model.torch_buffers()
    pts = emb.points(buf.vertices, buf.faces).numpy()
    assert pts[list(mediapipe_groups()["left_eye"]), 0].mean() > 0.02


@pytest.mark.slow
def test_synthetic_expression_mae(synthetic_results):
    mae = np.mean([r["mae"] for r in synthetic_results])
    assert mae <= 0.10, mae
    assert any(abs(r["yaw"]) > 15 for r in synthetic_results)


@pytest.mark.slow
def test_synthetic_face_vertex_error(synthetic_results):
    err = np.mean([r["vertex_mm"] for r in synthetic_results])
    assert err <= 2.0, err


def test_astronaut_fit(ict_model, astronaut, tmp_path):
    fit, det = fit_photo(astronaut, ict_model, FitOptions())
    assert fit.landmarks_detected.shape == (MP_NUM_LANDMARKS, 2)
    assert fit.nme <= 0.03, fit.nme
    assert (fit.expression >= 0).all() and (fit.expression <= 1).all()
    smile = fit.expression[ict_model.expression_index("mouthSmile_L")] + fit.expression[ict_model.expression_index("mouthSmile_R")]
    assert smile > 0.3  # she smiles
    # JSON round trip keeps everything the next stage needs
    fit.save(tmp_path / "fit.json")
    back = FitResult.load(tmp_path / "fit.json")
    assert np.allclose(back.camera.K, fit.camera.K) and np.allclose(back.identity, fit.identity, atol=1e-6)
    assert json.loads((tmp_path / "fit.json").read_text())["expression"]["jawOpen"] >= 0


def test_wrong_landmark_count_is_a_clear_error(ict_model):
    from sega.errors import SegaError

    with pytest.raises(SegaError, match="expected 478 landmarks"):
        fit_landmarks(ict_model, np.zeros((68, 2), np.float32), (512, 512))


def test_inner_lip_landmarks_part_when_the_jaw_opens(ict_model):
    """MediaPipe's inner-lip points sit on the upper and the lower lip (``split_inner_lips``): with the jaw
    open they part by about as much as the outer lip points do, so tracking can see an open mouth. (The
    shipped embeddings put both halves on the same triangles: 0.6 mm apart whatever the jaw did.)"""
    from sega.fit import surface_rows
    from sega.landmarks import INNER_LIP_LOWER, INNER_LIP_UPPER, load_view_embeddings

    emb = ict_model.landmarks["mediapipe478"]
    rest = surface_rows(ict_model, emb, ict_model.vertices)
    jaw = surface_rows(ict_model, emb, ict_model.expression_basis)[ict_model.expression_index("jawOpen")]
    outer_gap = np.linalg.norm((rest[0] + jaw[0]) - (rest[17] + jaw[17])) - np.linalg.norm(rest[0] - rest[17])
    for up, low in ((82, 87), (13, 14), (312, 317)):  # the middle of the lips (the corners stretch with the jaw too)
        assert np.linalg.norm(jaw[low]) > 5 * np.linalg.norm(jaw[up]), (up, low)  # the lower point follows the jaw
    assert min(np.linalg.norm(jaw[i]) for i in INNER_LIP_LOWER) > max(np.linalg.norm(jaw[i]) for i in INNER_LIP_UPPER)
    inner_gap = np.linalg.norm((rest[13] + jaw[13]) - (rest[14] + jaw[14])) - np.linalg.norm(rest[13] - rest[14])
    assert inner_gap > 0.8 * outer_gap > 0.02
    views = load_view_embeddings(ict_model)  # every view bin split too
    faces = np.asarray(ict_model.faces)
    moves = np.linalg.norm(np.asarray(ict_model.expression_basis[ict_model.expression_index("jawOpen")]), axis=1)
    lower_motion = moves[faces[views.face_ids[:, :, list(INNER_LIP_LOWER)]]].min(-1)  # [P, Y, 9]
    upper_motion = moves[faces[views.face_ids[:, :, list(INNER_LIP_UPPER)]]].max(-1)
    assert lower_motion.min() > upper_motion.max()
