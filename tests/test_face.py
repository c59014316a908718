"""sega.face: detection, landmarks, segmentation and the head crop (real MediaPipe models, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sega.errors import FaceNotFoundError
from sega.face import (
    FaceDetector,
    CHIN,
    LEFT_IRIS_CENTER,
    LOWER_LIP,
    MIN_FACE_WIDTH_PX,
    NO_FACE_MESSAGE,
    NOSE_TIP,
    NUM_LANDMARKS,
    RIGHT_IRIS_CENTER,
    UPPER_LIP,
    HeadCrop,
    head_crop,
    resample_square,
)


pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")  # from mediapipe's protobuf use


def _resized(img: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def astro_det(face_detector, astronaut):
    return face_detector.detect(astronaut)


def test_astronaut_landmarks(astro_det):
    d = astro_det
    lm = d.landmarks
    assert lm.shape == (NUM_LANDMARKS, 3) and lm.dtype == np.float32
    assert d.image_size == (512, 512)
    assert (lm[:, 0] > 0).all() and (lm[:, 0] < 512).all() and (lm[:, 1] > 0).all() and (lm[:, 1] < 512).all()
    # Eyes above the mouth, mouth above the chin; subject's right eye on the image left.
    eye_y = max(lm[RIGHT_IRIS_CENTER, 1], lm[LEFT_IRIS_CENTER, 1])
    assert eye_y < lm[NOSE_TIP, 1] < lm[UPPER_LIP, 1] < lm[LOWER_LIP, 1] < lm[CHIN, 1]
    assert lm[RIGHT_IRIS_CENTER, 0] < lm[NOSE_TIP, 0] < lm[LEFT_IRIS_CENTER, 0]
    assert 30 < d.eye_distance < 60  # the astronaut's eyes are ~43 px apart
    # Face is in the upper middle of the picture, about 90 px wide.
    x0, y0, x1, y1 = d.box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 220
    assert 70 < d.face_width < 130
    np.testing.assert_allclose(d.box, [*lm[:, :2].min(0), *lm[:, :2].max(0)])
    assert d.num_faces == 1 and d.score > 0.7 and d.other_boxes.shape == (0, 4)
    assert not any("faces found" in n for n in d.notes)
    assert d.detector_box is not None and 0.0 < d.detector_box[0] < lm[NOSE_TIP, 0] < d.detector_box[2]


def test_large_photo_maps_back_to_full_resolution(face_detector, astronaut, astro_det):
    big = _resized(astronaut, 2048)  # 4x: exercises the downscale-before-detection path
    d = face_detector.detect(big)
    assert d.image_size == (2048, 2048)
    err = d.landmarks[:, :2] - 4.0 * astro_det.landmarks[:, :2]
    assert (np.abs(np.median(err, axis=0)) < 1.5).all(), np.median(err, axis=0)  # no offset (measured ~0.5 px)
    assert np.median(np.abs(err)) < 2.0  # 2 px at 2048 = 0.5 px at 512
    assert 4 * 70 < d.face_width < 4 * 130


def test_pixel_convention_mirror(face_detector, astronaut, astro_det):
    """Mirroring the photo mirrors the landmarks as x -> W - x (pixel centres at +0.5, no offset)."""
    f = face_detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    d, w = astro_det, astronaut.shape[1]
    sums = [
        d.landmarks[RIGHT_IRIS_CENTER, 0] + f.landmarks[LEFT_IRIS_CENTER, 0],
        d.landmarks[LEFT_IRIS_CENTER, 0] + f.landmarks[RIGHT_IRIS_CENTER, 0],
        d.landmarks[NOSE_TIP, 0] + f.landmarks[NOSE_TIP, 0],
        d.landmarks[CHIN, 0] + f.landmarks[CHIN, 0],
        d.box[0] + f.box[2],
        d.box[2] + f.box[0],
    ]
    assert abs(np.mean(sums) - w) < 1.0, np.array(sums) - w  # measured ~0.15 px


def test_mirror_map_pairs_left_and_right_points():
    from sega.landmarks import mediapipe_groups, mediapipe_mirror

    m, groups = mediapipe_mirror(), mediapipe_groups()
    assert m.shape == (NUM_LANDMARKS,) and (m[m] == np.arange(NUM_LANDMARKS)).all(), "an involution"
    for left in ("left_eye", "left_eyebrow", "left_iris"):
        assert set(m[list(groups[left])].tolist()) == set(groups[left.replace("left", "right")])
    for whole in ("face_oval", "lips", "nose"):
        assert set(m[list(groups[whole])].tolist()) == set(groups[whole])
    assert m[NOSE_TIP] == NOSE_TIP and m[CHIN] == CHIN and m[RIGHT_IRIS_CENTER] == LEFT_IRIS_CENTER


def test_mirrored_tracking_is_flip_equivariant_and_close_to_plain(astronaut):
    """Tracking with ``mirror`` averages the frame's and the flipped frame's points, so tracking the
    flipped photo gives exactly the flipped result; and it stays within a pixel or two of the plain
    points (it only cancels FaceMesh's asymmetric bias)."""
    from sega.landmarks import mediapipe_mirror

    w = astronaut.shape[1]
    with FaceDetector() as det:
        plain = det.track(astronaut, mirror=False)
        det.reset_tracking()
        both = det.track(astronaut, mirror=True)
        det.reset_tracking()
        flipped = det.track(np.ascontiguousarray(astronaut[:, ::-1]), mirror=True)
    back = flipped[mediapipe_mirror()]
    back[:, 0] = w - back[:, 0]
    assert np.abs(back - both).max() < 1e-3
    shift = np.linalg.norm(both[:, :2] - plain[:, :2], axis=1)
    assert np.median(shift) < 1.5 and shift.max() < 6.0, (np.median(shift), shift.max())


@pytest.mark.parametrize("what", ["coffee", "gray"])
def test_no_face(face_detector, what):
    from skimage import data

    img = data.coffee() if what == "coffee" else np.full((1024, 1024, 3), 128, np.uint8)  # 1024: tiles run too
    with pytest.raises(FaceNotFoundError) as exc:
        face_detector.detect(img)
    assert str(exc.value) == NO_FACE_MESSAGE


def test_tiny_face_is_too_small(face_detector, astronaut):
    canvas = np.full((1024, 1024, 3), 255, np.uint8)
    canvas[600:856, 400:656] = _resized(astronaut, 256)  # face ~50 px wide, ~5% of the width
    with pytest.raises(FaceNotFoundError, match=rf"too small \(about \d+ px wide\).*at least {MIN_FACE_WIDTH_PX} px"):
        face_detector.detect(canvas)


def test_two_faces_picks_the_larger(face_detector, astronaut):
    canvas = np.full((600, 1100, 3), 255, np.uint8)
    canvas[50:562, 0:512] = astronaut  # face ~100 px wide
    canvas[100:400, 700:1000] = _resized(astronaut, 300)  # face ~55 px wide
    # MediaPipe's FaceMesh alone finds neither face here (its detector wants faces > ~14% of
    # the image), so this also exercises the mesh-on-an-upscaled-crop path.
    assert face_detector._mesh(canvas, 1100, 600) == []
    d = face_detector.detect(canvas)
    assert d.num_faces == 2
    assert any(n.startswith("2 faces found; using the largest") for n in d.notes)
    assert d.box[2] < 512  # the left (larger) face
    assert d.other_boxes.shape == (1, 4) and d.other_boxes[0, 0] > 700  # the other person's face, for the person mask
    assert d.landmarks.shape == (NUM_LANDMARKS, 3)
    assert np.isfinite(d.landmarks).all()
    # Same face as the astronaut alone, shifted down by 50 px.
    ref = face_detector.detect(astronaut).landmarks[:, :2] + [0.0, 50.0]
    assert np.median(np.abs(d.landmarks[:, :2] - ref)) < 2.0


def test_head_crop_roundtrip_and_content(astronaut, astro_det):
    hc = head_crop(astro_det, astronaut.shape)
    assert hc.size == 512
    np.testing.assert_allclose(hc.crop_to_photo @ hc.photo_to_crop, np.eye(3), atol=1e-12)
    in_crop = hc.landmarks_to_crop(astro_det.landmarks)
    back = hc.landmarks_to_photo(in_crop)
    np.testing.assert_allclose(back, astro_det.landmarks.astype(np.float64), atol=1e-6, rtol=0)
    # Face well inside the crop with room above for hair; z scaled like x.
    assert (in_crop[:, :2] > 50).all() and (in_crop[:, :2] < 462).all()
    assert in_crop[:, 1].min() > 0.25 * 512
    np.testing.assert_allclose(in_crop[:, 2], astro_det.landmarks[:, 2] * hc.scale, rtol=1e-6, atol=1e-4)
    out = hc.apply(astronaut)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    mask = hc.apply(np.ones(astronaut.shape[:2], np.float32), pad="constant", fill=0.0)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    # The astronaut crop pokes a few px above the photo: padding there, and valid_mask agrees.
    assert hc.origin[1] < 0
    valid = hc.valid_mask()
    assert valid[0].sum() == 0 and valid[-1].all() and (valid == valid[:, :1]).all()
    first = int(np.argmax(valid[:, 0]))  # first crop row inside the photo
    assert 0 < first < 20
    assert (mask[: first - 2] == 0).all() and np.allclose(mask[first + 2 :], 1.0, atol=1e-6)
    hc2 = HeadCrop.from_dict(hc.to_dict())
    np.testing.assert_allclose(hc2.photo_to_crop, hc.photo_to_crop, atol=1e-12)
    with pytest.raises(ValueError):
        hc.apply(astronaut[:100])


def test_apply_matches_landmarks_to_crop(astronaut, astro_det):
    """A bright dot resampled by apply() lands where landmarks_to_crop() says (sub-pixel)."""
    hc = head_crop(astro_det, astronaut.shape)
    img = np.zeros(astronaut.shape[:2], np.float32)
    img[150, 220] = 1.0  # pixel centre at (220.5, 150.5)
    out = hc.apply(img, resample="bilinear")
    ys, xs = np.mgrid[0 : hc.size, 0 : hc.size] + 0.5
    centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, hc.landmarks_to_crop(np.array([220.5, 150.5])), atol=0.05)


def test_resample_square_padding_modes():
    img = np.full((100, 100, 3), 200, np.uint8)
    edge = resample_square(img, -50, -50, 100, 64, pad="edge")
    const = resample_square(img, -50, -50, 100, 64, pad="constant", fill=7)
    assert (edge == 200).all()
    assert (const[:20, :20] == 7).all() and (const[-20:, -20:] == 200).all()


def test_segment_person(face_detector, astronaut, astro_det):
    m = face_detector.segment_person(astronaut)
    assert m.shape == (512, 512) and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    nose = astro_det.landmarks[NOSE_TIP]
    assert m[int(nose[1]), int(nose[0])] > 0.8  # the face is person
    assert m[:40, -40:].mean() < 0.2  # the top-right background is not


def test_detect_rejects_wrong_input(face_detector, astronaut):
    with pytest.raises(ValueError):
        face_detector.detect(astronaut.astype(np.float32))


def test_mesh_only_fallback_when_detectors_miss(monkeypatch, astronaut, astro_det):
    det = FaceDetector()
    try:
        monkeypatch.setattr(det, "_detect_boxes", lambda *a, **k: [])
        d = det.detect(astronaut)
    finally:
        det.close()
    assert np.isnan(d.score) and d.detector_box is None
    assert any("Only the landmark model" in n for n in d.notes)
    assert np.median(np.abs(d.landmarks[:, :2] - astro_det.landmarks[:, :2])) < 2.0


def test_face_without_landmarks_has_its_own_message(monkeypatch, astronaut):
    det = FaceDetector()
    try:
        monkeypatch.setattr(det, "_mesh", lambda *a, **k: [])
        with pytest.raises(FaceNotFoundError, match="features .* could not be located"):
            det.detect(astronaut)
    finally:
        det.close()


# ---- human or not (sega.face_check) ------------------------------------------------------------

DEV_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "dev-media" / "photos"


def _cat_face() -> np.ndarray:
    """A crop of scikit-image's cat that MediaPipe's detector and FaceMesh do take for a face
    (the whole photo is not found at all): 70% of it around the head, 256 px, rolled 15 degrees."""
    from PIL import Image
    from skimage import data

    img = data.chelsea()
    h, w = img.shape[:2]
    crop = Image.fromarray(img[int(0.05 * h) : int(0.95 * h), int(0.05 * w) : int(0.75 * w)])
    k = 256 / max(crop.size)
    crop = crop.resize((int(crop.width * k), int(crop.height * k)), Image.BICUBIC)
    return np.asarray(crop.rotate(15, resample=Image.BICUBIC, fillcolor=(128, 128, 128)))


def test_cat_is_refused_as_not_human(face_detector):
    """MediaPipe finds a face in the cat crop (the check is what refuses it), with its own message."""
    from skimage import data

    from sega.errors import NotHumanFaceError

    cat = _cat_face()
    with FaceDetector(require_human=False) as lenient:
        found = lenient.detect(cat)  # without the check: a "face" with a detector score
    assert found.score > 0.5
    with pytest.raises(NotHumanFaceError, match="No human face found"):
        face_detector.detect(cat)
    with pytest.raises(FaceNotFoundError):  # the whole photo: refused too (no face at all)
        face_detector.detect(data.chelsea())


def test_every_human_dev_photo_passes_the_human_check(face_detector):
    """People in photos, paintings, cartoons, anime and a statue (../shared/dev-media/photos) all pass,
    with a margin over the threshold."""
    from sega.face_check import MIN_HUMAN_EVIDENCE
    from sega.io import load_photo

    photos = sorted(DEV_PHOTOS.glob("*"))
    assert len(photos) >= 20, f"dev photos missing at {DEV_PHOTOS}"
    for p in photos:
        d = face_detector.detect(load_photo(p))
        assert d.human is not None and d.human.evidence >= MIN_HUMAN_EVIDENCE + 0.2, (p.name, d.human)


def test_level_face_crop_levels_the_eyes(astronaut, astro_det):
    """The HOG crop: eyes level whatever the photo's roll, face centred at HOG_FACE_PX."""
    from PIL import Image

    from sega.face_check import HOG_CROP_FACES, HOG_FACE_PX, level_face_crop

    rolled = np.asarray(Image.fromarray(astronaut).rotate(25, resample=Image.BICUBIC))
    with FaceDetector(require_human=False) as det:
        d = det.detect(rolled)
    crop = level_face_crop(rolled, d.landmarks, d.box)
    assert crop.shape == (round(HOG_CROP_FACES * HOG_FACE_PX),) * 2 + (3,)
    with FaceDetector(require_human=False) as det:
        dc = det.detect(crop)
    right, left = dc.landmarks[468, :2], dc.landmarks[473, :2]
    assert abs(np.degrees(np.arctan2(left[1] - right[1], left[0] - right[0]))) < 4.0
    assert abs(dc.face_width - HOG_FACE_PX) < 0.25 * HOG_FACE_PX
