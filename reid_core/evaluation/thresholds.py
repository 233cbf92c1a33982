"""What inference reads from the weights' JSON besides the network: decision thresholds and the pair head's
calibration, typed, with one reader that also takes the keys older files used.

The pair head's raw probability is not a probability of "same person": trained on in-batch pairs (far more
negatives than positives), its best cut on balanced held-out pairs sat near 19 %, so "same person: 19.2 %" read
as a contradiction. Platt scaling (p = sigmoid(a * logit + b), fitted on held-out pairs) makes 50 % the verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -500, 500)))


@dataclass(frozen=True)
class Platt:
    """p = sigmoid(a * logit + b) of the pair head's logit; p >= 0.5 means same person."""

    a: float
    b: float

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * np.asarray(logits, dtype=np.float64) + self.b)

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> Platt:
        """Maximum likelihood with Platt's smoothed targets ((n+ + 1) / (n+ + 2), 1 / (n- + 2)), which keep a
        and b finite on separable pairs; Newton's method with step halving on the standardised logit."""
        x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels).astype(bool)
        if y.all() or not y.any():
            raise ValueError("calibration needs both same-person and different-person pairs")
        t = np.where(y, (y.sum() + 1) / (y.sum() + 2), 1 / ((~y).sum() + 2))
        centre, scale = x.mean(), max(float(x.std()), 1e-12)
        design = np.stack([(x - centre) / scale, np.ones_like(x)], 1)

        def loss(w: np.ndarray) -> float:
            z = design @ w
            return float(np.sum(np.logaddexp(0, z) - t * z))  # cross-entropy against the smoothed targets

        w = np.zeros(2)
        for _ in range(iterations):
            p = sigmoid(design @ w)
            hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
            step, before = np.linalg.solve(hess, design.T @ (p - t)), loss(w)
            while loss(w - step) > before and np.abs(step).max() > 1e-12:
                step /= 2
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        return cls(float(w[0] / scale), float(w[1] - w[0] * centre / scale))

    @property
    def logit_threshold(self) -> float:
        """The raw logit at which the calibrated probability is 0.5."""
        return -self.b / self.a


def log_loss(p: np.ndarray, labels: np.ndarray) -> float:
    p, y = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12), np.asarray(labels).astype(bool)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def brier(p: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def balanced_accuracy(p: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    pred, y = np.asarray(p) >= threshold, np.asarray(labels).astype(bool)
    return float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))


@dataclass
class CalibrationCheck:
    """A Platt fit on one half of the pairs (split by identity), measured on the other half against the raw
    probability at `raw_threshold`; `platt` is then re-fitted on all pairs (what gets recorded)."""

    platt: Platt
    pairs: int  # pairs the check was measured on (the held-out half)
    raw_threshold: float
    accuracy_raw: float  # balanced accuracy of the raw probability at raw_threshold
    accuracy: float  # balanced accuracy of the calibrated probability at 0.5
    log_loss_raw: float
    log_loss: float
    brier_raw: float
    brier: float

    def describe(self) -> str:
        return (f"accuracy {100 * self.accuracy_raw:.2f} % at raw {self.raw_threshold:.4f} -> "
                f"{100 * self.accuracy:.2f} % at calibrated 0.5; log-loss {self.log_loss_raw:.4f} -> "
                f"{self.log_loss:.4f}; Brier {self.brier_raw:.4f} -> {self.brier:.4f} ({self.pairs} held-out pairs); "
                f"fitted on all: a {self.platt.a:.4f}, b {self.platt.b:.4f}")


def check_calibration(logits: np.ndarray, labels: np.ndarray, first_half: np.ndarray,
                      raw_threshold: float | None = None) -> CalibrationCheck:
    """Fit on the pairs where `first_half`, measure on the others; `raw_threshold`: the raw probability cut to
    compare with (default: the best cut on the first half, as evaluate chooses pair_threshold)."""
    from .metrics import best_threshold

    logits, labels, first_half = np.asarray(logits), np.asarray(labels).astype(bool), np.asarray(first_half, bool)
    fit, test = Platt.fit(logits[first_half], labels[first_half]), ~first_half
    raw = sigmoid(logits)
    if raw_threshold is None:
        raw_threshold = best_threshold(raw[first_half], labels[first_half])
    p, y = fit(logits[test]), labels[test]
    return CalibrationCheck(Platt.fit(logits, labels), int(test.sum()), float(raw_threshold),
                            balanced_accuracy(raw[test], y, raw_threshold), balanced_accuracy(p, y, 0.5),
                            log_loss(raw[test], y), log_loss(p, y), brier(raw[test], y), brier(p, y))


@dataclass
class Calibration:
    """Platt scaling of the pair head, for plain and for flip-averaged embeddings (they score a little
    differently), and what it was fitted on."""

    plain: Platt
    flip: Platt | None = None
    fitted_on: str = ""
    checks: dict[str, Any] = field(default_factory=dict)  # held-out figures (CalibrationCheck fields), for people

    def for_flip(self, flip: bool) -> Platt:
        return self.flip if flip and self.flip is not None else self.plain


@dataclass
class Thresholds:
    """The decision thresholds of the raw scores (pair head probability and cosine; plain and flip-averaged
    embeddings) and the pair head's calibration: what ReID reads to say "same person"."""

    pair: float = 0.5
    cos: float = 0.5
    flip_pair: float | None = None
    flip_cos: float | None = None
    calibration: Calibration | None = None

    def pair_for(self, flip: bool) -> float:
        return self.flip_pair if flip and self.flip_pair is not None else self.pair

    def over(self, kept: Thresholds) -> Thresholds:
        """These thresholds, with what they lack taken from `kept` (what the weights recorded before): an
        evaluation without flip measured no flip thresholds, and must not erase the ones flip (the app's
        default) reads."""
        return replace(self, flip_pair=kept.flip_pair if self.flip_pair is None else self.flip_pair,
                       flip_cos=kept.flip_cos if self.flip_cos is None else self.flip_cos,
                       calibration=self.calibration or kept.calibration)

    def to_extra(self) -> dict[str, Any]:
        """The entries of the weights' JSON "extra": `thresholds` (typed), and `pair_threshold` / `cos_threshold`
        at the top as before (readers of older versions, the app's Model tab)."""
        typed = asdict(self)
        if self.calibration is None:
            typed.pop("calibration")
        return {"pair_threshold": self.pair, "cos_threshold": self.cos, "thresholds": typed}

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Thresholds:
        """From `to_extra`'s entries, or from an older file's (pair_threshold, cos_threshold at the top, the
        flip ones among its metrics as flip_pair_threshold / flip_cos_threshold)."""
        if isinstance(typed := extra.get("thresholds"), dict):
            cal = typed.get("calibration")
            return cls(float(typed.get("pair", 0.5)), float(typed.get("cos", 0.5)), _float(typed.get("flip_pair")),
                       _float(typed.get("flip_cos")), calibration_from(cal) if cal else None)
        metrics = extra.get("metrics") or {}
        return cls(float(extra.get("pair_threshold", 0.5)), float(extra.get("cos_threshold", 0.5)),
                   _float(metrics.get("flip_pair_threshold")), _float(metrics.get("flip_cos_threshold")))


def calibration_from(d: dict[str, Any]) -> Calibration:
    flip = d.get("flip")
    return Calibration(Platt(**d["plain"]), Platt(**flip) if flip else None, str(d.get("fitted_on", "")),
                       dict(d.get("checks") or {}))


def _float(v: Any) -> float | None:
    return None if v is None else float(v)
