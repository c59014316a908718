"""Download ICT-FaceKit's ``FaceXModel`` files from upstream into the cache, with integrity checks.

Integrity: ``ict_files.json`` (made by ``scripts/make_ict_manifest.py``) holds, for every file we
use, the SHA-256 of its ``v`` lines (the geometry we read) and, for files we read whole, the
SHA-256 of the file. Hashing the ``v`` lines lets the same manifest check both the upstream files
and the trimmed copies that keep only those lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from importlib import resources
from pathlib import Path

from ..errors import HeadModelError
from ..io import file_sha256
from .cache import cache_dir

ICT_UPSTREAM_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
ICT_BASE_URL = f"https://raw.githubusercontent.com/ICT-VGL/ICT-FaceKit/{ICT_UPSTREAM_COMMIT}/FaceXModel/"
DOWNLOAD_CHUNK = 1 << 16  # bytes per read
MAX_FILE_BYTES = 64 << 20  # no ICT file is near this; guards against a wrong URL serving something huge


def vertex_lines_sha256(path: Path) -> str:
    """SHA-256 of the file's ``v`` lines (each stripped, joined with newlines)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for ln in fh:
            if ln.startswith(b"v "):
                h.update(ln.rstrip(b"\r\n") + b"\n")
    return h.hexdigest()


def load_manifest() -> dict:
    """{filename: {"v_sha256": ..., "sha256": ... (whole-file, optional)}}."""
    return json.loads(resources.files("sega.headmodel").joinpath("ict_files.json").read_text())


def verify_file(path: Path, entry: dict, name: str | None = None) -> None:
    """Raise HeadModelError if ``path`` does not match its manifest entry (``name`` for messages)."""
    name = name or path.name
    if "sha256" in entry and file_sha256(path) != entry["sha256"]:
        raise HeadModelError(f"{name}: checksum mismatch (download corrupted or wrong file)")
    if "v_sha256" in entry and vertex_lines_sha256(path) != entry["v_sha256"]:
        raise HeadModelError(f"{name}: vertex data checksum mismatch (download corrupted or wrong file)")


def needed_files(num_identity: int, manifest: dict) -> list[str]:
    ids = [f"identity{i:03d}.obj" for i in range(num_identity)]
    fixed = [n for n in manifest if not n.startswith("identity")]
    return fixed + ids


def download_ict(num_identity: int = 50, base_url: str = ICT_BASE_URL, dest: Path | None = None, show_progress: bool = True) -> Path:
    """Fetch the files needed for ``num_identity`` components into ``dest`` (default: the cache).

    Files already present and valid are kept. Each file is downloaded to a temporary name,
    verified, then moved into place, so an interrupted download never leaves a bad file.
    Returns the folder.
    """
    from tqdm import tqdm

    dest = Path(dest) if dest is not None else cache_dir() / "ict-facekit" / "FaceXModel"
    dest.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    names = needed_files(num_identity, manifest)
    bar = tqdm(total=len(names), unit="file", desc="ICT-FaceKit", disable=not show_progress)
    for name in names:
        target = dest / name
        if target.is_file():
            try:
                verify_file(target, manifest[name])
                bar.update(1)
                continue
            except HeadModelError:
                target.unlink()
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(base_url + name, timeout=60) as resp, open(tmp, "wb") as out:
                total = 0
                for chunk in iter(lambda: resp.read(DOWNLOAD_CHUNK), b""):
                    total += len(chunk)
                    if total > MAX_FILE_BYTES:
                        raise HeadModelError(f"{name}: server sent more than {MAX_FILE_BYTES} bytes; refusing")
                    out.write(chunk)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise HeadModelError(f"could not download {base_url + name}: {err}") from err
        try:
            verify_file(tmp, manifest[name], name)
        except HeadModelError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        bar.update(1)
    bar.close()
    return dest
