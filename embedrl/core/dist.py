"""Distributed helpers: gather with gradient (for cross-process negatives) and the process rank.

Everything degrades to a no-op in a single process, so the same code runs on a laptop and
under `accelerate launch` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather rows from every process, keeping the autograd graph.

    Processes may hold different numbers of rows (a dataset's last partial batch, a varying
    number of hard negatives): rows are padded to the largest count, gathered with
    `torch.distributed.nn.all_gather` (whose backward sends each process the gradient of its
    own rows), then the padding is dropped. Returns (all rows, offset of this process's rows).
    """
    if not is_distributed():
        return x, 0
    import torch.distributed.nn.functional as dist_fn

    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    padded = torch.cat([x, x.new_zeros(max(counts) - x.shape[0], *x.shape[1:])]) if x.shape[0] < max(counts) else x
    parts = dist_fn.all_gather(padded)
    gathered = torch.cat([p[:n] for p, n in zip(parts, counts)])
    return gathered, sum(counts[: rank()])
