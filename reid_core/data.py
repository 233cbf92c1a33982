"""Images in, uint8 pixel tensors out: the one data path shared by training, evaluation, the CLI and the app.

Normalisation is the model's own (SiameseReID.feature_map), so nothing here knows a mean or a std.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, get_worker_info
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .datasets import Record
from .limits import Limits


def set_max_pixels(n: int) -> None:
    """Refuse images over n pixels (decompression bombs) before decoding: load_image checks the declared
    size, and PIL itself refuses at open past 2n."""
    global MAX_IMAGE_PIXELS
    MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS = n


MAX_IMAGE_PIXELS = Limits.max_pixels
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # load_image refuses these itself
try:
    set_max_pixels(Limits.from_env().max_pixels)  # $REID_MAX_PIXELS
except ValueError:  # a bad variable is reported by whoever reads all the limits (the app); not at import
    set_max_pixels(Limits.max_pixels)

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
            if (len(src) if isinstance(src, bytes) else Path(src).stat().st_size) == 0:
                raise ImageError(f"{name}: empty file")
            img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
            if img.width * img.height > MAX_IMAGE_PIXELS:  # the header's size: nothing decoded yet
                raise ImageError(f"{name}: image too large ({img.width}x{img.height} = {img.width * img.height:,} "
                                 f"pixels; limit {MAX_IMAGE_PIXELS:,})")
            img.load()  # decode now so truncated files fail here, not deep inside a batch
            img = ImageOps.exif_transpose(img)
        if img.width < 2 or img.height < 2:
            raise ImageError(f"{name}: image is {img.width}x{img.height}, too small to be a person crop")
        if img.mode.startswith("I"):  # 16-bit (I;16, I;16B ...) or 32-bit integer: scale to 8-bit first
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
        raise ImageError(f"{name}: image too large (over twice the limit of {MAX_IMAGE_PIXELS:,} pixels)") from e
    except FileNotFoundError as e:
        raise ImageError(f"{name}: file not found") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image (not an image file, or a format PIL cannot read)") from e
    except (OSError, ValueError, TypeError, SyntaxError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise ImageError(f"{name}: not a readable image ({type(e).__name__}{': ' * bool(detail)}{detail})") from e


def eval_pixels(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The evaluation resize on uint8: (3, H, W). torchvision's uint8 bilinear resize gives PIL's pixels
    (identical on Market's upscale, at most 2 levels apart on downscale) in 60 % of PIL's time."""
    chw = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
    return F.resize(chw, list(size), interpolation=T.InterpolationMode.BILINEAR, antialias=True).contiguous()


def read_pixels(records: Sequence[Record], size: tuple[int, int], skip_bad: bool = False,
                ) -> tuple[torch.Tensor | None, np.ndarray, list[str]]:
    """One batch: uint8 (B, 3, H, W) of the readable records (None if none is), their positions in `records`,
    and the one-line errors of the unreadable ones. Without `skip_bad` the first unreadable image raises."""
    pixels, kept, errors = [], [], []
    for k, r in enumerate(records):
        try:
            pixels.append(eval_pixels(load_image(r.path), size))
            kept.append(k)
        except ImageError as e:
            if not skip_bad:
                raise
            errors.append(str(e))
    return (torch.stack(pixels) if pixels else None), np.array(kept, dtype=np.int64), errors


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
