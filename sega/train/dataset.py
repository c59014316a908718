"""The prepared training set on disk: a manifest, and per clip its shards and its UV unwraps.

Layout (``FORMAT`` version ``FORMAT_VERSION``; no pickles anywhere: ``.npz`` files are read with
``allow_pickle=False``, so a hostile set cannot run code)::

    DATASET/
      manifest.json               format, version, the resolved PrepareOptions, the head model, and per clip:
                                  its source, frame count, fps, identity [I], camera (K, viewmat, crop size),
                                  the crop (photo <-> crop px), and every file with its SHA-256 and size;
                                  clips that failed: their one-line error
      clips/<clip>/shard-00000.npz  ``SHARD_FRAMES`` frames each (the last may hold fewer):
          images       [F, S, S, 3] uint8   head crop, S = options.size
          masks        [F, S, S]    uint8   person probability x 255
          expressions  [F, E]       float32 tracked expression weights
          head_poses   [F, 6]       float32 axis-angle radians + metres, relative to the clip's camera
          found        [F]          bool    a face was found in the frame (else the track holds the last fit)
          frame_index  [F]          int32   index in the source video
      clips/<clip>/unwrap.npz     the chosen source frames unwrapped into the head model's UV atlas:
          frame_index  [K]          int32
          colors       [K, T, 3]    uint8   the photo's colour at each atlas texel (T texels)
          confidence   [K, T]       uint8   x 255: how well that frame saw the texel (0: not seen)

A multi-view capture maps onto it as one clip per camera of one identity: each camera's frames are a
clip (their own camera and crop), and the clips share the person's name before ``@`` in their ids
(``person@cam03``), which the trainer reads as one identity.

Shards are small and self-describing, so a large set streams: a reader opens one shard at a time and
checks its checksum before it trusts it (``load_shard``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import SegaError

FORMAT = "sega-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_FRAMES = 64  # frames per shard: ~12 MB at 256 px, small enough to stream, large enough to read fast
SHARD_ARRAYS = {"images": np.uint8, "masks": np.uint8, "expressions": np.float32, "head_poses": np.float32,
                "found": np.bool_, "frame_index": np.int32}  # fmt: skip
UNWRAP_ARRAYS = {"frame_index": np.int32, "colors": np.uint8, "confidence": np.uint8}
CLIP_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")  # ids are folder names: no separators, no '..'
HASH_CHUNK = 1 << 20
DEFLATE_LEVEL = 1  # shards' zlib level: 1 writes 512 px frames ~1.6x faster than numpy's default (6) for ~2% more bytes


class DatasetError(SegaError, ValueError):
    """A prepared set, or one of its files, is missing, damaged or not of this format."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def clip_id(name: str) -> str:
    """A clip id from a source name (its stem): unsafe characters become '_'."""
    stem = re.sub(r"[^A-Za-z0-9_.@-]", "_", Path(name).stem)[:128].strip(".") or "clip"
    return stem


def write_npz(path: Path, arrays: dict[str, np.ndarray], spec: dict[str, type]) -> dict:
    """Write ``arrays`` (exactly the names of ``spec``, cast to its dtypes) compressed, atomically
    (a temporary name, then a rename) -> the file's manifest entry {file, sha256, bytes}."""
    if set(arrays) != set(spec):
        raise ValueError(f"expected arrays {sorted(spec)}, got {sorted(arrays)}")
    tmp = path.with_name(path.name + ".tmp")
    # np.savez_compressed's layout (one deflated NAME.npy per array), at a faster deflate level than its default
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL) as zf:
        for k, v in arrays.items():
            with zf.open(f"{k}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(v, dtype=spec[k]), allow_pickle=False)
    os.replace(tmp, path)
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def load_npz(path: Path, entry: dict, spec: dict[str, type]) -> dict[str, np.ndarray]:
    """Read a shard or unwrap file after checking its size and SHA-256 against its manifest ``entry``;
    its arrays must be exactly ``spec``'s, of those dtypes, with one leading length. Raises DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing (the manifest lists it); prepare this clip again")
    if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
        raise DatasetError(f"{path}: damaged (its size or SHA-256 differs from the manifest's); prepare this clip again")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{path}: not a readable array file ({err})") from None
    if set(out) != set(spec) or any(out[k].dtype != np.dtype(t) for k, t in spec.items()):
        raise DatasetError(f"{path}: holds {sorted((k, str(v.dtype)) for k, v in out.items())}, expected {sorted(spec)}")
    if len({len(v) for v in out.values()}) != 1:
        raise DatasetError(f"{path}: its arrays disagree on the number of frames")
    return out


def read_manifest(root: str | Path) -> dict:
    """The manifest of a prepared set, checked for format and version. Raises DatasetError."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{root}: not a prepared set (no {MANIFEST}); run `python -m sega prepare` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise DatasetError(f"{path}: format version {manifest.get('version')}, this sega reads {FORMAT_VERSION}; prepare the set again")
    for cid in manifest.get("clips", {}):
        if not CLIP_ID.match(cid) or cid in (".", ".."):
            raise DatasetError(f"{path}: clip id {cid!r} is not a plain name")
    return manifest


def write_manifest(root: Path, manifest: dict) -> None:
    """Write the manifest atomically (a reader never sees half of it)."""
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def clip_files_ok(root: Path, cid: str, entry: dict) -> bool:
    """Every file of a prepared clip is there with its manifest size and SHA-256 (a resumed run skips it)."""
    folder = root / "clips" / cid
    files = [*entry.get("shards", []), entry.get("unwrap")]
    try:
        return all(f is not None and (folder / f["file"]).stat().st_size == f["bytes"] and sha256_file(folder / f["file"]) == f["sha256"]
                   for f in files)  # fmt: skip
    except (OSError, KeyError, TypeError):
        return False


def load_shard(root: str | Path, cid: str, index: int, manifest: dict | None = None) -> dict[str, np.ndarray]:
    """Shard ``index`` of clip ``cid``, checked (``load_npz``)."""
    manifest = read_manifest(root) if manifest is None else manifest
    entry = manifest["clips"].get(cid)
    if entry is None:
        raise DatasetError(f"{root}: no clip {cid!r}")
    if not 0 <= index < len(entry["shards"]):
        raise DatasetError(f"{root}: clip {cid!r} has {len(entry['shards'])} shards, not {index + 1}")
    f = entry["shards"][index]
    return load_npz(Path(root) / "clips" / cid / f["file"], f, SHARD_ARRAYS)


def load_unwrap(root: str | Path, cid: str, manifest: dict | None = None) -> dict[str, np.ndarray]:
    """The UV unwraps of clip ``cid``'s source frames, checked (``load_npz``)."""
    manifest = read_manifest(root) if manifest is None else manifest
    entry = manifest["clips"].get(cid)
    if entry is None:
        raise DatasetError(f"{root}: no clip {cid!r}")
    return load_npz(Path(root) / "clips" / cid / entry["unwrap"]["file"], entry["unwrap"], UNWRAP_ARRAYS)


def usable_clips(root: str | Path, manifest: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """(clip ids whose every file checks out, {clip id: why not} for the others, failed ones included):
    a damaged shard takes its clip out of training, not the whole set."""
    manifest = read_manifest(root) if manifest is None else manifest
    good, bad = [], dict(manifest.get("failed", {}))
    for cid, entry in sorted(manifest.get("clips", {}).items()):
        if clip_files_ok(Path(root), cid, entry):
            good.append(cid)
        else:
            bad[cid] = "a file is missing or damaged (size or SHA-256 differs from the manifest)"
    return good, bad


__all__ = [
    "FORMAT", "FORMAT_VERSION", "MANIFEST", "SHARD_ARRAYS", "SHARD_FRAMES", "UNWRAP_ARRAYS", "DatasetError", "clip_files_ok",
    "clip_id", "load_npz", "load_shard", "load_unwrap", "read_manifest", "sha256_file", "usable_clips", "write_manifest", "write_npz",
]
