"""The head crop: a square, axis-aligned crop of the photo around the head, and square resampling.

Coordinates are photo pixels in the continuous convention of ``sega.conventions`` (centre of pixel
(row i, col j) at (j + 0.5, i + 0.5)); crop pixels use the same convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resample_square(
    img: np.ndarray,
    x0: float,
    y0: float,
    side: float,
    size: int,
    pad: Literal["edge", "constant"] = "edge",
    fill: float = 0,
    resample: str = "bicubic",
) -> np.ndarray:
    """Resample the square [x0, x0+side] x [y0, y0+side] (photo px, continuous) to size x size.

    Output pixel (row r, col c) has its centre at photo (x0 + (c+0.5)*side/size, y0 + (r+0.5)*side/size).
    img: [H, W] or [H, W, C], uint8 / float / bool (bool -> float32). Area outside the photo is
    filled by edge replication or with ``fill``. Antialiased when shrinking (Pillow ``resize`` with a box).
    Returns [size, size(, C)] of the input dtype (float32 for float/bool input).
    """
    arr = np.asarray(img)
    if arr.dtype == np.bool_ or (np.issubdtype(arr.dtype, np.floating) and arr.dtype != np.float32):
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.uint8, np.float32):
        raise ValueError(f"resample_square supports uint8, float and bool images, not {arr.dtype}")
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[..., None]
    h, w, c = arr.shape
    ratio = side / size  # photo px per output px
    margin = int(math.ceil(3 * max(1.0, ratio))) + 2  # filter support so borders are not renormalised
    ix0, iy0 = int(math.floor(x0)) - margin, int(math.floor(y0)) - margin
    ix1, iy1 = int(math.ceil(x0 + side)) + margin, int(math.ceil(y0 + side)) + margin
    sub = arr[max(iy0, 0) : max(min(iy1, h), 0), max(ix0, 0) : max(min(ix1, w), 0)]
    pads = (
        (max(0, -iy0), (iy1 - iy0) - max(0, -iy0) - sub.shape[0]),
        (max(0, -ix0), (ix1 - ix0) - max(0, -ix0) - sub.shape[1]),
        (0, 0),
    )
    if pad == "edge" and sub.size:
        padded = np.pad(sub, pads, mode="edge")
    else:
        padded = np.pad(sub, pads, mode="constant", constant_values=fill)
    box = (x0 - ix0, y0 - iy0, x0 + side - ix0, y0 + side - iy0)
    filt = _RESAMPLE[resample]
    if arr.dtype == np.uint8 and c in (3, 4):
        out = np.asarray(Image.fromarray(np.ascontiguousarray(padded)).resize((size, size), filt, box=box))
    else:
        mode = "L" if arr.dtype == np.uint8 else "F"
        chans = [
            np.asarray(Image.fromarray(np.ascontiguousarray(padded[..., k]), mode=mode).resize((size, size), filt, box=box))
            for k in range(c)
        ]
        out = np.stack(chans, axis=-1)
        if arr.dtype == np.float32 and arr.size:  # bicubic overshoot
            out = np.clip(out, min(float(arr.min()), fill), max(float(arr.max()), fill)).astype(np.float32)
    return out[..., 0] if squeeze else out


HEAD_CROP_MARGIN = 2.2  # crop side / face size (max side of the landmark box)
HEAD_CROP_SHIFT_UP = 0.1  # crop centre above the landmark-box centre, in face sizes (room for hair)
HEAD_CROP_SIZE = 512  # px, output side


@dataclass(frozen=True, eq=False)
class HeadCrop:
    """Square, axis-aligned crop of the photo around the head (scale + translation only).

    Crop pixels use the same continuous convention as photo pixels.
    """

    crop_to_photo: np.ndarray  # [3, 3] float64: homogeneous crop px (x, y, 1) -> photo px
    photo_to_crop: np.ndarray  # [3, 3] float64: inverse of crop_to_photo
    size: int  # px, side of the crop image
    photo_size: tuple[int, int]  # (H, W) of the photo it was made for

    @property
    def origin(self) -> tuple[float, float]:
        """Photo px (x, y) of the crop's top-left corner."""
        return float(self.crop_to_photo[0, 2]), float(self.crop_to_photo[1, 2])

    @property
    def side(self) -> float:
        """Side of the crop square in photo px."""
        return float(self.crop_to_photo[0, 0]) * self.size

    @property
    def scale(self) -> float:
        """Crop px per photo px."""
        return float(self.photo_to_crop[0, 0])

    def apply(
        self, img: np.ndarray, pad: Literal["edge", "constant"] = "edge", fill: float = 0, resample: str = "bicubic"
    ) -> np.ndarray:
        """Crop an image aligned with the photo ([H, W] or [H, W, C], uint8/float) -> [size, size(, C)]."""
        if tuple(np.shape(img)[:2]) != tuple(self.photo_size):
            raise ValueError(f"image is {np.shape(img)[:2]}, the crop was made for a photo of {self.photo_size}")
        x0, y0 = self.origin
        return resample_square(img, x0, y0, self.side, self.size, pad=pad, fill=fill, resample=resample)

    def _map(self, points: np.ndarray, m: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1] not in (2, 3):
            raise ValueError(f"points must be [..., 2] or [..., 3], got {p.shape}")
        out = p.copy()
        out[..., :2] = p[..., :2] @ m[:2, :2].T + m[:2, 2]
        if p.shape[-1] == 3:
            out[..., 2] = p[..., 2] * m[0, 0]  # depth in the same pixel scale as x
        return out

    def landmarks_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo px [..., 2|3] -> crop px (float64); z (if any) is rescaled like x."""
        return self._map(points, self.photo_to_crop)

    def landmarks_to_photo(self, points: np.ndarray) -> np.ndarray:
        """Crop px [..., 2|3] -> photo px (float64); inverse of ``landmarks_to_crop``."""
        return self._map(points, self.crop_to_photo)

    def valid_mask(self) -> np.ndarray:
        """[size, size] float32: 1 where the crop pixel centre lies inside the photo, else 0 (padding)."""
        c = (np.arange(self.size) + 0.5) * (self.side / self.size)
        x0, y0 = self.origin
        h, w = self.photo_size
        xs, ys = x0 + c, y0 + c
        return ((ys[:, None] >= 0) & (ys[:, None] < h) & (xs[None, :] >= 0) & (xs[None, :] < w)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"crop_to_photo": self.crop_to_photo.tolist(), "size": self.size, "photo_size": list(self.photo_size)}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadCrop":
        m = np.asarray(d["crop_to_photo"], dtype=np.float64)
        return cls(m, np.linalg.inv(m), int(d["size"]), (int(d["photo_size"][0]), int(d["photo_size"][1])))


def head_crop(
    detection,  # sega.face.Detection
    image_shape: tuple[int, ...] | None = None,
    margin: float = HEAD_CROP_MARGIN,
    shift_up: float = HEAD_CROP_SHIFT_UP,
    size: int = HEAD_CROP_SIZE,
) -> HeadCrop:
    """Square head crop: side = margin * face size, centred shift_up * face size above the face centre.

    Face size = max(width, height) of ``detection.box`` (landmark extent, photo px). With the
    defaults the crop reaches ~0.7 face sizes above the forehead landmarks (hair) and
    ~0.4 below the chin (neck). image_shape: (H, W, ...) of the photo; defaults to
    ``detection.image_size``. Parts outside the photo are padded by ``HeadCrop.apply``.
    """
    hw = detection.image_size if image_shape is None else (int(image_shape[0]), int(image_shape[1]))
    x0, y0, x1, y1 = (float(v) for v in detection.box)
    face = max(x1 - x0, y1 - y0)
    if not face > 0:
        raise ValueError("detection box is empty")
    side = margin * face
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - shift_up * face
    s = side / size  # photo px per crop px
    crop_to_photo = np.array([[s, 0.0, cx - side / 2], [0.0, s, cy - side / 2], [0.0, 0.0, 1.0]])
    photo_to_crop = np.array([[1 / s, 0.0, -(cx - side / 2) / s], [0.0, 1 / s, -(cy - side / 2) / s], [0.0, 0.0, 1.0]])
    return HeadCrop(crop_to_photo, photo_to_crop, int(size), (int(hw[0]), int(hw[1])))
