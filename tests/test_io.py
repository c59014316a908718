"""sega.io: load_photo conversions and refusals, downscale, save_png."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from sega.errors import PhotoError, SegaError
from sega.io import OutputPathError, PhotoLimits, check_output_dir, check_output_file, downscale_for_detection, load_photo, save_png


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim width x height (CRC fixed); no big allocation."""
    data = bytearray(_encode(Image.new("L", (64, 64), 128), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


# -- good inputs ---------------------------------------------------------------------------


def test_path_and_bytes_give_same_rgb(astronaut, astronaut_path):
    a = load_photo(astronaut_path)
    b = load_photo(astronaut_path.read_bytes())
    c = load_photo(str(astronaut_path))
    assert a.dtype == np.uint8 and a.shape == (512, 512, 3)
    np.testing.assert_array_equal(a, astronaut)
    np.testing.assert_array_equal(b, astronaut)
    np.testing.assert_array_equal(c, astronaut)


def test_exif_orientation_6_is_applied():
    # Stored 120 wide x 80 high, red block in the stored top-left corner.
    arr = np.zeros((80, 120, 3), np.uint8)
    arr[:20, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = _encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    out = load_photo(data)
    assert out.shape == (120, 80, 3)  # transposed
    # Clockwise rotation moves the stored top-left corner to the displayed top-right.
    assert out[5, -5, 0] > 200 and out[5, -5, 1] < 60
    assert out[5, 5, 0] < 60


def test_grayscale_becomes_rgb():
    g = np.tile(np.arange(128, dtype=np.uint8)[None, :] * 2, (100, 1))
    out = load_photo(_encode(Image.fromarray(g, "L"), "PNG"))
    assert out.shape == (100, 128, 3)
    np.testing.assert_array_equal(out[..., 0], g)
    np.testing.assert_array_equal(out[..., 1], g)
    np.testing.assert_array_equal(out[..., 2], g)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :40, 3] = 255  # left half opaque
    rgba[:, 40:, 3] = 0  # right half transparent
    rgba[0, 0] = (0, 0, 0, 128)  # half transparent black -> mid grey
    out = load_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.shape == (80, 80, 3)
    np.testing.assert_array_equal(out[10, 10], (10, 20, 30))
    np.testing.assert_array_equal(out[10, 60], (255, 255, 255))
    assert abs(int(out[0, 0, 0]) - 127) <= 1


def test_la_is_composited_on_white():
    la = Image.merge("LA", (Image.new("L", (70, 70), 0), Image.new("L", (70, 70), 0)))
    out = load_photo(_encode(la, "PNG"))
    assert (out == 255).all()


def test_palette_and_palette_with_transparency(astronaut):
    pal = Image.fromarray(astronaut).quantize(64)
    out = load_photo(_encode(pal, "PNG"))
    assert out.shape == (512, 512, 3)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))
    assert np.abs(out.astype(int) - astronaut).mean() < 12

    p = Image.new("P", (64, 64), 0)
    p.putpalette([0, 0, 255, 255, 0, 0] + [0] * (256 * 3 - 6))
    p.paste(1, (0, 0, 32, 64))
    out = load_photo(_encode(p, "PNG", transparency=0))  # index 0 (blue) transparent
    np.testing.assert_array_equal(out[10, 10], (255, 0, 0))
    np.testing.assert_array_equal(out[10, 50], (255, 255, 255))


def test_cmyk():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48] = (200, 30, 40)
    rgb[:, 48:] = (20, 160, 90)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    out = load_photo(_encode(cmyk, "TIFF"))
    assert out.shape == (64, 96, 3)
    np.testing.assert_array_equal(out, rgb)
    out_jpeg = load_photo(_encode(cmyk, "JPEG", quality=95))
    assert np.abs(out_jpeg.astype(int) - rgb).max() < 12


def test_16bit_png_scaled_to_8bit():
    a = np.zeros((64, 64), np.uint16)
    a[:, :32] = 65535
    a[:, 32:] = 32896  # 128 * 257
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    out = load_photo(_encode(img, "PNG"))
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert (out[:, :32] == 255).all() and (out[:, 32:] == 128).all()


def test_32bit_int_image():
    a = np.full((64, 64), 257 * 200, np.int32)
    out = load_photo(_encode(Image.fromarray(a, "I"), "TIFF"))
    assert (out == 200).all()


# -- refusals: each with its own message ---------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(PhotoError, match="not found"):
        load_photo(tmp_path / "nope.jpg")


def test_folder_is_refused(tmp_path):
    with pytest.raises(PhotoError, match="folder"):
        load_photo(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(PhotoError, match=r"empty \(0 bytes\)"):
        load_photo(p)
    with pytest.raises(PhotoError, match="empty"):
        load_photo(b"")


def test_non_image_bytes(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is a text file pretending to be a photo\n" * 20)
    with pytest.raises(PhotoError, match=r"not an image file \(could not recognise the format\)"):
        load_photo(p)


def test_truncated_jpeg(astronaut):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _encode(Image.fromarray(astronaut), "JPEG", quality=90)
    with pytest.raises(PhotoError, match="truncated or corrupt"):
        load_photo(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png(astronaut):
    data = _encode(Image.fromarray(astronaut), "PNG")
    with pytest.raises(PhotoError, match="truncated or corrupt"):
        load_photo(data[: len(data) // 2])


@pytest.mark.parametrize("size", [(30000, 30000), (8000, 8000), (25000, 100)])
def test_huge_dimensions_refused_before_decoding(size):
    # The data holds 64x64 pixels only: a "too large" message proves the header check ran first.
    with pytest.raises(PhotoError, match="too large.*megapixels"):
        load_photo(_png_claiming_size(*size))


def test_patched_header_is_otherwise_valid():
    data = _png_claiming_size(64, 64)
    assert load_photo(data).shape == (64, 64, 3)


def test_tiny_image():
    with pytest.raises(PhotoError, match=r"too small \(50 x 40 px\).*at least 64 px"):
        load_photo(_encode(Image.new("RGB", (50, 40), "white"), "PNG"))


def test_file_size_limit(astronaut_path):
    limits = PhotoLimits(max_file_bytes=10_000)
    with pytest.raises(PhotoError, match="too large a file"):
        load_photo(astronaut_path, limits)
    with pytest.raises(PhotoError, match="too large a file"):
        load_photo(astronaut_path.read_bytes(), limits)


def test_custom_pixel_limit(astronaut_path):
    with pytest.raises(PhotoError, match=r"512 x 512 px"):
        load_photo(astronaut_path, PhotoLimits(max_pixels=100_000))


def test_limits_are_frozen():
    with pytest.raises(Exception):
        PhotoLimits().max_pixels = 1  # type: ignore[misc]


# -- helpers -------------------------------------------------------------------------------


def test_downscale_for_detection(astronaut):
    same, s = downscale_for_detection(astronaut, 1024)
    assert same is astronaut and s == 1.0
    big = np.zeros((3000, 1500, 3), np.uint8)
    small, s = downscale_for_detection(big, 1024)
    assert small.shape == (1024, 512, 3) and s == pytest.approx(1024 / 3000)


def test_save_png_roundtrip(tmp_path, astronaut):
    p = save_png(tmp_path / "sub" / "a.png", astronaut)
    np.testing.assert_array_equal(load_photo(p), astronaut)
    f = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    p2 = save_png(tmp_path / "f.png", f)
    back = np.asarray(Image.open(p2))
    assert back.dtype == np.uint8 and back[0, 0] == 0 and back[-1, -1] == 255
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", np.zeros((4, 4, 2), np.uint8))



# ---- output paths ------------------------------------------------------------------------------------
# Unwritable = under /proc (root writes through chmod-based permissions; the tests may run as root).
UNWRITABLE = Path("/proc/sega-test-no-such-folder")


def test_check_output_dir(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    new = tmp_path / "a" / "b"
    assert check_output_dir(new) == new and not (tmp_path / "a").exists()  # probed, nothing left behind
    assert check_output_dir(tmp_path) == tmp_path and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    with pytest.raises(OutputPathError, match="is an existing file, not a folder"):
        check_output_dir(blocker)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(blocker / "sub" / "dir")
    if Path("/proc").is_dir():
        with pytest.raises(OutputPathError, match="cannot create"):
            check_output_dir(UNWRITABLE)


def test_check_output_file(tmp_path):
    existing = tmp_path / "old.mp4"
    existing.write_bytes(b"keep me")
    assert check_output_file(existing) == existing and existing.read_bytes() == b"keep me"
    assert check_output_file(tmp_path / "x" / "new.mp4") and not (tmp_path / "x").exists()
    with pytest.raises(OutputPathError, match="is an existing folder, not a file"):
        check_output_file(tmp_path)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_file(existing / "out.mp4")
    if Path("/proc").is_dir():
        with pytest.raises(OutputPathError, match="cannot"):
            check_output_file(UNWRITABLE / "out.mp4")
        with pytest.raises(OutputPathError, match="cannot"):
            check_output_file("/proc/version")  # exists, cannot be written
    assert issubclass(OutputPathError, SegaError)
