"""Does this input look like a person crop at all? A cheap screen for inputs no re-id answer means anything for.

A re-id network embeds anything: a plain white image scored 63.7 % "same person" against a real crop, white
against noise 99.9 %. Two statistics of the grey levels catch what users actually send by mistake:
- near-uniform (a blank, a flat colour): grey-level spread under UNIFORM_STD;
- noise-like (static, a random array): neighbouring pixels barely correlated (under NOISE_CORR), where
  photographs, blurry low-resolution crops included, are strongly correlated.
On Market-1501's 23,100 query + gallery crops the spread is at least 5.98 and the correlation at least 0.73
(BENCHMARKS.md, "person screen"): these thresholds flag none of them. It warns; it never refuses.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

UNIFORM_STD = 3.0  # grey levels (0-255)
NOISE_CORR = 0.4  # mean lag-1 correlation, across and down
SCREEN_SIZE = (128, 256)  # box-averaged down to this first: cheap, and averaging keeps noise uncorrelated


def _lag1(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 1.0


def grey_stats(img: Image.Image) -> tuple[float, float]:
    """(grey-level standard deviation, mean lag-1 neighbour correlation)."""
    g = img.convert("L")
    if g.width > SCREEN_SIZE[0] or g.height > SCREEN_SIZE[1]:
        g = g.copy()
        g.thumbnail(SCREEN_SIZE, Image.Resampling.BOX)
    x = np.asarray(g, np.float64)
    return float(x.std()), (_lag1(x[:, :-1], x[:, 1:]) + _lag1(x[:-1], x[1:])) / 2


def person_warning(img: Image.Image) -> str | None:
    """None for a plausible photo; else why it does not look like a person crop (for a warning)."""
    std, corr = grey_stats(img)
    if std < UNIFORM_STD:
        return "does not look like a person crop (nearly uniform: one flat colour)"
    if corr < NOISE_CORR:
        return "does not look like a person crop (noise-like: neighbouring pixels are unrelated)"
    return None
