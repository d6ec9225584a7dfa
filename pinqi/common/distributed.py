"""Multi-process data parallel: which process this is, and joining the process group.

Launch with ``torchrun --nproc-per-node N -m pinqi train ...``; each process takes every N-th
sample of the global batch (gloo on CPU, nccl on GPU). Without torchrun there is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed"]


@dataclass
class DistributedContext:
    """Rank and world size of this process (1 process when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints."""
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the processes (in place; the value itself with one process)."""
        if self.world_size > 1:
            dist.all_reduce(value, op=dist.ReduceOp.AVG)
        return value

    def barrier(self) -> None:
        """Wait for every process (nothing with one process)."""
        if self.world_size > 1:
            dist.barrier()


def init_distributed() -> DistributedContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistributedContext(device=device)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistributedContext(rank=rank, world_size=dist.get_world_size(), device=device)
