"""Training's side of the data path: the Bag-of-Tricks augmentation on uint8 pixels, and the datasets that turn
records into augmented crops (one sample's augmentation reproducible from its own seed)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision import transforms as T
from torchvision.transforms import v2

from .datasets import Record
from .images import load_image


def train_transform(size: tuple[int, int], mean: Sequence[float], erasing: float = 0.5,
                    pad: int | None = None) -> v2.Compose:
    """The Bag-of-Tricks augmentations on uint8 pixels: flip, pad + random crop, random erasing with the mean
    colour. uint8 out (the model normalises), so a loader ships 4x fewer bytes. The pad defaults to BoT's
    10 px at 256 px height, scaled with the input."""
    pad = round(10 * size[0] / 256) if pad is None else pad
    ops = [v2.PILToTensor(), v2.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
           v2.RandomHorizontalFlip()]
    if pad:
        ops += [v2.Pad(pad), v2.RandomCrop(size)]
    if erasing > 0:
        ops.append(v2.RandomErasing(p=erasing, value=[round(255 * m) for m in mean]))
    return v2.Compose(ops)


class ImageDataset(Dataset):
    """Records -> (augmented image tensor, pid, camid, index): the training side of the data path."""

    def __init__(self, records: Sequence[Record], transform: T.Compose):
        self.records, self.transform = list(records), transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int, int]:
        """`item` is an index, or (index, seed) to draw this sample's augmentation from its own seed."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        r = self.records[i]
        img = load_image(r.path)
        if seed is None:
            return self.transform(img), r.pid, r.camid, i
        if get_worker_info() is not None:  # a loader worker's RNG serves nothing else: no need to restore it
            torch.manual_seed(seed)
            return self.transform(img), r.pid, r.camid, i
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), r.pid, r.camid, i


class PairDataset(Dataset):
    """(i, j, label) index pairs over an ImageDataset -> (img_a, img_b, label)."""

    def __init__(self, images: ImageDataset, pairs: Sequence[tuple[int, int, int]]):
        self.images, self.pairs = images, list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        k, seed = item if isinstance(item, tuple) else (item, None)
        i, j, label = self.pairs[k]
        if seed is None:
            return self.images[i][0], self.images[j][0], float(label)
        return self.images[(i, 2 * seed)][0], self.images[(j, 2 * seed + 1)][0], float(label)
