"""``python -m sega train``: SEGA's prior trained on a prepared set, in stages, cross-frame, on one process or
many (``torchrun``, ``sega.train.distributed``).

Stages (``TrainOptions.static_steps``): first the identity encoder and the static decoder alone (the
dynamic branch adds nothing); then the dynamic decoder joins, fed the displacement VAE's expression feature of
each target frame. Each step draws ``batch`` samples per process (``sega.train.sampler``): identity from one
frame's unwrap, loss on another frame's render (``sega.train.scene``).

The output folder::

    OUT/config.json        the resolved TrainOptions, the set, the world size
    OUT/log.csv            per step: stage, loss (mean over ranks), l1, dssim, residual, seconds, samples/s
    OUT/val.csv            per validation: step, clip, frames, PSNR / SSIM with the prior and with zero residuals
    OUT/checkpoints/step-NNNNNN.npz, OUT/last.npz   prior files with the optimiser's state (``--resume``)
    OUT/prior.npz          the final prior (``sega build --prior OUT/prior.npz``)
    OUT/summary.json       steps, time, throughput, the last validation, each rank's parameter digest

Only rank 0 writes. A resumed run continues exactly: the weights, Adam's state and the step come from
``last.npz``, and every step's samples depend on (seed, step) alone.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import SegaError
from ..eval_frame import photo_scores
from ..nets.decoders import raw_residual
from ..nets.prior import SegaPrior, uv_input
from . import distributed as ddp_tools
from .options import RUN_ONLY_FIELDS, TrainOptions
from .sampler import PreparedClips, draw_samples, rank_slice, split_clips, validation_frames
from .scene import ClipScene, photo_loss

LAST_CHECKPOINT = "last.npz"
FINAL_PRIOR = "prior.npz"
EVAL_PERSON_THRESHOLD = 0.5  # eval's head mask: the person mask above this ...
EVAL_ALPHA_THRESHOLD = 0.5  # ... where the render draws (``sega.eval_frame.FrameScorer``)


class TrainError(SegaError, ValueError):
    """A training run cannot start or resume (a one-line reason)."""


def _what(options: TrainOptions) -> dict:
    return {k: v for k, v in options.to_dict().items() if k not in RUN_ONLY_FIELDS}


class Trainer:
    """One training run (one per process). ``run()`` trains to ``options.steps`` and returns the summary."""

    def __init__(self, dataset: str | Path, out_dir: str | Path, options: TrainOptions = TrainOptions(), resume: bool = False,
                 show_progress: bool = True):  # fmt: skip
        from ..avatar.build import atlas_regions, dynamic_decoder_options
        from ..avatar.options import AvatarOptions
        from ..avatar.texels import dynamic_texels
        from ..devices import resolve_device
        from ..headmodel import load_head_model
        from ..nets.decoders import AvatarDecoders, StaticDecoderOptions
        from ..nets.prior import IdentityEncoderOptions
        from ..uv import Atlas

        if options.steps < 1 or options.batch < 1 or not 0 <= options.static_steps:
            raise TrainError("steps and batch must be at least 1, static_steps at least 0")
        self.options, self.out = options, Path(out_dir)
        self.ctx, self.device = ddp_tools.init(resolve_device(options.device))
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        import numba

        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        torch.manual_seed(options.seed)
        self.data = PreparedClips(dataset, options.cache_shards)
        self.train_clips, self.val_clips = split_clips(self.data.clips, options.val_clips)
        head = self.data.manifest["head_model"]
        self.model = load_head_model(head["name"])
        if list(self.model.expression_names) != head["expression_names"]:
            raise TrainError(f"{dataset}: prepared with another version of the {head['name']} head model's expressions")
        self.atlas = Atlas.build(self.model, int(self.data.manifest["options"]["atlas_resolution"]), regions=atlas_regions(self.model))
        self.avatar_options = AvatarOptions.preset(options.preset)
        static_mask = ~dynamic_texels(self.model, self.atlas, self.avatar_options.dynamic_threshold_m)
        dyn_cfg = dynamic_decoder_options(self.avatar_options)
        made = AvatarDecoders.create(self.model, dynamic=dyn_cfg, device=self.device)
        self.encoder, self.vae_provenance = made.encoder, made.vae_provenance
        self.net = SegaPrior(IdentityEncoderOptions(uv_resolution=self.atlas.resolution), StaticDecoderOptions(), dyn_cfg)
        sta, dyn = np.flatnonzero(static_mask), np.flatnonzero(~static_mask)
        self.net.set_texel_uv(self.atlas.texel_uv[sta], self.atlas.texel_uv[dyn]).to(self.device)
        self.static_index = torch.as_tensor(sta, device=self.device)
        self.dynamic_index = torch.as_tensor(dyn, device=self.device)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimiser = torch.optim.Adam(self.params, lr=options.lr)
        self.step = 0
        if resume:
            self._resume()
        elif self.ctx.is_main and (self.out / LAST_CHECKPOINT).exists():
            raise TrainError(f"{self.out} holds a training run already; pass --resume to continue it, or use another folder")
        self.ddp = self.net
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # find_unused_parameters: the dynamic branch takes no part in the static stage
            self.ddp = DistributedDataParallel(self.net, device_ids=ids, find_unused_parameters=True)
        self.show_progress = show_progress and self.ctx.is_main
        self._scenes: dict[str, ClipScene] = {}
        self._inputs: dict[tuple[str, int], tuple] = {}

    # ---- data -----------------------------------------------------------------------------------------
    def scene(self, clip: str) -> ClipScene:
        if clip not in self._scenes:
            self._scenes[clip] = ClipScene(self.model, self.atlas, self.data.entry(clip), self.static_index, self.dynamic_index,
                                           self.avatar_options, self.device)  # fmt: skip
        return self._scenes[clip]

    def source(self, clip: str, k: int) -> tuple[torch.Tensor, object]:
        """(UV input [6, U, U], base maps) of a clip's unwrap k (cached)."""
        key = (clip, k)
        if key not in self._inputs:
            u = self.data.unwraps(clip)
            self._inputs[key] = (uv_input(self.atlas, u["colors"][k], u["confidence"][k]).to(self.device),
                                 self.scene(clip).base_maps(u["colors"][k], u["confidence"][k]))  # fmt: skip
        return self._inputs[key]

    def expression_features(self, expressions: list[np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder(torch.as_tensor(np.stack(expressions), dtype=torch.float32, device=self.device))

    # ---- one step -------------------------------------------------------------------------------------
    def batch_loss(self, step: int, dynamic: bool) -> tuple[torch.Tensor, dict]:
        """This rank's loss on the samples of ``step`` (``draw_samples``), and its parts (floats)."""
        o = self.options
        samples = rank_slice(draw_samples(self.data, self.train_clips, step, o.seed, o.batch * self.ctx.world_size),
                             self.ctx.rank, self.ctx.world_size)  # fmt: skip
        frames = [self.data.frame(s.clip, s.frame) for s in samples]
        uv = torch.stack([self.source(s.clip, s.source)[0] for s in samples])
        z = self.expression_features([f["expression"] for f in frames]) if dynamic else None
        res_static, res_dynamic = self.ddp(uv, z)
        photo, l1_sum, dssim_sum = 0.0, 0.0, 0.0
        for i, (s, f) in enumerate(zip(samples, frames)):
            scene = self.scene(s.clip)
            verts = scene.vertices(f["expression"], f["head_pose"])
            residual = scene.residual_rows(res_static[i], None if res_dynamic is None else res_dynamic[i])
            out = scene.render(self.source(s.clip, s.source)[1], residual, verts)
            target, weight = scene.targets(f["image"], f["mask"], verts, o.hair_margin)
            loss_i, l1, dssim = photo_loss(out.rgb, target, weight, o.w_l1, o.w_dssim)
            found = 1.0 if f["found"] else 0.0  # a frame without a face holds the last fit: no supervision there
            photo = photo + found * loss_i
            l1_sum, dssim_sum = l1_sum + float(l1.detach()), dssim_sum + float(dssim.detach())
        residual_reg = raw_residual(self.net.static, res_static).pow(2).mean()
        if res_dynamic is not None:
            residual_reg = residual_reg + raw_residual(self.net.dynamic, res_dynamic).pow(2).mean()
        loss = photo / len(samples) + o.w_residual * residual_reg
        return loss, {"loss": float(loss.detach()), "l1": l1_sum / len(samples), "dssim": dssim_sum / len(samples),
                      "residual": float(residual_reg.detach())}  # fmt: skip

    def _mean_over_ranks(self, stats: dict) -> dict:
        if not self.ctx.distributed:
            return stats
        import torch.distributed as dist

        t = torch.tensor(list(stats.values()), dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(stats, (t / self.ctx.world_size).tolist()))

    def train_step(self) -> dict:
        """One optimiser step on this step's samples -> the step's stats (mean over ranks)."""
        dynamic = self.step >= self.options.static_steps
        loss, stats = self.batch_loss(self.step, dynamic)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.step += 1
        return {"stage": "dynamic" if dynamic else "static", **self._mean_over_ranks(stats)}

    def fixed_batch_loss(self) -> float:
        """The loss on one fixed batch (step 0's samples), without training: the run's summary holds it at the start and
        the end, a like-for-like measure of what training did (a step's own loss moves with what it drew)."""
        with torch.no_grad():
            _, stats = self.batch_loss(0, self.step >= self.options.static_steps)
        return self._mean_over_ranks(stats)["loss"]

    # ---- validation -----------------------------------------------------------------------------------
    def validate(self) -> list[dict]:
        """Self-reenactment on the validation clips: each from its first unwrap, rendered at ``val_frames`` other
        frames with the prior's residuals and with none (the build's start without a prior), scored as eval scores."""
        rows = []
        self.net.eval()
        with torch.no_grad():
            for clip in self.val_clips:
                scene = self.scene(clip)
                uv, base = self.source(clip, 0)
                picks = validation_frames(self.data, clip, self.options.val_frames)
                frames = [self.data.frame(clip, i) for i in picks]
                res_s, res_d = self.net(uv[None].expand(len(frames), -1, -1, -1), self.expression_features([f["expression"] for f in frames]))
                scores: dict[str, list[float]] = {k: [] for k in ("psnr_db", "ssim", "psnr_db_zero", "ssim_zero")}
                for i, f in enumerate(frames):
                    verts = scene.vertices(f["expression"], f["head_pose"])
                    target, _ = scene.targets(f["image"], f["mask"], verts, self.options.hair_margin)
                    person = f["mask"] / 255.0 > EVAL_PERSON_THRESHOLD
                    for suffix, residual in (("", scene.residual_rows(res_s[i], res_d[i])), ("_zero", None)):
                        out = scene.render(base, residual, verts)
                        mask = person & (out.alpha[..., 0].cpu().numpy() > EVAL_ALPHA_THRESHOLD)
                        got, _ = photo_scores(out.rgb.cpu().numpy().clip(0, 1), target.cpu().numpy(), mask)
                        scores["psnr_db" + suffix].append(got["psnr_db"])
                        scores["ssim" + suffix].append(got["ssim"])
                rows.append({"step": self.step, "clip": clip, "frames": len(frames), **{k: float(np.mean(v)) for k, v in scores.items()}})
        self.net.train()
        return rows

    # ---- checkpoints ----------------------------------------------------------------------------------
    def header(self) -> dict:
        from ..nets.prior_file import head_model_info

        return {"head_model": head_model_info(self.model), "displacement_vae": self.vae_provenance, "atlas_resolution": self.atlas.resolution,
                "train": {"options": self.options.to_dict(), "step": self.step, "seed": self.options.seed, "world_size": self.ctx.world_size,
                          "dataset": {"path": str(self.data.root), "train_clips": self.train_clips, "val_clips": self.val_clips,
                                      "skipped": self.data.skipped}}}  # fmt: skip

    def optimiser_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for i, p in enumerate(self.params):
            state = self.optimiser.state.get(p)
            if state:
                out[f"{i}.step"] = np.asarray([float(state["step"])], np.float32)
                out[f"{i}.exp_avg"] = state["exp_avg"].detach().cpu().numpy()
                out[f"{i}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().numpy()
        return out

    def save_checkpoint(self) -> Path | None:
        from ..nets.prior_file import save_prior

        if not self.ctx.is_main:
            return None
        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = save_prior(folder / f"step-{self.step:06d}.npz", self.net, self.header(), self.optimiser_arrays())
        shutil.copyfile(path, self.out / (LAST_CHECKPOINT + ".tmp"))
        (self.out / (LAST_CHECKPOINT + ".tmp")).replace(self.out / LAST_CHECKPOINT)
        return path

    def _resume(self) -> None:
        from ..nets.prior_file import load_prior

        path = self.out / LAST_CHECKPOINT
        if not path.is_file():
            raise TrainError(f"{self.out}: nothing to resume (no {LAST_CHECKPOINT}); start without --resume")
        ckpt = load_prior(path, self.model, with_optimiser=True)
        saved = TrainOptions.from_dict(ckpt.header["train"]["options"])
        if _what(saved) != _what(self.options):
            diff = sorted(k for k, v in _what(saved).items() if _what(self.options).get(k) != v)
            raise TrainError(f"{path}: trained with other options ({', '.join(diff)} differ); resume with the same ones")
        if ckpt.net.configs() != self.net.configs():
            raise TrainError(f"{path}: its networks differ from what this set and preset make")
        self.net.load_state_dict(ckpt.net.state_dict())
        for i, p in enumerate(self.params):
            if f"{i}.exp_avg" in ckpt.optimiser:
                on = dict(dtype=torch.float32, device=p.device)
                self.optimiser.state[p] = {"step": torch.tensor(float(ckpt.optimiser[f"{i}.step"][0])),
                                           "exp_avg": torch.as_tensor(ckpt.optimiser[f"{i}.exp_avg"], **on).clone(),
                                           "exp_avg_sq": torch.as_tensor(ckpt.optimiser[f"{i}.exp_avg_sq"], **on).clone()}  # fmt: skip
        self.step = int(ckpt.header["train"]["step"])

    # ---- the run --------------------------------------------------------------------------------------
    def run(self) -> dict:
        from ..nets.prior_file import save_prior

        o = self.options
        log_path, val_path = self.out / "log.csv", self.out / "val.csv"
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            config = {"sega_version": __version__, "options": o.to_dict(), "dataset": str(self.data.root), "world_size": self.ctx.world_size,
                      "train_clips": self.train_clips, "val_clips": self.val_clips, "skipped_clips": self.data.skipped}  # fmt: skip
            (self.out / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        start_loss = self.fixed_batch_loss()
        start_step, t_start = self.step, time.perf_counter()
        last_val: list[dict] = []
        from tqdm import tqdm

        with tqdm(total=o.steps, initial=self.step, unit="step", disable=not self.show_progress) as bar:
            while self.step < o.steps:
                t0 = time.perf_counter()
                stats = self.train_step()
                secs = time.perf_counter() - t0
                row = {"step": self.step, **stats, "seconds": round(secs, 4),
                       "samples_per_s": round(o.batch * self.ctx.world_size / max(secs, 1e-9), 3)}  # fmt: skip
                if self.ctx.is_main:
                    _append_csv(log_path, row)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", stage=stats["stage"], refresh=False)
                bar.update(1)
                end = self.step >= o.steps
                if self.val_clips and (end or (o.val_every and self.step % o.val_every == 0)):
                    if self.ctx.is_main:
                        last_val = self.validate()
                        for r in last_val:
                            _append_csv(val_path, r)
                    ddp_tools.barrier(self.ctx)
                if end or (o.checkpoint_every and self.step % o.checkpoint_every == 0):
                    self.save_checkpoint()
        seconds = time.perf_counter() - t_start
        end_loss = self.fixed_batch_loss()
        digests = ddp_tools.gather_strings(self.ctx, ddp_tools.parameter_digest(self.net))
        summary = {"steps": self.step, "steps_this_run": self.step - start_step, "seconds": round(seconds, 2),
                   "steps_per_s": round((self.step - start_step) / max(seconds, 1e-9), 4),
                   "samples_per_s": round((self.step - start_step) * o.batch * self.ctx.world_size / max(seconds, 1e-9), 3),
                   "world_size": self.ctx.world_size, "backend": self.ctx.backend, "device": str(self.device),
                   "fixed_batch_loss": {"start": start_loss, "end": end_loss}, "rank_digests": digests, "ranks_equal": len(set(digests)) == 1, "validation": last_val,
                   "train_clips": self.train_clips, "val_clips": self.val_clips}  # fmt: skip
        if self.ctx.is_main:
            save_prior(self.out / FINAL_PRIOR, self.net, self.header())
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        ddp_tools.barrier(self.ctx)
        return summary

    def close(self) -> None:
        ddp_tools.finish(self.ctx)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def train(dataset: str | Path, out_dir: str | Path, options: TrainOptions = TrainOptions(), resume: bool = False,
          show_progress: bool = True) -> dict:  # fmt: skip
    """Train (or resume) a prior -> the run's summary (see the module docstring). Under torchrun every process calls this."""
    trainer = Trainer(dataset, out_dir, options, resume, show_progress)
    try:
        return trainer.run()
    finally:
        trainer.close()


__all__ = ["FINAL_PRIOR", "LAST_CHECKPOINT", "TrainError", "TrainOptions", "Trainer", "train"]
