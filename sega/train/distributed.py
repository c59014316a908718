"""DistributedDataParallel set-up from torchrun's environment (one process per CPU slot or GPU).

``torchrun --nproc_per_node N -m sega train ...`` starts N processes with RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT set; ``init`` joins them into one process group: NCCL when the training device is
CUDA (each process on GPU ``LOCAL_RANK``), gloo on CPUs. Multi-node runs use torchrun's rendezvous, e.g. on
every node ``torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400
--rdzv_id RUN -m sega train ...``. Started without torchrun (no WORLD_SIZE), training runs as one process
with no process group.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" / "nccl"; None: a single process without a process group

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def init(device: str) -> tuple[DistributedContext, torch.device]:
    """Join torchrun's process group (if started by torchrun) -> (context, this process's device).

    device: the resolved training device name ("cpu" / "cuda")."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistributedContext(), torch.device(device if device != "cuda" else "cuda:0")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        backend, dev = "nccl", torch.device(f"cuda:{local}")
    else:
        backend, dev = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistributedContext(rank, world, local, backend), dev


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()


def finish(ctx: DistributedContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes (in name order): equal on every rank when DDP kept them in step."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_strings(ctx: DistributedContext, value: str) -> list[str]:
    """``value`` from every rank, in rank order (a list of one without a process group)."""
    if not ctx.distributed:
        return [value]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


__all__ = ["DistributedContext", "barrier", "finish", "gather_strings", "init", "parameter_digest"]
