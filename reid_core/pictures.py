"""The app's pictures (PIL): the per-region agreement heat map of two crops, and framed result tiles."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageOps

DISPLAY_SIZE = (96, 192)  # each crop in the heat-map picture
RIGHT, WRONG = (46, 160, 67), (214, 39, 40)  # frame colours of a match: same id, another id

_STOPS = np.array([[48, 18, 59], [70, 131, 246], [27, 207, 212], [97, 252, 108], [210, 233, 53], [254, 155, 45],
                   [218, 57, 7], [122, 4, 3]], np.float32)  # a coarse "turbo": dark blue (low) to dark red (high)


def colourise(values: np.ndarray) -> np.ndarray:
    """[0, 1] values -> (..., 3) uint8 colours, interpolated between the turbo stops."""
    x = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_STOPS) - 2)
    t = (x - lo)[..., None]
    return (_STOPS[lo] * (1 - t) + _STOPS[lo + 1] * t).astype(np.uint8)


def heat_overlay(img: Image.Image, agreement: np.ndarray, alpha: float = 0.5) -> Image.Image:
    base = img.resize(DISPLAY_SIZE, Image.Resampling.BILINEAR)
    heat = Image.fromarray(agreement.astype(np.float32), "F").resize(DISPLAY_SIZE, Image.Resampling.BILINEAR)
    mixed = np.asarray(base, np.float32) * (1 - alpha) + colourise(np.asarray(heat)) * alpha
    return Image.fromarray(mixed.astype(np.uint8))


def agreement_picture(a: Image.Image, b: Image.Image, ma: np.ndarray, mb: np.ndarray) -> Image.Image:
    """Both crops side by side with their per-region agreement, and a colour bar (same absolute scale for
    both, so colours compare across pairs)."""
    w, h = DISPLAY_SIZE
    gap, bar_h, pad = 12, 10, 16
    canvas = Image.new("RGB", (2 * w + gap, h + pad + bar_h + 14), "white")
    canvas.paste(heat_overlay(a, ma), (0, 0))
    canvas.paste(heat_overlay(b, mb), (w + gap, 0))
    bar = colourise(np.tile(np.linspace(0, 1, 2 * w + gap), (bar_h, 1)))
    canvas.paste(Image.fromarray(bar), (0, h + pad))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, h + 2), "low", fill="black")
    draw.text((2 * w + gap - 30, h + 2), "high", fill="black")
    draw.text((w - 6, h + pad + bar_h + 2), "agreement", fill="black")
    return canvas


def framed(img: Image.Image, right: bool | None, width: int = 5) -> Image.Image:
    """A result tile: green frame for the query's own id, red for another, none when ids are unknown."""
    return img if right is None else ImageOps.expand(img, border=width, fill=RIGHT if right else WRONG)
