"""Face detection, 478 face landmarks, person segmentation and the head crop.

Uses MediaPipe 0.10.14's legacy solutions (the models ship inside the wheel, so
this works offline): ``face_detection`` (full- and short-range models),
``face_mesh`` (``refine_landmarks=True``: 468 mesh points + 10 iris points) and
``selfie_segmentation``.

Coordinates are photo pixels in the continuous convention of ``sega.conventions``
(centre of pixel (row i, col j) at (j + 0.5, i + 0.5)), which is MediaPipe's
normalised (x * W, y * H).

Pipeline of ``FaceDetector.detect``:
    1. shrink the photo to at most ``max_side`` px and run both face detectors;
       if they find nothing, run FaceMesh on the whole image, then the full-range
       detector on overlapping tiles (finds faces < 6% of the image width, which
       the detectors miss on the whole image);
    2. keep the largest face; refuse it if narrower than ``min_face_width_px``;
    3. run FaceMesh on an upscaled square crop of the *full-resolution* photo around
       that face (FaceMesh's own detector only sees faces >~14% of its input, so
       it misses e.g. two people side by side) and map the landmarks back;
    4. check that the face is human (``sega.face_check``).

The head crop around the detected face is ``sega.head_crop`` (importable from here too).
"""

from __future__ import annotations

import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .errors import FaceNotFoundError, NotHumanFaceError
from .face_check import NOT_HUMAN_MESSAGE, HumanFaceEvidence, human_face_evidence
from .head_crop import HEAD_CROP_SIZE, HeadCrop, head_crop, resample_square  # noqa: F401 (importable from here, as before)
from .io import DETECTION_MAX_SIDE, downscale_for_detection
from .landmarks import mediapipe_mirror

NUM_LANDMARKS = 478  # FaceMesh with refine_landmarks=True
TRACKING_CONFIDENCE = 0.5  # video mode: below this landmark confidence the face detector runs again
TRACK_PASSES = 2  # video mode: FaceMesh runs on each frame this many times, each pass in the region of the last
# one's landmarks: the previous frame's region lags a turning head, and a misaligned crop moves the points
# (on renders turning up to 8 degrees a frame: head-pose error 2.5 -> 2.2 degrees for +4 ms a frame)
TRACK_MIRROR = True  # video mode: also track the flipped frame and average the two (re-indexed by
# sega.landmarks.mediapipe_mirror), which cancels FaceMesh's left-right asymmetric bias (mean head-pose error on
# the check videos of scripts/check_tracking.py 1.57 -> 1.36 degrees; +5 to 7 ms a frame with the worker thread)
# A few FaceMesh indices ("right"/"left" are the subject's, see sega.conventions).
RIGHT_IRIS_CENTER = 468  # subject's right eye: image left in a frontal photo
LEFT_IRIS_CENTER = 473
NOSE_TIP = 1
FOREHEAD_TOP = 10
CHIN = 152
UPPER_LIP = 13
LOWER_LIP = 14

MIN_FACE_WIDTH_PX = 64  # detector-box width in photo px; below this a face is refused as too small
SMALL_FACE_WIDTH_PX = 160  # below this a note warns that the avatar texture will be blurry
SMALL_FACE_NOTE = "The face is only about {width:.0f} px wide; the avatar will look blurry (at least {minimum} px recommended)."
MIN_DETECTION_CONFIDENCE = 0.5  # face-detector score threshold
MESH_CROP_SCALES = (2.4, 1.7)  # FaceMesh crop side / detector-box side, tried in order
MESH_CROP_SIZE = 512  # px, side of the crop FaceMesh sees
TILE_SIDE_PX = 640  # px, minimum tile side of the fallback tiled detection
TILE_DETECT_SIDE = 512  # px, tiles are shrunk to at most this before detection
NMS_IOU = 0.3  # boxes overlapping more than this are the same face
SEGMENTATION_MODEL = 0  # selfie segmentation: 0 = general (256x256, portraits), 1 = landscape (faster)

NO_FACE_MESSAGE = "No face found in the photo. Use a photo where one face is clearly visible, facing the camera."


def _import_mediapipe() -> Any:
    """Import mediapipe lazily (0.6 s); it pulls matplotlib, which wants a writable config dir."""
    if "MPLCONFIGDIR" not in os.environ:
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="sega-mpl-")
    import mediapipe as mp

    return mp


@dataclass
class Detection:
    """The face chosen in a photo. All coordinates in photo pixels (continuous, centres at +0.5)."""

    landmarks: np.ndarray  # [478, 3] float32; x, y in photo px (MediaPipe x*W, y*H); z relative depth, same px scale (z*W), smaller = nearer
    box: np.ndarray  # [4] float32 x0, y0, x1, y1 photo px: extent of the landmarks' x, y
    score: float  # face-detector confidence in [0, 1]; NaN if only FaceMesh saw the face
    num_faces: int  # faces found in the photo (the largest is used)
    image_size: tuple[int, int]  # (H, W) of the photo
    notes: list[str] = field(default_factory=list)  # human-readable remarks (several faces, small face, ...)
    detector_box: np.ndarray | None = None  # [4] x0, y0, x1, y1 photo px of the face detector (None if FaceMesh only)
    human: HumanFaceEvidence | None = None  # the human-face check (``sega.face_check``; None when not run)
    other_boxes: np.ndarray | None = None  # [K, 4] x0, y0, x1, y1 photo px: the other faces found (other people)

    @property
    def eye_distance(self) -> float:
        """Distance between the iris centres, photo px."""
        return float(np.linalg.norm(self.landmarks[LEFT_IRIS_CENTER, :2] - self.landmarks[RIGHT_IRIS_CENTER, :2]))

    @property
    def face_width(self) -> float:
        """Width of ``box`` (cheek to cheek), photo px."""
        return float(self.box[2] - self.box[0])


@dataclass
class _Face:
    """A candidate face: detector box in photo px, score, optional landmarks."""

    box: np.ndarray  # [4] x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None = None  # [478, 3]

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _nms(faces: list[_Face]) -> list[_Face]:
    """Merge duplicates (IoU > NMS_IOU), keeping the higher score; largest first."""
    kept: list[_Face] = []
    for f in sorted(faces, key=lambda f: -(f.score if not math.isnan(f.score) else -1.0)):
        if all(_iou(f.box, k.box) <= NMS_IOU for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: -f.width)


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    xy = landmarks[:, :2]
    return np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)


def _mirror_average(landmarks: np.ndarray | None, flipped: np.ndarray | None, width: int) -> np.ndarray | None:
    """Average landmarks [478, 3] with those found on the horizontally flipped image (its x, its point
    order), flipped back: x -> width - x and re-indexed by ``mediapipe_mirror``. Either may be None
    (not found): the other is returned."""
    if flipped is None:
        return landmarks
    back = flipped[mediapipe_mirror()].copy()
    back[:, 0] = width - back[:, 0]
    if landmarks is None:
        return back
    return ((landmarks + back) / 2).astype(np.float32)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


class FaceDetector:
    """Reusable face detector holding MediaPipe graphs (created on first use; not thread-safe).

    Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        max_side: int = DETECTION_MAX_SIDE,
        min_face_width_px: float = MIN_FACE_WIDTH_PX,
        min_confidence: float = MIN_DETECTION_CONFIDENCE,
        segmentation_model: int = SEGMENTATION_MODEL,
        require_human: bool = True,
    ) -> None:
        self.require_human = require_human  # refuse faces that sega.face_check finds not human (animals, objects)
        self.max_side = max_side
        self.min_face_width_px = min_face_width_px
        self.min_confidence = min_confidence
        self.segmentation_model = segmentation_model
        self._graphs: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None  # runs the flipped video stream (``track``)

    # -- graphs ---------------------------------------------------------------------------
    def _graph(self, name: str) -> Any:
        g = self._graphs.get(name)
        if g is None:
            mp = _import_mediapipe()
            if name == "detect_full":
                g = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=self.min_confidence)
            elif name == "detect_short":
                g = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=self.min_confidence)
            elif name == "mesh":
                g = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True, refine_landmarks=True, max_num_faces=5, min_detection_confidence=self.min_confidence
                )
            elif name in ("track", "track_mirror"):  # video mode, one graph per stream (frames, flipped frames):
                # landmarks from the last frame's region, detection only on loss
                g = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=False, refine_landmarks=True, max_num_faces=1,
                    min_detection_confidence=self.min_confidence, min_tracking_confidence=TRACKING_CONFIDENCE,
                )  # fmt: skip
            elif name == "segment":
                g = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=self.segmentation_model)
            else:  # pragma: no cover
                raise KeyError(name)
            self._graphs[name] = g
        return g

    def close(self) -> None:
        """Release the MediaPipe graphs (a later call recreates them)."""
        graphs, self._graphs = self._graphs, {}
        for g in graphs.values():
            g.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building blocks ------------------------------------------------------------------
    def _detect_boxes(
        self,
        img: np.ndarray,
        out_w: float,
        out_h: float,
        dx: float = 0.0,
        dy: float = 0.0,
        models: tuple[str, ...] = ("detect_full", "detect_short"),
    ) -> list[_Face]:
        """Run face detectors on img; boxes mapped to photo px via (x*out_w + dx, y*out_h + dy)."""
        faces = []
        for name in models:
            for d in self._graph(name).process(img).detections or []:
                b = d.location_data.relative_bounding_box
                box = np.array(
                    [b.xmin * out_w + dx, b.ymin * out_h + dy, (b.xmin + b.width) * out_w + dx, (b.ymin + b.height) * out_h + dy],
                    dtype=np.float32,
                )
                faces.append(_Face(box, float(d.score[0])))
        return faces

    def face_boxes(self, img: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """What MediaPipe's face detectors alone find (no landmark-model or tile fallback): a list of
        (box [4] x0, y0, x1, y1 in photo px, score) for img [H, W, 3] uint8, after non-maximum suppression."""
        img = _check_image(img)
        h, w = img.shape[:2]
        small, _ = downscale_for_detection(img, self.max_side)
        return [(f.box, f.score) for f in _nms(self._detect_boxes(np.ascontiguousarray(small), w, h))]

    def _mesh(self, img: np.ndarray, out_w: float, out_h: float, dx: float = 0.0, dy: float = 0.0) -> list[np.ndarray]:
        """FaceMesh on img -> list of [478, 3] float32 landmarks in photo px via (x*out_w+dx, y*out_h+dy, z*out_w)."""
        return self._mesh_with(self._graph("mesh"), img, out_w, out_h, dx, dy)

    def _mesh_with(self, graph: Any, img: np.ndarray, out_w: float, out_h: float, dx: float = 0.0, dy: float = 0.0) -> list[np.ndarray]:
        res = graph.process(img)
        out = []
        for lms in res.multi_face_landmarks or []:
            a = np.array([(p.x, p.y, p.z) for p in lms.landmark], dtype=np.float64)
            if a.shape[0] != NUM_LANDMARKS:  # pragma: no cover - refine_landmarks guarantees 478
                continue
            pts = np.stack([a[:, 0] * out_w + dx, a[:, 1] * out_h + dy, a[:, 2] * out_w], axis=1)
            out.append(pts.astype(np.float32))
        return out

    def _detect_tiles(self, img: np.ndarray) -> list[_Face]:
        """Full-range detector on overlapping tiles of the full-resolution photo (finds small faces)."""
        h, w = img.shape[:2]
        side = int(max(TILE_SIDE_PX, math.ceil(max(h, w) / 4)))
        if max(h, w) <= side * 1.2:
            return []
        stride = max(1, side // 2)

        def starts(n: int) -> list[int]:
            if n <= side:
                return [0]
            s = list(range(0, n - side, stride))
            return s + [n - side]

        faces = []
        for y in starts(h):
            for x in starts(w):
                tile = img[y : y + side, x : x + side]
                th, tw = tile.shape[:2]
                small, _ = downscale_for_detection(tile, TILE_DETECT_SIDE)
                faces += self._detect_boxes(np.ascontiguousarray(small), tw, th, x, y, models=("detect_full",))
        return faces

    def _refine(self, img: np.ndarray, face: _Face) -> np.ndarray | None:
        """FaceMesh on upscaled square crops of the full-res photo around face.box -> [478, 3] or None."""
        x0, y0, x1, y1 = (float(v) for v in face.box)
        cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
        for k in MESH_CROP_SCALES:
            side = k * s
            cx0, cy0 = cx - side / 2, cy - side / 2
            crop = resample_square(img, cx0, cy0, side, MESH_CROP_SIZE, pad="constant", fill=0)
            found = self._mesh(crop, side, side, cx0, cy0)
            # The crop may also hold part of a neighbour: take the mesh nearest the box centre.
            best, best_d = None, math.inf
            for lm in found:
                lb = _landmark_box(lm)
                mx, my = (lb[0] + lb[2]) / 2, (lb[1] + lb[3]) / 2
                if x0 <= mx <= x1 and y0 <= my <= y1:
                    d = math.hypot(mx - cx, my - cy)
                    if d < best_d:
                        best, best_d = lm, d
            if best is not None:
                return best
        return None

    # -- public ---------------------------------------------------------------------------
    def detect(self, img: np.ndarray) -> Detection:
        """Find the (largest) face in a photo.

        img: [H, W, 3] uint8 RGB photo at full resolution.
        Raises FaceNotFoundError when there is no face, or the largest is narrower than
        ``min_face_width_px`` (detector-box width in photo px), or its landmarks cannot be found.
        """
        img = _check_image(img)
        h, w = img.shape[:2]
        notes: list[str] = []
        small, _ = downscale_for_detection(img, self.max_side)
        small = np.ascontiguousarray(small)

        faces = _nms(self._detect_boxes(small, w, h))
        if not faces:  # detectors missed it: the landmark model's own pass, then small faces on tiles
            meshes = self._mesh(small, w, h)
            faces = _nms([_Face(_landmark_box(m), math.nan, m) for m in meshes])
            if not faces:
                faces = _nms(self._detect_tiles(img))
        if not faces:
            raise FaceNotFoundError(NO_FACE_MESSAGE)

        face = faces[0]
        if len(faces) > 1:
            notes.append(f"{len(faces)} faces found; using the largest ({face.width:.0f} px wide).")
        if face.width < self.min_face_width_px:
            raise FaceNotFoundError(
                f"The face in the photo is too small (about {face.width:.0f} px wide); it needs to be at least "
                f"{self.min_face_width_px:.0f} px wide. Use a closer or higher-resolution photo, or crop it around the face."
            )
        if face.width < SMALL_FACE_WIDTH_PX:
            notes.append(SMALL_FACE_NOTE.format(width=face.width, minimum=SMALL_FACE_WIDTH_PX))

        landmarks = self._refine(img, face)
        if landmarks is None:
            landmarks = face.landmarks
        if landmarks is None:
            raise FaceNotFoundError(
                "A face was found but its features (eyes, nose, mouth) could not be located. "
                "Use a sharp photo where the face is unobstructed and facing the camera."
            )
        human = None
        if self.require_human:
            human = human_face_evidence(img, landmarks, _landmark_box(landmarks), face.score)
            if not human.is_human:
                raise NotHumanFaceError(NOT_HUMAN_MESSAGE)
        if math.isnan(face.score):
            notes.append("Only the landmark model found this face (no detector score).")
        inside = (landmarks[:, 0] >= 0) & (landmarks[:, 0] <= w) & (landmarks[:, 1] >= 0) & (landmarks[:, 1] <= h)
        if inside.mean() < 0.95:
            notes.append("Part of the face is outside the photo; landmarks there are guesses.")
        return Detection(
            landmarks=landmarks.astype(np.float32),
            box=_landmark_box(landmarks),
            score=face.score,
            num_faces=len(faces),
            image_size=(h, w),
            notes=notes,
            detector_box=None if math.isnan(face.score) else face.box.copy(),
            human=human,
            other_boxes=np.array([f.box for f in faces[1:]], dtype=np.float32).reshape(-1, 4),
        )

    def track(self, img: np.ndarray, passes: int = TRACK_PASSES, mirror: bool = TRACK_MIRROR) -> np.ndarray | None:
        """Landmarks of the face in a video frame, [478, 3] float32 photo px, or None when lost.

        Uses MediaPipe FaceMesh in video mode: each frame's landmarks come from the region of the
        previous frame's face (the crop is reused), and the face detector only runs again when the
        landmark model's confidence drops below ``TRACKING_CONFIDENCE`` or the face is lost. The frame
        is fed ``passes`` times (``TRACK_PASSES``), so the last pass sees a crop placed from this frame's
        own landmarks. With ``mirror`` (``TRACK_MIRROR``) a second tracker follows the flipped frames and
        the two results are averaged; where only one of them finds the face, its points are returned.
        Frames must be fed in order; call ``reset_tracking()`` before another video.
        """
        img = _check_image(img)
        if not mirror:
            return self._track_pass("track", img, passes)
        for name in ("track", "track_mirror"):  # created here, not in two threads at once
            self._graph(name)
        # The flipped stream runs on a worker thread (MediaPipe releases the GIL): 30 -> 18 ms a frame on 2 cores.
        flipped = self._worker().submit(self._track_pass, "track_mirror", np.ascontiguousarray(img[:, ::-1]), passes)
        found = self._track_pass("track", img, passes)
        return _mirror_average(found, flipped.result(), img.shape[1])

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sega-mirror-track")
        return self._pool

    def _track_pass(self, name: str, img: np.ndarray, passes: int) -> np.ndarray | None:
        h, w = img.shape[:2]
        graph = self._graph(name)
        found: list[np.ndarray] = []
        for _ in range(max(1, passes)):
            found = self._mesh_with(graph, img, w, h)
            if not found:  # lost: a repeat would only run the detector again
                break
        return found[0] if found else None

    def reset_tracking(self) -> None:
        """Forget the tracked face (start of a new video)."""
        for name in ("track", "track_mirror"):
            g = self._graphs.pop(name, None)
            if g is not None:
                g.close()

    def segment_person(self, img: np.ndarray) -> np.ndarray:
        """Person (foreground) probability: img [H, W, 3] uint8 -> [H, W] float32 in [0, 1]."""
        img = _check_image(img)
        h, w = img.shape[:2]
        small, _ = downscale_for_detection(img, self.max_side)
        mask = np.asarray(self._graph("segment").process(np.ascontiguousarray(small)).segmentation_mask, dtype=np.float32)
        if mask.shape != (h, w):
            mask = np.asarray(Image.fromarray(mask, mode="F").resize((w, h), Image.Resampling.BILINEAR))
        return np.clip(mask, 0.0, 1.0).astype(np.float32)


def detect_face(img: np.ndarray) -> Detection:
    """One-off ``FaceDetector().detect(img)`` (builds and frees the graphs; reuse a FaceDetector for many photos)."""
    with FaceDetector() as det:
        return det.detect(img)


def segment_person(img: np.ndarray, detector: FaceDetector | None = None) -> np.ndarray:
    """Person mask [H, W] float32 in [0, 1] for img [H, W, 3] uint8 (selfie segmentation, general model)."""
    if detector is not None:
        return detector.segment_person(img)
    with FaceDetector() as det:
        return det.segment_person(img)
