"""Videos and image sequences -> a prepared training set (``sega.train.dataset``'s layout).

Per clip: the frames (every ``every``-th, at most ``max_frames``) are tracked with the product's tracker
(``sega.track``: one identity and camera per clip, expression and head pose per frame), cropped to one
square head crop for the whole clip (around every found face, so the crop and the camera stay fixed
while the head moves), resized to ``size``, segmented (person masks), and ``source_frames`` of them,
spread over the clip, are unwrapped into the head model's UV atlas: each texel's photo colour and how
well that frame saw it (``sega.avatar.build.unseen.photo_weight``: facing angle and distance from the
silhouette; 0 where hidden).

Clips run in parallel in a process pool (``workers``; each process loads the head model and MediaPipe
once). The set is resumable: the manifest is rewritten after every clip, and a clip whose files check out
against it is skipped; a clip that fails (unreadable, no face, a gap in its frame numbers) is recorded with
its one-line error and the others go on.

    python -m sega prepare VIDEO_OR_FOLDER ... -o DATASET [--size 256] [--workers 2]
"""

from __future__ import annotations

import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import __version__
from ..errors import SegaError
from ..avatar.build.unwrap import MASK_SCALE, unwrap_frame
from .dataset import (FORMAT, FORMAT_VERSION, SHARD_ARRAYS, SHARD_FRAMES, UNWRAP_ARRAYS, DatasetError, clip_files_ok, clip_id,
                      read_manifest, write_manifest, write_npz)  # fmt: skip

RUN_ONLY_OPTIONS = ("workers",)  # options that change how a set is made, not what it holds: a resume may change them
FRAME_NUMBER = re.compile(r"(\d+)$")  # the trailing number of an image-sequence frame's file name


@dataclass(frozen=True)
class PrepareOptions:
    """How clips are prepared. Stored, resolved, in the manifest; a set is only resumed with the same."""

    size: int = 256  # training resolution: the side of the square head crop (px)
    every: int = 1  # keep every K-th frame of the source
    max_frames: int = 0  # at most this many frames per clip (0: all)
    source_frames: int = 2  # frames per clip unwrapped into the UV atlas, spread evenly over the found frames
    atlas_resolution: int = 128  # the UV atlas the unwraps are taken in (texels per side)
    shard_frames: int = SHARD_FRAMES  # frames per shard file
    workers: int = 1  # clips prepared at once (a process pool of this many; 1: in this process)
    head_model: str = "ict"
    track_mirror: bool = False  # average each frame's landmarks with the mirrored frame's (slower)


class PrepareError(SegaError, ValueError):
    """A clip cannot be prepared (a clear one-line reason); the others go on."""


# ---- one clip ----------------------------------------------------------------------------------------


def check_frame_numbers(path: Path) -> None:
    """An image-sequence folder whose frames are numbered (``0001.png`` ...) must not skip a number."""
    if not path.is_dir():
        return
    from ..video import IMAGE_SUFFIXES

    numbers = []
    for f in path.iterdir():
        m = FRAME_NUMBER.search(f.stem) if f.suffix.lower() in IMAGE_SUFFIXES else None
        if m is None:
            return  # not a numbered sequence: nothing to check
        numbers.append(int(m.group(1)))
    numbers.sort()
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers)) if numbers else []
    if missing:
        raise PrepareError(f"{path}: frame {missing[0]} is missing (the frames are numbered {numbers[0]}..{numbers[-1]}, "
                           f"{len(missing)} absent)")  # fmt: skip


def clip_crop(landmarks: list, image_shape: tuple[int, int], size: int):
    """One head crop for the whole clip: around the box of every found face's landmarks."""
    from ..head_crop import head_crop

    pts = np.concatenate([lm[:, :2] for lm in landmarks if lm is not None])
    box = np.array([*pts.min(0), *pts.max(0)], np.float32)
    return head_crop(SimpleNamespace(box=box, image_size=tuple(image_shape[:2])), size=size)


def prepare_clip(path: Path, model, detector, atlas, options: PrepareOptions) -> tuple[dict, list[dict], dict]:
    """Track, crop, segment and unwrap one clip -> (clip info for the manifest, shards' arrays, unwrap arrays).
    Raises PrepareError (or another SegaError) with a one-line reason."""
    from ..avatar.build import crop_camera
    from ..errors import FaceNotFoundError
    from ..track import TrackOptions, detect_video_landmarks, track_landmarks
    from ..video import read_frames

    check_frame_numbers(path)
    t0 = time.perf_counter()
    stages: dict[str, float] = {}

    def lap(name: str, since: list[float] = [t0]) -> None:  # noqa: B006  (one clock per call of prepare_clip)
        now = time.perf_counter()
        stages[name] = round(now - since[0], 3)
        since[0] = now

    frames = read_frames(path)
    index = np.arange(0, len(frames), options.every)
    if options.max_frames:
        index = index[: options.max_frames]
    images = [frames.frames[i] for i in index]
    lap("read")
    landmarks, _ = detect_video_landmarks(images, detector, mirror=options.track_mirror)
    lap("landmarks")
    try:
        track = track_landmarks(model, landmarks, images[0].shape[:2], TrackOptions(), fps=frames.fps)
        lap("track")
    except FaceNotFoundError:
        raise PrepareError(f"{path}: no face found in {'any of its ' if len(images) > 1 else 'its '}{len(images)} frame"
                           + ("s" if len(images) > 1 else "") + " read") from None
    crop = clip_crop(landmarks, images[0].shape, options.size)
    persons = [detector.segment_person(img) for img in images]
    crops = np.stack([crop.apply(img) for img in images])
    masks = np.stack([np.clip(np.rint(crop.apply(p, pad="constant", fill=0.0) * MASK_SCALE), 0, MASK_SCALE) for p in persons]).astype(np.uint8)
    lap("crop_and_mask")
    found = np.flatnonzero(track.found)
    picks = found[np.unique(np.linspace(0, len(found) - 1, min(options.source_frames, len(found))).round().astype(int))]
    buffers = model.torch_buffers()
    unwraps = [unwrap_frame(model, atlas, buffers, track.identity, track.expressions[k], track.head_poses[k], track.camera, images[k],
                            persons[k], landmarks[k]) for k in picks]  # fmt: skip
    lap("unwrap")
    shards = []
    for s in range(0, len(images), options.shard_frames):
        sl = slice(s, s + options.shard_frames)
        shards.append({"images": crops[sl], "masks": masks[sl], "expressions": track.expressions[sl], "head_poses": track.head_poses[sl],
                       "found": track.found[sl], "frame_index": index[sl]})  # fmt: skip
    unwrap = {"frame_index": index[picks], "colors": np.stack([u[0] for u in unwraps]), "confidence": np.stack([u[1] for u in unwraps])}
    info = {
        "source": str(path),
        "frames": len(images),
        "frames_with_face": int(track.found.sum()),
        "source_frames": len(frames),
        "fps": None if frames.fps is None else float(frames.fps) / options.every,
        "identity": [float(v) for v in track.identity],
        "camera": crop_camera(track.camera, crop).to_dict(),
        "photo_camera": track.camera.to_dict(),
        "crop": crop.to_dict(),
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_by_stage": stages,
    }
    return info, shards, unwrap


def write_clip(root: Path, cid: str, info: dict, shards: list[dict], unwrap: dict) -> dict:
    """Write a clip's files into a fresh folder, then move it into place -> its manifest entry."""
    final, partial = root / "clips" / cid, root / "clips" / f".{cid}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    entry = dict(info)
    entry["shards"] = [write_npz(partial / f"shard-{i:05d}.npz", s, SHARD_ARRAYS) for i, s in enumerate(shards)]
    entry["unwrap"] = write_npz(partial / "unwrap.npz", unwrap, UNWRAP_ARRAYS)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return entry


# ---- a process's tools, and the pool ---------------------------------------------------------------------

_TOOLS: dict = {}  # per process: the head model, the atlas, the face detector (loaded once)


def _share_cores(workers: int) -> None:
    """A pool worker's initializer: its share of the cores. Why: each worker's default (every core) oversubscribes them."""
    import cv2
    import torch

    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _tools(options: PrepareOptions) -> dict:
    if not _TOOLS:
        from ..avatar.build import atlas_regions
        from ..face import FaceDetector
        from ..headmodel import load_head_model
        from ..landmarks import with_mediapipe_embedding
        from ..uv import Atlas

        model = with_mediapipe_embedding(load_head_model(options.head_model))
        _TOOLS.update(model=model, atlas=Atlas.build(model, options.atlas_resolution, regions=atlas_regions(model)),
                      detector=FaceDetector())  # fmt: skip
    return _TOOLS


def _run_clip(root: str, source: str, cid: str, options: PrepareOptions) -> tuple[str, dict | None, str | None]:
    """(clip id, manifest entry or None, error line or None): a failure never escapes a worker."""
    try:
        t = _tools(options)
        info, shards, unwrap = prepare_clip(Path(source), t["model"], t["detector"], t["atlas"], options)
        return cid, write_clip(Path(root), cid, info, shards, unwrap), None
    except SegaError as err:
        return cid, None, str(err)
    except Exception as err:  # noqa: BLE001  a bug or an odd file: recorded, the other clips go on
        return cid, None, f"{source}: unexpected {type(err).__name__}: {err}"


def _head_model_info(options: PrepareOptions) -> dict:
    from ..headmodel import load_head_model

    model = load_head_model(options.head_model)
    return {"name": options.head_model, "num_expressions": model.num_expressions, "expression_names": list(model.expression_names),
            "licence": model.licence}  # fmt: skip


def prepare(sources: list[str | Path], output: str | Path, options: PrepareOptions = PrepareOptions(), progress=None) -> dict:
    """Prepare every source (video file or frame folder) into ``output`` -> the manifest.

    Resumes: clips already in ``output``'s manifest whose files check out are skipped; failed ones are
    tried again. A set prepared with other options is refused (DatasetError). progress(done, total, cid)."""
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    resolved = asdict(options)
    names = {}
    for src in sources:
        cid = clip_id(str(src))
        while cid in names:  # two sources with one stem
            cid = f"{cid}_"
        names[cid] = str(src)
    if (root / "manifest.json").exists():
        manifest = read_manifest(root)
        def what(o: dict) -> dict:
            return {k: v for k, v in o.items() if k not in RUN_ONLY_OPTIONS}

        if what(manifest.get("options") or {}) != what(resolved):
            raise DatasetError(f"{root}: prepared with other options ({manifest.get('options')}); use a new folder or the same options")
    else:
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "sega_version": __version__, "options": resolved,
                    "head_model": _head_model_info(options), "clips": {}, "failed": {}}  # fmt: skip
        write_manifest(root, manifest)
    todo = [(cid, src) for cid, src in names.items()
            if not (cid in manifest["clips"] and clip_files_ok(root, cid, manifest["clips"][cid]))]  # fmt: skip
    done = len(names) - len(todo)
    if progress is not None:
        progress(done, len(names), None)

    def record(cid: str, entry: dict | None, error: str | None) -> None:
        nonlocal done
        manifest["failed"].pop(cid, None)
        manifest["clips"].pop(cid, None)
        if entry is not None:
            manifest["clips"][cid] = entry
        else:
            manifest["failed"][cid] = error
        write_manifest(root, manifest)  # after every clip: an interrupted run resumes from here
        done += 1
        if progress is not None:
            progress(done, len(names), cid)

    if options.workers <= 1 or len(todo) <= 1:
        for cid, src in todo:
            record(*_run_clip(str(root), src, cid, options))
    else:
        import multiprocessing

        # spawn: MediaPipe's and torch's threads do not survive a fork
        with ProcessPoolExecutor(options.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_share_cores,
                                 initargs=(options.workers,)) as pool:  # fmt: skip
            futures = [pool.submit(_run_clip, str(root), src, cid, options) for cid, src in todo]
            for fut in as_completed(futures):
                record(*fut.result())
    return manifest


__all__ = ["PrepareError", "PrepareOptions", "check_frame_numbers", "clip_crop", "prepare", "prepare_clip", "unwrap_frame", "write_clip"]
