"""Video input and output: a video file, a folder of frames or one image -> RGB frames; frames -> MP4.

Why imageio-ffmpeg: its wheel ships a static ffmpeg binary (offline, every platform), and we already
need it to write turntables; PyAV would add a second copy of the ffmpeg libraries (~30 MB) for
frame-accurate seeking we do not need (we read every frame once, in order).

Every failure is a ``VideoError`` (a ``SegaError``) naming the file and what is wrong: not a video,
no frames, truncated or damaged, frames too large, too many frames, too many decoded bytes in all.

Memory: every frame is kept decoded ([H, W, 3] uint8), so the frame count and the frame size alone do
not bound memory (a 51 KB 4096x4096 video of a few hundred frames decodes to gigabytes). Their product
is capped too: up front from the header (frame size x expected frame count; image headers for a
folder) and again while decoding (a running total, since headers can lie).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PhotoError, SegaError
from .io import load_photo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_FOLDER_FPS = 25.0  # frames per second assumed for a folder of frames
TRUNCATED_FRACTION = 0.9  # fewer decoded frames than this fraction of the header's count: truncated


class VideoError(SegaError, ValueError):
    """A driving video that cannot be read (the message says which file and why)."""


RGB_BYTES = 3  # bytes per decoded pixel ([H, W, 3] uint8)


@dataclass(frozen=True)
class VideoLimits:
    max_frames: int = 20_000  # frames read at most (about 11 minutes at 30 fps)
    max_pixels: int = 4096 * 4096  # per frame
    # Decoded frames in all (T * H * W * 3 bytes). 2 GiB holds ~11 minutes of 30 fps at 480p, ~45 s at
    # 1080p: more than any driving / evaluation clip needs, and small enough for a laptop's memory.
    max_total_bytes: int = 2 * 1024**3


@dataclass
class Frames:
    """Decoded RGB frames of one source."""

    frames: list[np.ndarray]  # T x [H, W, 3] uint8
    fps: float | None  # None for a single image
    source: str  # what was read
    kind: str  # "video" | "folder" | "image"

    def __len__(self) -> int:
        return len(self.frames)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _too_many_bytes(path: Path, total: float, limits: VideoLimits, when: str) -> VideoError:
    return VideoError(f"{path}: {when} {total / 2**30:.2f} GiB of decoded frames, over the "
                      f"{limits.max_total_bytes / 2**30:.2f} GiB limit; use a shorter or smaller video")


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image's header (no pixel is decoded); (0, 0) if unreadable (decoding reports it)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - load_photo gives the specific message when the frame is decoded
        return 0, 0


def _read_folder(path: Path, limits: VideoLimits, fps: float | None) -> Frames:
    files = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
    if not files:
        raise VideoError(f"{path}: the folder holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > limits.max_frames:
        raise VideoError(f"{path}: {len(files)} frames, more than the {limits.max_frames} allowed")
    sizes = [_header_size(f) for f in files]
    big = next(((f, w, h) for f, (w, h) in zip(files, sizes) if w * h > limits.max_pixels), None)
    if big is not None:
        raise VideoError(f"frame {big[0].name}: {big[1]}x{big[2]} pixels, larger than the {limits.max_pixels}-pixel limit")
    promised = sum(w * h * RGB_BYTES for w, h in sizes)
    if promised > limits.max_total_bytes:
        raise _too_many_bytes(path, promised, limits, "the frames' headers promise")
    frames, total = [], 0
    for f in files:
        try:
            frames.append(load_photo(f))
        except PhotoError as err:
            raise VideoError(f"frame {f.name}: {err}") from err
        total += frames[-1].nbytes
        if total > limits.max_total_bytes:  # a header that lied, or a file replaced since
            raise _too_many_bytes(path, total, limits, "decoding reached")
    shapes = {fr.shape for fr in frames}
    if len(shapes) > 1:
        raise VideoError(f"{path}: frames differ in size ({sorted(shapes)[:3]} ...)")
    return Frames(frames, fps or DEFAULT_FOLDER_FPS, str(path), "folder")


def _read_video(path: Path, limits: VideoLimits) -> Frames:
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
        meta = reader.get_meta_data()
    except Exception as err:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError ... for non-videos
        msg = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise VideoError(f"{path} is not a readable video (or it is truncated before its index): {msg}") from err
    fps = float(meta.get("fps") or 0.0)
    duration = float(meta.get("duration") or 0.0)
    size = meta.get("size") or (0, 0)
    if size[0] * size[1] > limits.max_pixels:
        reader.close()
        raise VideoError(f"{path}: frames of {size[0]}x{size[1]} pixels are larger than the {limits.max_pixels}-pixel limit")
    expected = duration * fps if math.isfinite(duration * fps) else 0.0  # frames the header promises (0: unknown)
    promised = size[0] * size[1] * RGB_BYTES * expected
    if promised > limits.max_total_bytes:
        reader.close()
        raise _too_many_bytes(path, promised, limits, f"its header promises ({size[0]}x{size[1]}, about {expected:.0f} frames)")
    frames: list[np.ndarray] = []
    total = 0
    try:
        for frame in reader:
            frames.append(np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[..., :3]))
            total += frames[-1].nbytes
            if len(frames) > limits.max_frames:
                raise VideoError(f"{path}: more than the {limits.max_frames} frames allowed")
            if total > limits.max_total_bytes:  # the header's duration or size understated the stream
                raise _too_many_bytes(path, total, limits, "decoding reached")
    except VideoError:
        raise
    except Exception as err:
        raise VideoError(f"{path} is truncated or damaged: decoding stopped after {len(frames)} frames ({type(err).__name__})") from err
    finally:
        reader.close()
    if not frames:
        raise VideoError(f"{path}: the video has no frames")
    if expected >= 2 and len(frames) < TRUNCATED_FRACTION * expected:
        raise VideoError(f"{path} is truncated: its header promises about {expected:.0f} frames, only {len(frames)} could be decoded")
    return Frames(frames, fps if fps > 0 else DEFAULT_FOLDER_FPS, str(path), "video")


def read_frames(path: str | Path, limits: VideoLimits = VideoLimits(), fps: float | None = None) -> Frames:
    """Read a video file, a folder of image frames (sorted by name) or a single image.

    fps: frame rate for a folder (default ``DEFAULT_FOLDER_FPS``); a video's own rate is used otherwise.
    Raises ``VideoError`` with a specific message.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"not found: {path}")
    if path.is_dir():
        return _read_folder(path, limits, fps)
    if _is_image(path):
        try:
            return Frames([load_photo(path)], None, str(path), "image")
        except PhotoError as err:
            raise VideoError(str(err)) from err
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    return _read_video(path, limits)


def write_video(path: str | Path, frames, fps: float) -> Path:
    """Write RGB uint8 frames [H, W, 3] (same size) as an H.264 MP4."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(str(path), fps=float(fps), macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(np.asarray(f, dtype=np.uint8))
    return path

