"""Decoded-size cap of ``sega.video.read_frames``: frame size x frame count, from the header and while decoding.

Cheap on purpose: small synthetic videos and folders, with a low ``VideoLimits.max_total_bytes``
instead of gigabytes.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from sega.video import RGB_BYTES, VideoError, VideoLimits, read_frames

SIDE = 1024  # px: a high-resolution frame that compresses to almost nothing when flat
FRAMES = 12
FPS = 12.0
FRAME_BYTES = SIDE * SIDE * RGB_BYTES
LIMIT = 4 * FRAME_BYTES  # decoded bytes allowed in the tests: 4 of the 12 frames
MAX_REFUSAL_PEAK_BYTES = 2 * FRAME_BYTES  # refusing from the header decodes (almost) nothing


@pytest.fixture(scope="module")
def big_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "flat.mp4"
    with imageio.get_writer(str(path), fps=FPS, macro_block_size=1) as w:
        for i in range(FRAMES):
            w.append_data(np.full((SIDE, SIDE, 3), 40 + 10 * i, np.uint8))
    assert path.stat().st_size < 200_000  # a tiny file that decodes to FRAMES * 3 MiB
    return path


def test_default_limit_is_named_and_bounded():
    assert VideoLimits().max_total_bytes == 2 * 1024**3


def test_video_over_the_decoded_cap_is_refused_from_its_header(big_video):
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(VideoError, match="header promises") as err:
        read_frames(big_video, VideoLimits(max_total_bytes=LIMIT))
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "\n" not in str(err.value) and str(big_video) in str(err.value) and "GiB" in str(err.value)
    assert peak < MAX_REFUSAL_PEAK_BYTES and seconds < 5.0, (peak, seconds)


def test_video_whose_header_understates_is_stopped_while_decoding(big_video, monkeypatch):
    """A header without a duration promises nothing; the running total stops decoding at the cap."""
    real = imageio.get_reader

    def reader_without_duration(*args, **kwargs):
        reader = real(*args, **kwargs)
        meta = dict(reader.get_meta_data(), duration=0.0)
        reader.get_meta_data = lambda *a, **k: meta
        return reader

    monkeypatch.setattr(imageio, "get_reader", reader_without_duration)
    with pytest.raises(VideoError, match="decoding reached"):
        read_frames(big_video, VideoLimits(max_total_bytes=LIMIT))


def test_video_within_the_cap_reads(big_video):
    frames = read_frames(big_video, VideoLimits(max_total_bytes=FRAMES * FRAME_BYTES))
    assert len(frames) == FRAMES and frames.frames[0].shape == (SIDE, SIDE, 3)


def test_folder_over_the_decoded_cap_is_refused_from_image_headers(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((SIDE, SIDE, 3), 10 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    with pytest.raises(VideoError, match="headers promise"):
        read_frames(tmp_path, VideoLimits(max_total_bytes=LIMIT))
    with pytest.raises(VideoError, match="larger than the"):
        read_frames(tmp_path, VideoLimits(max_pixels=SIDE * SIDE - 1))
    assert len(read_frames(tmp_path, VideoLimits(max_total_bytes=6 * FRAME_BYTES))) == 6
