"""Train SEGA's displacement VAE on the head model's expression space and ship the checkpoint.

Why a script (and not a download): the VAE is learned only from ICT-FaceKit's own expression
blendshapes, so anyone with the head model can rebuild the shipped checkpoint bit for bit
(same seed, same thread count, same machine) on a CPU in minutes.

Training samples random expressions (sparse 1..8 active weights, some dense ones, the one-hots
and the zero vector; ``sega.nets.vae.sample_expressions``) and fits the decoded UV displacement
map, sampled at the vertices, to the linear blendshapes ``expr @ expression_basis``. Then it
evaluates the float16 checkpoint on a separate fixed-seed held-out set and records config,
seed, basis hash and errors in the checkpoint's provenance.

Usage: python scripts/train_displacement_vae.py [--threads 2] [--steps N] [--seed S] [--out PATH] [--ict-dir DIR]
Default output: sega/data/ict_displacement_vae.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import sega  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads libgomp

import numpy as np
import torch

from sega.headmodel.ict import load_ict
from sega.nets.vae import (
    CHECKPOINT_FORMAT_VERSION,
    DisplacementVAEOptions,
    default_checkpoint_path,
    evaluate_displacement_vae,
    expression_basis_sha256,
    heldout_expressions,
    load_displacement_vae,
    save_displacement_vae,
    train_displacement_vae,
    with_overrides,
)

SCRIPT_NAME = "scripts/train_displacement_vae.py"
DEFAULT_THREADS = 2  # torch intra-op threads; results are reproducible for a fixed thread count
LOG_EVERY = 100  # training steps between log lines


def state_sha256(state: dict) -> str:
    """sha256 over a state dict's tensors (sorted keys, dtype, shape, bytes): a reproducibility fingerprint."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ict-dir", type=Path, help="ICT-FaceKit FaceXModel folder (default $SEGA_ICT_DIR)")
    ap.add_argument("--out", type=Path, default=None, help=f"checkpoint path (default {default_checkpoint_path()})")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (fix it for reproducibility)")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default from DisplacementVAEOptions)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default from DisplacementVAEOptions)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--eval-count", type=int, default=None, help="held-out expressions (default 500)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    config = with_overrides(DisplacementVAEOptions(), seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                            eval_count=args.eval_count)
    out = args.out or default_checkpoint_path()

    model = load_ict(args.ict_dir)
    print(f"head model {model.name}: {model.num_vertices} vertices, {model.num_expressions} expressions")
    print("config", json.dumps(config.to_dict()))

    def log(step: int, stats: dict) -> None:
        print(f"step {step:5d}  loss {stats['loss']:.4f}  vertex {stats['vertex_loss']:.4f} ({config.loss}, mm)  kl {stats['kl']:.2f}  "
              f"lr {stats['lr']:.2e}  {stats['seconds']:.0f}s", flush=True)

    start = time.perf_counter()
    vae = train_displacement_vae(model, config, log=log, log_every=LOG_EVERY)
    train_seconds = time.perf_counter() - start
    print(f"trained {config.steps} steps in {train_seconds:.1f} s")

    heldout = heldout_expressions(config)
    float32_errors = evaluate_displacement_vae(vae, model, heldout)
    provenance = {
        "script": SCRIPT_NAME,
        "checkpoint_format_version": CHECKPOINT_FORMAT_VERSION,
        "seed": config.seed,
        "training_steps": config.steps,
        "threads": args.threads,
        "head_model": model.name,
        "head_model_source": {k: v for k, v in model.source.items() if k != "vertex_ids"},
        "expression_names": list(model.expression_names),
        "expression_basis_sha256": expression_basis_sha256(model),
        "num_vertices": model.num_vertices,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "heldout_float32": float32_errors,
        "licence": model.licence,
        "weights_dtype": "float16",
    }
    save_displacement_vae(vae, out, provenance)
    # The numbers that matter are those of the shipped (float16) weights: reload and evaluate them.
    shipped = load_displacement_vae(model, out)
    errors = evaluate_displacement_vae(shipped, model, heldout)
    provenance["heldout"] = errors
    provenance["state_sha256"] = state_sha256({k: v.half() if v.is_floating_point() and k != "vertex_uv" else v
                                               for k, v in shipped.state_dict().items()})
    save_displacement_vae(shipped, out, provenance)

    size = out.stat().st_size
    print(f"held-out ({errors['count']} expressions, float16 weights): mean {errors['mean_mm_active']:.3f} mm on "
          f"expression-active vertices, {errors['mean_mm_all']:.3f} mm on all vertices, max {errors['max_mm']:.2f} mm, "
          f"relative {100 * errors['relative_active']:.1f}% of the mean displacement {errors['target_mean_mm_active']:.2f} mm")
    print(f"wrote {out} ({size / 1e6:.2f} MB); state sha256 {provenance['state_sha256'][:16]}; "
          f"training wall time {train_seconds:.1f} s")
    return provenance


if __name__ == "__main__":
    main()
