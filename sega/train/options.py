"""``TrainOptions``: how ``sega train`` trains the prior (saved, resolved, in config.json and every checkpoint).
No heavy imports: the CLI's parser reads the defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

RUN_ONLY_FIELDS = ("steps", "val_every", "checkpoint_every", "cache_shards", "device", "threads")  # a resume may change these


@dataclass(frozen=True)
class TrainOptions:
    """How the prior is trained. Saved, resolved, in config.json and in every checkpoint."""

    steps: int = 2000  # optimiser steps in all
    static_steps: int = 500  # the first steps train the identity encoder and the static decoder only
    batch: int = 4  # samples per step per process
    lr: float = 1e-3  # Adam, constant (a resumed run continues the same schedule whatever ``steps`` says)
    w_l1: float = 0.8  # the build's photometric weights (``AvatarOptions``)
    w_dssim: float = 0.2
    w_residual: float = 1e-2  # mean square of the raw residuals (the build's ``w_residual``)
    hair_margin: float = 0.08  # loss region: mesh silhouette dilated by this fraction of the crop
    preset: str = "default"  # the avatar preset whose decoders (and scale bounds) the prior is made for
    val_clips: tuple[str, ...] = ()  # clips or persons held out for validation (empty: the last person, if two or more)
    val_every: int = 500  # validate every this many steps (and at the end; 0: at the end only)
    val_frames: int = 4  # frames per validation clip
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    cache_shards: int = 8  # decoded shards each process holds
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda" (each torchrun process takes GPU LOCAL_RANK)
    threads: int = 0  # torch and numba threads per process (0: leave torch's; torchrun sets OMP_NUM_THREADS=1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["val_clips"] = list(self.val_clips)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainOptions:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "val_clips" in kw:
            kw["val_clips"] = tuple(kw["val_clips"])
        return cls(**kw)


__all__ = ["RUN_ONLY_FIELDS", "TrainOptions"]
