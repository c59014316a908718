"""The example photo: ``skimage.data.astronaut()`` (public domain, bundled with scikit-image, offline)."""

from __future__ import annotations

from pathlib import Path

from .headmodel.cache import cache_dir

EXAMPLE_NAME = "astronaut.png"


def example_photo(dest_dir: Path | None = None) -> Path:
    """Write the example photo as a PNG (once) and return its path."""
    from PIL import Image
    from skimage import data

    dest = Path(dest_dir) if dest_dir is not None else cache_dir() / "examples"
    path = dest / EXAMPLE_NAME
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.astronaut()).save(path)
    return path
