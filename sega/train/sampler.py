"""The training view of a prepared set: which clips train and which validate, what each step draws, and a small
cache of shards, so that a set larger than memory streams.

Samples are drawn per step from a generator seeded with (seed, step) alone: the step's global batch is
``batch x world_size`` samples, and rank r takes its own slice of them (the data is sharded across ranks, no
two ranks train on one sample). So a resumed run draws exactly what an uninterrupted one would have.

A sample is (clip, source unwrap, target frame): the clip uniformly, one of its unwrapped source frames, and a
target frame that is not the source frame (cross-frame) when the clip has another.

Clips of one person share the id before ``@`` (``sega.train.dataset``: one clip per camera of a multi-view
capture). The validation split holds whole persons: by default the last person in id order when the set has
two or more, so that validation always sees someone the prior never trained on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetError, load_shard, load_unwrap, read_manifest, usable_clips

SEED_STRIDE = 1_000_003  # step seeds: seed * this + step (a prime, so runs with nearby seeds draw unrelated batches)


@dataclass(frozen=True)
class Sample:
    clip: str
    source: int  # index into the clip's unwraps
    frame: int  # target frame index within the clip


def person_of(clip: str) -> str:
    """The person a clip shows: its id before '@' (the whole id without one)."""
    return clip.split("@", 1)[0]


def split_clips(clips: list[str], val_clips: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(train, val) clip ids: ``val_clips`` names clips or persons to hold out; empty: the last person's clips when
    there are two persons or more, else none."""
    if val_clips:
        unknown = [v for v in val_clips if v not in clips and v not in {person_of(c) for c in clips}]
        if unknown:
            raise DatasetError(f"validation clips {unknown} are not usable clips of this set ({', '.join(clips[:8])})")
        val = [c for c in clips if c in val_clips or person_of(c) in val_clips]
    else:
        persons = sorted({person_of(c) for c in clips})
        val = [c for c in clips if len(persons) > 1 and person_of(c) == persons[-1]]
    train = [c for c in clips if c not in val]
    if not train:
        raise DatasetError("no clip is left to train on after the validation split")
    return train, val


class PreparedClips:
    """Reads a prepared set's usable clips (``usable_clips``: a damaged or failed clip is left out, with its
    reason in ``skipped``), with at most ``cache_shards`` decoded shards held at a time."""

    def __init__(self, root: str | Path, cache_shards: int = 8):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.clips, self.skipped = usable_clips(self.root, self.manifest)
        if not self.clips:
            why = "; ".join(f"{c}: {w}" for c, w in list(self.skipped.items())[:3])
            raise DatasetError(f"{self.root}: no usable clip ({why or 'the set is empty'})")
        self.shard_frames = int(self.manifest["options"]["shard_frames"])
        self.cache_shards = max(1, cache_shards)
        self._shards: OrderedDict[tuple[str, int], dict] = OrderedDict()
        self._unwraps: dict[str, dict] = {}

    def entry(self, clip: str) -> dict:
        return self.manifest["clips"][clip]

    def frames(self, clip: str) -> int:
        return int(self.entry(clip)["frames"])

    def frame(self, clip: str, index: int) -> dict[str, np.ndarray]:
        """One frame's arrays (image, mask, expression, head_pose, found, frame_index), from its shard."""
        key = (clip, index // self.shard_frames)
        shard = self._shards.pop(key, None)
        if shard is None:
            shard = load_shard(self.root, clip, key[1], self.manifest)
            while len(self._shards) >= self.cache_shards:
                self._shards.popitem(last=False)
        self._shards[key] = shard  # most recently used last
        row = index % self.shard_frames
        return {"image": shard["images"][row], "mask": shard["masks"][row], "expression": shard["expressions"][row],
                "head_pose": shard["head_poses"][row], "found": bool(shard["found"][row]), "frame_index": int(shard["frame_index"][row])}

    def unwraps(self, clip: str) -> dict[str, np.ndarray]:
        """The clip's unwraps (small: kept once read)."""
        if clip not in self._unwraps:
            self._unwraps[clip] = load_unwrap(self.root, clip, self.manifest)
        return self._unwraps[clip]

    def source_frame(self, clip: str, source: int) -> int:
        """The clip-frame position of unwrap ``source`` (its frame_index is the video's; positions count kept frames)."""
        video_index = int(self.unwraps(clip)["frame_index"][source])
        every = int(self.manifest["options"]["every"])
        return video_index // every


def draw_samples(data: PreparedClips, clips: list[str], step: int, seed: int, count: int) -> list[Sample]:
    """The ``count`` samples of one step (the same for every rank and every resumed run)."""
    gen = torch.Generator().manual_seed(seed * SEED_STRIDE + step)
    u = torch.rand(count, 3, generator=gen, dtype=torch.float64).numpy()
    out = []
    for uc, us, uf in u:
        clip = clips[min(int(uc * len(clips)), len(clips) - 1)]
        n_src = len(data.unwraps(clip)["frame_index"])
        source = min(int(us * n_src), n_src - 1)
        n = data.frames(clip)
        src_pos = data.source_frame(clip, source)
        if n > 1:  # any frame but the source: draw among n - 1 and skip over it
            frame = min(int(uf * (n - 1)), n - 2)
            frame += frame >= src_pos
        else:
            frame = 0
        out.append(Sample(clip, source, frame))
    return out


def rank_slice(samples: list[Sample], rank: int, world: int) -> list[Sample]:
    """Rank ``rank``'s share of a step's global batch (contiguous, equal sizes)."""
    per = len(samples) // world
    return samples[rank * per : (rank + 1) * per]


def validation_frames(data: PreparedClips, clip: str, count: int) -> list[int]:
    """Up to ``count`` frames spread over the clip, the first source frame's excluded (self-reenactment targets)."""
    src = data.source_frame(clip, 0)
    others = [i for i in range(data.frames(clip)) if i != src] or [src]
    pick = np.unique(np.linspace(0, len(others) - 1, min(count, len(others))).round().astype(int))
    return [others[i] for i in pick]


__all__ = ["PreparedClips", "Sample", "draw_samples", "person_of", "rank_slice", "split_clips", "validation_frames"]
