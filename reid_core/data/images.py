"""Images in, uint8 pixel tensors out: the one decoding path shared by training, evaluation, the CLI and the app
(training's augmentation and datasets are augment.py's).

Normalisation is the model's own (SiameseReID.feature_map), so nothing here knows a mean or a std.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from .datasets import Record
from .limits import Limits
from .person_check import person_warning

ImageLike = str | Path | bytes | Image.Image | np.ndarray
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG covers cameras' MPO files. Nothing else is opened:
# PIL would hand EPS to Ghostscript, and every extra decoder is attack surface on a public demo
_SNIFF = [(b"ftypheic", "HEIC"), (b"ftypheix", "HEIC"), (b"ftyphevc", "HEIC"), (b"ftypmif1", "HEIF"),
          (b"ftypmsf1", "HEIF"), (b"ftypavif", "AVIF"), (b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"),
          (b"%PDF", "PDF"), (b"8BPS", "Photoshop (PSD)"), (b"<svg", "SVG"), (b"\x00\x00\x01\x00", "ICO"),
          (b"jP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000")]
_SUFFIXES = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".eps": "EPS", ".ps": "PostScript", ".pdf": "PDF",
             ".psd": "Photoshop (PSD)", ".svg": "SVG", ".ico": "ICO", ".tga": "TGA", ".jp2": "JPEG 2000",
             ".pcx": "PCX", ".ppm": "PPM", ".pgm": "PGM", ".dds": "DDS", ".xcf": "GIMP (XCF)"}
SUPPORTED = "JPEG, PNG, WebP, BMP, GIF or TIFF"
DEFAULT_LIMITS = Limits()


class ImageError(ValueError):
    """An input that is not a usable image; the message says which and why in one line."""


def skipped_line(reason: str | Exception) -> str:
    """The one line every entry point (embed, uploads, gallery add; the app's Add and notes) gives an input it
    leaves out: "skipped NAME: WHY", the reason being load_image's own words for that input."""
    return f"skipped {reason}"


def unusable(path: str | Path) -> str | None:
    """Why load_image would refuse this file (its own one line), or None when it reads: for a file that a folder
    listing would otherwise drop unnamed (a .txt, an .avif beside the crops)."""
    try:
        load_image(path)
    except ImageError as e:
        return str(e)
    return None


class PixelBudget:
    """Decoded pixels one request may spend: a zip of 20 6300x6300 PNGs is 2.6 MB but 794 M pixels, ~24 s of
    a worker; beyond the budget the rest of the request is refused instead of decoded."""

    def __init__(self, pixels: int):
        self.left, self.spent_out = pixels, False

    def spend(self, name: str, pixels: int) -> None:
        if pixels > self.left:
            self.spent_out = True
            raise ImageError(f"{name}: {pixels:,} pixels to decode, over what is left of this request's pixel "
                             f"budget ({max(self.left, 0):,})")
        self.left -= pixels


def _format_name(head: bytes, name: str) -> str | None:
    """What an unsupported file is, from its first bytes or else its name, for the message."""
    for magic, fmt in _SNIFF:
        if magic in head[:16] or (magic == b"<svg" and magic in head[:512]):
            return fmt
    return _SUFFIXES.get(Path(name).suffix.lower())


def check_geometry(name: str, w: int, h: int, limits: Limits) -> None:
    """Refuse from the header alone what would cost seconds to decode and resize: too many pixels, a side
    over max_side, or a strip (a 2 x 19,000,000 PNG is 55 KB and held a worker 40 s)."""
    if w < 2 or h < 2:
        raise ImageError(f"{name}: image is {w}x{h}, too small to be a person crop")
    if w * h > limits.max_pixels:
        raise ImageError(f"{name}: image too large ({w}x{h} = {w * h:,} pixels; limit {limits.max_pixels:,})")
    if max(w, h) > limits.max_aspect * min(w, h):
        raise ImageError(f"{name}: {w}x{h} is a strip, not a person crop (sides over {limits.max_aspect}:1)")
    if max(w, h) > limits.max_side:
        raise ImageError(f"{name}: image too large ({w}x{h}; the longest side may be {limits.max_side:,} pixels)")


def load_image(src: ImageLike, limits: Limits | None = None, name: str | None = None,
               reduce: tuple[int, int] | None = None, budget: PixelBudget | None = None) -> Image.Image:
    """Decode anything image-like to an RGB PIL image, or raise ImageError. Files are opened only as one of
    FORMATS, and checked against `limits` (default: Limits()) from the header, before decoding. `name`: what
    messages call it (default: the path, or the type). `reduce` (w, h): a JPEG is decoded at the smallest
    1/2, 1/4 or 1/8 scale still at least this big (a 24 MP photo for a 128x256 crop costs 1/64 of it);
    `budget`: the decoded pixels are spent from it first."""
    limits = limits or DEFAULT_LIMITS
    name = name or (str(src) if isinstance(src, (str, Path)) else type(src).__name__)
    try:
        if isinstance(src, Image.Image):
            img = src
        elif isinstance(src, np.ndarray):
            arr = src if src.dtype == np.uint8 else np.clip(src, 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
        else:
            if (len(src) if isinstance(src, bytes) else Path(src).stat().st_size) == 0:
                raise ImageError(f"{name}: empty file")
            try:
                img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src, formats=FORMATS)
            except UnidentifiedImageError:
                with io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb") as f:
                    fmt = _format_name(f.read(512), name)
                if fmt:
                    raise ImageError(f"{name}: {fmt} images are not supported (use {SUPPORTED})") from None
                raise
            check_geometry(name, img.width, img.height, limits)  # the header's size: nothing decoded yet
            if reduce and img.format == "JPEG":
                img.draft("RGB", reduce)
            if budget is not None:
                budget.spend(name, img.width * img.height)
            img.load()  # decode now so truncated files fail here, not deep inside a batch
            img = ImageOps.exif_transpose(img)
        check_geometry(name, img.width, img.height, limits)
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
    except Image.DecompressionBombError as e:  # PIL's own backstop, far above any sane max_pixels
        raise ImageError(f"{name}: image too large (over PIL's limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels; "
                         f"limit {limits.max_pixels:,})") from e
    except FileNotFoundError as e:
        raise ImageError(f"{name}: file not found") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image (not an image file, or not {SUPPORTED})") from e
    except (OSError, ValueError, TypeError, SyntaxError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise ImageError(f"{name}: not a readable image ({type(e).__name__}{': ' * bool(detail)}{detail})") from e


def eval_pixels(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The evaluation resize on uint8: (3, H, W). torchvision's uint8 bilinear resize gives PIL's pixels
    (identical on Market's upscale, at most 2 levels apart on downscale) in 60 % of PIL's time."""
    chw = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
    return F.resize(chw, list(size), interpolation=T.InterpolationMode.BILINEAR, antialias=True).contiguous()


def read_pixels(records: Sequence[Record], size: tuple[int, int], skip_bad: bool = False,
                warnings: list[str] | None = None) -> tuple[torch.Tensor | None, np.ndarray, list[str]]:
    """One batch: uint8 (B, 3, H, W) of the readable records (None if none is), their positions in `records`,
    and the one-line errors of the unreadable ones. Without `skip_bad` the first unreadable image raises.
    `warnings`: given, gets "path: why" for each image that does not look like a person crop (screened on the
    decoded image, before the resize, as the app screens its uploads)."""
    pixels, kept, errors = [], [], []
    for k, r in enumerate(records):
        try:
            img = load_image(r.path)
            if warnings is not None and (why := person_warning(img)):
                warnings.append(f"{r.path}: {why}")
            pixels.append(eval_pixels(img, size))
            kept.append(k)
        except ImageError as e:
            if not skip_bad:
                raise
            errors.append(str(e))
    return (torch.stack(pixels) if pixels else None), np.array(kept, dtype=np.int64), errors
