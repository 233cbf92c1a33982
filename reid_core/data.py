"""Images in, normalised tensors out: the one data path shared by training, evaluation, the CLI and the app."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, default_collate
from torchvision import transforms as T

from .datasets import Record

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs long before they fill memory
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

ImageLike = str | Path | bytes | Image.Image | np.ndarray


class ImageError(ValueError):
    """An input that is not a usable image; the message says which and why in one line."""


def load_image(src: ImageLike) -> Image.Image:
    """Decode anything image-like to an RGB PIL image, or raise ImageError."""
    name = str(src) if isinstance(src, (str, Path)) else type(src).__name__
    try:
        if isinstance(src, Image.Image):
            img = src
        elif isinstance(src, np.ndarray):
            arr = src if src.dtype == np.uint8 else np.clip(src, 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
        else:
            img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
            img.load()  # decode now so truncated files fail here, not deep inside a batch
            img = ImageOps.exif_transpose(img)
        if img.width < 2 or img.height < 2:
            raise ImageError(f"{name}: image is {img.width}x{img.height}, too small to be a person crop")
        if img.mode == "I;16" or img.mode == "I":  # 16-bit: scale to 8-bit before converting
            img = Image.fromarray((np.asarray(img, dtype=np.float32) / 256).clip(0, 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.getchannel("A"))
            return bg
        return img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image too large (limit {MAX_IMAGE_PIXELS:,} pixels)") from e
    except FileNotFoundError as e:
        raise ImageError(f"{name}: file not found") from e
    except (OSError, ValueError, TypeError, SyntaxError) as e:
        raise ImageError(f"{name}: not a readable image ({type(e).__name__}: {e})") from e


def eval_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                      T.Normalize(mean, std)])


def train_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                    erasing: float = 0.5, pad: int | None = None) -> T.Compose:
    """The Bag-of-Tricks augmentations: flip, pad + random crop, random erasing with the mean colour.
    The pad defaults to BoT's 10 px at 256 px height, scaled with the input."""
    pad = round(10 * size[0] / 256) if pad is None else pad
    ops = [T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.RandomHorizontalFlip()]
    if pad:
        ops += [T.Pad(pad), T.RandomCrop(size)]
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if erasing > 0:
        ops.append(T.RandomErasing(p=erasing, value=0))  # 0 after Normalize = the mean colour
    return T.Compose(ops)


class ImageDataset(Dataset):
    """Records -> (image tensor, pid, camid, index). With `skip_errors` an unreadable image comes back as its
    ImageError (for `collate_skipping`) instead of stopping the whole DataLoader."""

    def __init__(self, records: Sequence[Record], transform: T.Compose, skip_errors: bool = False):
        self.records, self.transform, self.skip_errors = list(records), transform, skip_errors

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int] | ImageError:
        r = self.records[i]
        try:
            return self.transform(load_image(r.path)), r.pid, r.camid, i
        except ImageError as e:
            if self.skip_errors:
                return e
            raise


def collate_skipping(batch: list) -> tuple[list | None, list[str]]:
    """default_collate over the readable items of a batch (None if there are none), plus the error messages
    of the unreadable ones, so the main process can warn about each in one line."""
    ok = [b for b in batch if not isinstance(b, ImageError)]
    return (default_collate(ok) if ok else None), [str(b) for b in batch if isinstance(b, ImageError)]


class PairDataset(Dataset):
    """(i, j, label) index pairs over an ImageDataset -> (img_a, img_b, label)."""

    def __init__(self, images: ImageDataset, pairs: Sequence[tuple[int, int, int]]):
        self.images, self.pairs = images, list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        i, j, label = self.pairs[k]
        return self.images[i][0], self.images[j][0], float(label)
