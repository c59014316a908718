"""Photo loading and saving.

``load_photo`` turns whatever the user hands us (a path or the raw bytes of an
upload) into an ``[H, W, 3]`` uint8 sRGB array, or raises ``PhotoError`` with a
message meant for that user. It is deliberately strict about size *before*
decoding (decompression bombs) and about truncated files (Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched, so it stays False).

Conversions applied, in order:
    first frame only (GIF/TIFF/MPO) -> full decode -> EXIF orientation ->
    embedded ICC profile to sRGB (best effort; skipped if it fails) ->
    8-bit RGB. Transparent images (LA, RGBA, palette with transparency) are
    composited on a **white** background; 16-bit images are scaled by 1/257;
    CMYK goes through the ICC profile when present, else Pillow's naive formula.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PhotoError, SegaError

MAX_FILE_BYTES = 50 * 1024 * 1024  # 50 MiB
MAX_PIXELS = 50_000_000  # 50 megapixels
MAX_SIDE = 20_000  # px
MIN_SIDE = 64  # px
DETECTION_MAX_SIDE = 1024  # px, default for downscale_for_detection
BACKGROUND_RGB = (255, 255, 255)  # transparent pixels are composited on this colour


@dataclass(frozen=True)
class PhotoLimits:
    """What ``load_photo`` accepts. All checks except the last run before any pixel is decoded."""

    max_file_bytes: int = MAX_FILE_BYTES  # encoded file size in bytes; bigger files are not even read
    max_pixels: int = MAX_PIXELS  # width * height from the header; guards against decompression bombs
    max_side: int = MAX_SIDE  # px, longest side from the header (same reason)
    min_side: int = MIN_SIDE  # px, shortest side after EXIF rotation; smaller cannot hold a usable face


def _describe(source: str | Path | bytes) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "The uploaded data"
    return f"'{source}'"


def _open_source(source: str | Path | bytes, limits: PhotoLimits) -> tuple[io.BytesIO, str]:
    """Read the encoded bytes (after size checks) -> (buffer, human name)."""
    name = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise PhotoError(f"Photo not found: {name}. Check the file name and folder.")
        if path.is_dir():
            raise PhotoError(f"{name} is a folder, not an image file.")
        try:
            size = path.stat().st_size
        except OSError as err:
            raise PhotoError(f"Cannot read the photo {name}: {err.strerror or err}.") from err
        _check_file_size(size, name, limits)
        try:
            data = path.read_bytes()
        except PermissionError as err:
            raise PhotoError(f"Cannot read the photo {name}: permission denied.") from err
        except OSError as err:
            raise PhotoError(f"Cannot read the photo {name}: {err.strerror or err}.") from err
    else:
        raise TypeError(f"load_photo expects a path or bytes, not {type(source).__name__}")
    _check_file_size(len(data), name, limits)
    return io.BytesIO(data), name


def _check_file_size(size: int, name: str, limits: PhotoLimits) -> None:
    if size == 0:
        raise PhotoError(f"{name} is empty (0 bytes); it is not a photo.")
    if size > limits.max_file_bytes:
        raise PhotoError(
            f"{name} is too large a file ({size / 2**20:.1f} MB); the limit is "
            f"{limits.max_file_bytes / 2**20:.0f} MB. Save it as a smaller JPEG."
        )


def _too_large_message(width: int | None, height: int | None, limits: PhotoLimits) -> str:
    dims = f" ({width} x {height} px, {width * height / 1e6:.0f} megapixels)" if width and height else ""
    return (
        f"The photo is too large{dims}; the limit is {limits.max_pixels / 1e6:.0f} megapixels and "
        f"{limits.max_side} px per side. Resize it first."
    )


def _icc_to_srgb(img: Image.Image) -> Image.Image:
    """Convert using the embedded ICC profile (RGB/RGBA/CMYK only); unchanged on any failure."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        out = ImageCms.profileToProfile(img, src, dst, outputMode=out_mode)
        return out if out is not None else img
    except Exception:  # noqa: BLE001 - a broken profile must not make the photo unusable
        return img


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> [H, W, 3] uint8 RGB (alpha composited on BACKGROUND_RGB)."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            hi = float(arr.max()) if arr.size else 1.0
            arr = arr * 255.0 if hi <= 1.0 else arr * (255.0 / hi)
        elif mode == "I" and arr.size and arr.max() > 65535:
            arr = arr * (255.0 / float(arr.max()))
        else:
            arr = arr / 257.0  # 16-bit: 65535 -> 255
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "P":
        mode_to = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode_to)
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    if img.mode == "RGBA":
        arr = np.asarray(img).astype(np.float32)
        alpha = arr[..., 3:4] / 255.0
        bg = np.asarray(BACKGROUND_RGB, dtype=np.float32)
        rgb = arr[..., :3] * alpha + bg * (1.0 - alpha)
        return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load_photo(source: str | Path | bytes, limits: PhotoLimits = PhotoLimits()) -> np.ndarray:
    """Load a photo -> [H, W, 3] uint8 sRGB, upright (EXIF orientation applied).

    source: a file path or the encoded bytes (e.g. an upload).
    Raises ``PhotoError`` (with a message for the user) for: missing file, folder,
    empty file, file over ``limits.max_file_bytes``, unrecognised format, more than
    ``limits.max_pixels`` pixels or a side over ``limits.max_side`` (checked from the
    header, before decoding), truncated/corrupt data, a side under ``limits.min_side``.
    """
    buf, name = _open_source(source, limits)
    try:
        img = Image.open(buf)
    except UnidentifiedImageError as err:
        raise PhotoError(
            f"{name} is not an image file (could not recognise the format). Use a JPEG, PNG or WebP photo."
        ) from err
    except Image.DecompressionBombError as err:
        raise PhotoError(_too_large_message(None, None, limits)) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise PhotoError(f"{name} could not be opened as an image (the file header is damaged): {err}") from err

    with img:
        width, height = img.size
        if width * height > limits.max_pixels or max(width, height) > limits.max_side:
            raise PhotoError(_too_large_message(width, height, limits))
        try:
            img.seek(0)
            img.load()  # full decode now, so truncation surfaces here (LOAD_TRUNCATED_IMAGES stays False)
        except Image.DecompressionBombError as err:
            raise PhotoError(_too_large_message(width, height, limits)) from err
        except MemoryError as err:
            raise PhotoError(_too_large_message(width, height, limits)) from err
        except Exception as err:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib.error, ...
            raise PhotoError(
                f"{name} is damaged or incomplete (the image data is truncated or corrupt). "
                f"Re-save or re-download it. Details: {err}"
            ) from err
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - malformed EXIF: keep the stored orientation
            upright = img
        if upright is None:  # only returned with in_place=True, but be defensive
            upright = img
        upright = _icc_to_srgb(upright)
        arr = _to_rgb8(upright)

    h, w = arr.shape[:2]
    if min(h, w) < limits.min_side:
        raise PhotoError(
            f"The photo is too small ({w} x {h} px); each side must be at least {limits.min_side} px "
            f"(a usable face alone needs more than that)."
        )
    return arr


def downscale_for_detection(img: np.ndarray, max_side: int = DETECTION_MAX_SIDE) -> tuple[np.ndarray, float]:
    """Shrink so the longest side is at most ``max_side`` px (antialiased, aspect kept).

    img: [H, W, 3] uint8. Returns (img_small [h, w, 3] uint8, scale) with
    scale = max_side / max(H, W) <= 1 (small px = scale * photo px); (img, 1.0) when
    already small enough. Rounding makes the per-axis factor differ from ``scale`` by
    < 1 px over the image; map normalised coordinates with the full (W, H) to avoid it.
    """
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img, 1.0
    scale = max_side / float(max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(np.ascontiguousarray(img)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(small), scale


def save_png(path: str | Path, img: np.ndarray) -> Path:
    """Write an image as PNG (parent folders created). Returns the path.

    img: [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; uint8, or float in [0, 1]
    (clipped and rounded to 8 bits).
    """
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"save_png expects [H, W], [H, W, 3] or [H, W, 4], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"save_png expects uint8 or float in [0, 1], got {arr.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")
    return path


HASH_CHUNK_BYTES = 1 << 20  # read size when hashing files


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- output paths ------------------------------------------------------------------------------
# Commands check where they will write *before* any slow work (reading a video, loading models,
# building): a bad ``-o`` should fail in milliseconds, not after a build, and never as a traceback.

OUTPUT_PROBE_PREFIX = ".sega-write-probe-"  # temporary file created (and removed) to prove a folder is writable


class OutputPathError(SegaError, ValueError):
    """An output path that cannot be written (an existing file or folder in the way, no permission, ...)."""


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is not a folder (a file blocks creating ``path``), else None."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if os.path.isdir(parent) else parent
    return None


def _probe_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and missing parents) and a temporary file in it, then remove both again.

    Why a probe and not ``os.access``: it answers for the real file system (read-only mounts,
    ACLs, /proc, root's permissions), which ``os.access`` does not."""
    created = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"cannot create the {what} '{folder}': {err.strerror or err}") from err
    try:
        fd, probe = tempfile.mkstemp(prefix=OUTPUT_PROBE_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"cannot write in the {what} '{folder}': {err.strerror or err}") from err
    finally:
        for p in created:  # deepest first; leave nothing behind (the command creates them when it writes)
            with contextlib.suppress(OSError):
                p.rmdir()


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Refuse an output folder that cannot be written, before any work: an existing file, a path under
    a file, or a folder that cannot be created or written. Returns the path (not created)."""
    path = Path(path).expanduser()
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputPathError(f"the {what} '{path}' is an existing file, not a folder")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise OutputPathError(f"cannot create the {what} '{path}': '{blocker}' is a file, not a folder")
    _probe_folder(path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Refuse an output file that cannot be written, before any work: an existing folder, a path under a
    file, a parent folder that cannot be created or written, an existing file that cannot be opened for
    writing. Returns the path (nothing is created or changed)."""
    path = Path(path).expanduser()
    if os.path.isdir(path):
        raise OutputPathError(f"the {what} '{path}' is an existing folder, not a file")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise OutputPathError(f"cannot create the {what} '{path}': '{blocker}' is a file, not a folder")
    _probe_folder(path.parent, f"folder of the {what}")
    if os.path.lexists(path):
        try:
            with open(path, "ab"):  # append mode: opens for writing without changing the file
                pass
        except OSError as err:
            raise OutputPathError(f"cannot write the {what} '{path}': {err.strerror or err}") from err
    return path
