"""Training crops decoded once, kept on the training device as uint8, and augmented there a batch at a time.

On a GPU the CPU loader (JPEG decode + per-image augmentation in worker processes) bounds training at ~1,400
img/s (BENCHMARKS.md section 8); the whole Market + CUHK03 training set is ~2 GB of uint8 at 256 x 128, so it
fits on the card and the Bag-of-Tricks augmentations (flip, pad + random crop, random erasing with the mean
colour) run as a few batched tensor operations. Same transforms as augment.train_transform, drawn from a
torch.Generator seeded per batch, so a resumed run replays its batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..base.progress import progress_bar
from .datasets import Record
from .images import eval_pixels, load_image

ERASE_SCALE = (0.02, 0.33)  # torchvision RandomErasing's defaults, as train_transform uses them
ERASE_RATIO = (0.3, 3.3)
ERASE_TRIES = 10


class _Decoded(Dataset):
    def __init__(self, records: Sequence[Record], size: tuple[int, int]):
        self.records, self.size = records, size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        return eval_pixels(load_image(self.records[i].path), self.size)


def decode_all(records: Sequence[Record], size: tuple[int, int], workers: int = 0) -> torch.Tensor:
    """uint8 (N, 3, H, W) of every record, resized as evaluation resizes (an unreadable image raises)."""
    loader = DataLoader(_Decoded(records, size), batch_size=256, num_workers=workers)
    return torch.cat(list(progress_bar(loader, desc="decode crops", total=len(loader))))


class DeviceCrops:
    """uint8 crops on `device`; `batch(indices, seed)` gives them augmented as train_transform would."""

    def __init__(self, pixels: torch.Tensor, device: torch.device, fill: Sequence[float], erasing: float = 0.5,
                 pad: int | None = None):
        self.pixels = pixels.to(device)
        self.device, self.erasing = device, erasing
        h = self.pixels.shape[2]
        self.pad = round(10 * h / 256) if pad is None else pad
        self.fill = torch.tensor([round(255 * m) for m in fill], dtype=torch.uint8, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, indices: Sequence[int] | torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        x = self.pixels[torch.as_tensor(indices, device=self.device)]
        x = flip(x, torch.rand(len(x), generator=g, device=self.device) < 0.5)
        if self.pad:
            offsets = torch.randint(0, 2 * self.pad + 1, (len(x), 2), generator=g, device=self.device)
            x = pad_crop(x, self.pad, offsets)
        if self.erasing > 0:
            x = erase(x, erasing_boxes(x.shape[2], x.shape[3], len(x), self.erasing, g, self.device), self.fill)
        return x


def flip(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `which` (B,) is true."""
    return torch.where(which.view(-1, 1, 1, 1), x.flip(3), x)


def pad_crop(x: torch.Tensor, pad: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by `pad` on every side, then crop each image back to its size at `offsets` (B, 2) = (top, left)
    in the padded image: v2.Pad(pad) + v2.RandomCrop(size) with the offsets drawn."""
    b, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=x.device)[None] + offsets[:, :1])[:, None, :, None]  # (B, 1, H, 1)
    cols = (torch.arange(w, device=x.device)[None] + offsets[:, 1:])[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def erasing_boxes(h: int, w: int, n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 4) boxes (top, left, height, width) to erase, height 0 where nothing is: with probability p, the
    first of ERASE_TRIES draws of area ERASE_SCALE and log-uniform aspect ERASE_RATIO that fits, as
    torchvision's RandomErasing draws them."""
    area = h * w
    scale = torch.empty(n, ERASE_TRIES, device=device).uniform_(*ERASE_SCALE, generator=g) * area
    log_r = torch.empty(n, ERASE_TRIES, device=device).uniform_(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]),
                                                              generator=g)
    eh = torch.sqrt(scale * torch.exp(log_r)).round().long()
    ew = torch.sqrt(scale / torch.exp(log_r)).round().long()
    fits = (eh < h) & (ew < w)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros_like(fits[:, 0], dtype=torch.long))
    eh, ew = eh.gather(1, first[:, None])[:, 0], ew.gather(1, first[:, None])[:, 0]
    apply = fits.any(1) & (torch.rand(n, generator=g, device=device) < p)
    u = torch.rand(n, 2, generator=g, device=device)
    top = (u[:, 0] * (h - eh + 1).clamp_min(1)).long()
    left = (u[:, 1] * (w - ew + 1).clamp_min(1)).long()
    return torch.stack([top, left, torch.where(apply, eh, 0), torch.where(apply, ew, 0)], 1)


def erase(x: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Fill each image's box (top, left, height, width) with `fill` (1, 3, 1, 1)."""
    _, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None]
    cols = torch.arange(w, device=x.device)[None]
    inside_r = (rows >= boxes[:, :1]) & (rows < boxes[:, :1] + boxes[:, 2:3])  # (B, H)
    inside_c = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 1:2] + boxes[:, 3:4])  # (B, W)
    mask = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
    return torch.where(mask, fill.to(x.dtype), x)


class DeviceBatches:
    """A loader's stand-in: each batch of (index, seed) pairs -> (augmented uint8 images, pids), on the device;
    a batch's augmentation is drawn from its first sample's seed."""

    def __init__(self, crops: DeviceCrops, batches: Sequence[list[tuple[int, int]]], pids: Sequence[int]):
        self.crops, self.batches = crops, batches
        self.pids = torch.as_tensor(list(pids), device=crops.device)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            idx = torch.tensor([i for i, _ in batch], device=self.crops.device)
            yield self.crops.batch(idx, batch[0][1]), self.pids[idx]
