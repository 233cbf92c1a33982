"""The app's pictures (PIL): the two crops of a Compare with how alike each horizontal stripe of them is, and
framed result tiles."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

DISPLAY_SIZE = (96, 192)  # each crop in the parts picture (the model's 1:2 shape)
BARS_WIDTH = 96  # the column of stripe bars between the two crops
RIGHT, WRONG = (46, 160, 67), (214, 39, 40)  # frame colours of a match: same id, another id

_STOPS = np.array([WRONG, [240, 180, 40], RIGHT], np.float32)  # cosine 0 (unlike) -> amber -> 1 (alike)


def colourise(values: np.ndarray) -> np.ndarray:
    """[0, 1] values -> (..., 3) uint8 colours, interpolated between the red, amber and green stops."""
    x = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_STOPS) - 2)
    t = (x - lo)[..., None]
    return (_STOPS[lo] * (1 - t) + _STOPS[lo + 1] * t).astype(np.uint8)


def parts_picture(a: Image.Image, b: Image.Image, parts: np.ndarray) -> Image.Image:
    """Crop A, a bar per horizontal stripe (head at the top) as long as that stripe's cosine between the crops and
    coloured by it (red unlike, green alike, one absolute scale for every pair), crop B; stripe edges drawn across
    both crops, so a reader sees which body part matches and which does not."""
    w, h = DISPLAY_SIZE
    gap, foot = 6, 22
    font = ImageFont.load_default(size=13)
    canvas = Image.new("RGB", (2 * w + BARS_WIDTH + 2 * gap, h + foot), "white")
    canvas.paste(a.convert("RGB").resize(DISPLAY_SIZE, Image.Resampling.BILINEAR), (0, 0))
    canvas.paste(b.convert("RGB").resize(DISPLAY_SIZE, Image.Resampling.BILINEAR), (w + BARS_WIDTH + 2 * gap, 0))
    draw = ImageDraw.Draw(canvas)
    x0, n = w + gap, len(parts)
    for i, cos in enumerate(np.asarray(parts, np.float32)):
        top, bottom = round(i * h / n), round((i + 1) * h / n)
        if i:
            for left in (0, x0 + BARS_WIDTH + gap):  # stripe edges across both crops
                draw.line([(left, top), (left + w - 1, top)], fill="white", width=1)
        colour = tuple(int(v) for v in colourise(np.float32(cos)))
        length = max(2, round(float(np.clip(cos, 0, 1)) * BARS_WIDTH))
        draw.rectangle([x0, top + 3, x0 + length - 1, bottom - 3], fill=colour)
        draw.text((x0 + 3, (top + bottom) / 2), f"{cos:.2f}", fill="black", font=font, anchor="lm")
    draw.text((canvas.width / 2, h + foot / 2), "stripe cosine: 0 unlike, 1 alike", fill="black", font=font,
              anchor="mm")
    return canvas


def framed(img: Image.Image, right: bool | None, width: int = 5) -> Image.Image:
    """A result tile: green frame for the query's own id, red for another, none when ids are unknown."""
    return img if right is None else ImageOps.expand(img, border=width, fill=RIGHT if right else WRONG)
