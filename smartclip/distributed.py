"""torchrun process groups and feature gathering with gradients; every helper works on one process.

With features x_r of b_r rows on rank r, `gather_with_grad` returns X = [x_0; …; x_{W−1}] and
offset_r = Σ_{q<r} b_q. Its backward sums every rank's gradient with respect to X and hands rank r
the slice of its own rows, so each rank computing its rows of the global loss (scaled by
W·b_r / B, see `local_weight`) and DDP averaging the parameter gradients gives exactly the
gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """`device` as given, or for "auto" cuda:local_rank when CUDA is available, else cpu."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's RANK/LOCAL_RANK/WORLD_SIZE; join a group (nccl on CUDA, gloo on CPU).

    Without those variables (or with WORLD_SIZE=1) no group is made. `device` "auto" means
    cuda:LOCAL_RANK when CUDA is available, else cpu.
    """
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size
        )
    return DistEnv(rank, local_rank, world_size, dev)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_sizes(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` stacked: [W, *x.shape] (no gradient). One process: x[None]."""
    if world_size() == 1:
        return x[None]
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x)
    return torch.stack(out)


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(all ranks' rows concatenated, index of this rank's first row), differentiable.

    Ranks may hold different numbers of rows: rows are padded to the largest count for the
    collective and the padding is cut off again. One process: (x, 0).
    """
    if world_size() == 1:
        return x, 0
    counts = all_gather_sizes(torch.tensor(x.shape[0], device=x.device)).tolist()
    longest = max(counts)
    padded = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
    with warnings.catch_warnings():  # deprecated for _functional_collectives, still correct
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_fn.all_gather(padded)
    gathered = torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])
    return gathered, sum(counts[: rank()])


def gather_without_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Like `gather_with_grad`, but only this rank's own rows carry gradient (open_clip's
    default without --gather-with-grad: other ranks' features are constants)."""
    if world_size() == 1:
        return x, 0
    with torch.no_grad():
        gathered, offset = gather_with_grad(x)
    rows = slice(offset, offset + x.shape[0])
    return torch.cat([gathered[: rows.start], x, gathered[rows.stop :]]), offset


def local_weight(local_rows: int, global_rows: int) -> float:
    """W·b_r / B: the factor that turns this rank's mean over its rows into its share of the
    global mean once DDP averages the W ranks' gradients."""
    return world_size() * local_rows / global_rows


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
