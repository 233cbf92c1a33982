"""torchrun support: one code path for one process, many CPU processes (gloo) and many GPUs (nccl).

Every rank sees the same global batch order and takes an equal contiguous share of each batch. Losses that
compare samples across the batch (batch-hard triplet, in-batch pairs) run on features gathered from all
ranks, and BatchNorm statistics are reduced over all ranks, so N processes take the same optimiser step as
one process with the same global batch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> tuple[World, torch.device]:
    """Join the process group torchrun describes in the environment; without torchrun, one process."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), dev


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def gather_cat(x: torch.Tensor, world: World) -> torch.Tensor:
    """All ranks' x stacked in rank order; gradients flow back to each rank's own part."""
    if world.size == 1:
        return x
    if x.requires_grad:
        return torch.cat(dist_fn.all_gather(x.contiguous()))
    parts = [torch.empty_like(x) for _ in range(world.size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def mean_over_ranks(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    if world.size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / world.size for k, v in zip(keys, t.tolist(), strict=True)}


def gather_rows(rows: np.ndarray, world: World) -> np.ndarray:
    """Undo a records[rank::size] split: every rank's rows, interleaved back into the original order."""
    if world.size == 1:
        return rows
    parts: list[np.ndarray] = [None] * world.size  # type: ignore[list-item]
    dist.all_gather_object(parts, rows)
    out = np.empty((sum(len(p) for p in parts), *rows.shape[1:]), rows.dtype)
    for r, p in enumerate(parts):
        out[r::world.size] = p
    return out


class RankShare(Sampler[list[tuple[int, int]]]):
    """This rank's share of every global batch, each index paired with its own augmentation seed.

    The seed depends only on (base seed, position in the epoch), so an image is augmented the same way
    whichever rank or loader worker decodes it: N ranks reproduce one process, and a resumed run replays.
    """

    def __init__(self, batches: Iterable[list[int]], world: World, seed: int):
        self.batches, self.world, self.seed = batches, world, seed

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        pos = 0
        for batch in self.batches:
            if len(batch) % self.world.size:
                raise ValueError(f"a global batch of {len(batch)} does not split over {self.world.size} ranks")
            n = len(batch) // self.world.size
            lo = self.world.rank * n
            yield [(int(i), self.seed + pos + lo + j) for j, i in enumerate(batch[lo:lo + n])]
            pos += len(batch)


class _GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are summed over all ranks (torch's SyncBatchNorm is GPU-only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=torch.float32, device=x.device)
        stats = dist_fn.all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


_GLOBAL_BN = {bn: type(f"Global{bn.__name__}", (_GlobalBatchNorm, bn), {}) for bn in (nn.BatchNorm1d, nn.BatchNorm2d)}


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: timm's SyncBatchNorm conversion on GPUs, an all-reduce BN on CPUs."""
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    skipped = set()
    for m in model.modules():
        if type(m) in _GLOBAL_BN:
            m.__class__ = _GLOBAL_BN[type(m)]
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            skipped.add(type(m).__name__)
    if skipped:
        warnings.warn(f"CPU sync-BN leaves {', '.join(sorted(skipped))} layers on per-rank statistics", stacklevel=2)
    return model
