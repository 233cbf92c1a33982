"""What an adaptation recorded beside its weights (model.json's `extra.adapted`, written by adapt.provenance), read
back typed: the one reader of that record, so the app and the CLI say the same thing about an adapted model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapt.recipe import THRESHOLDS_INHERITED


def _figures(d: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (d or {}).items() if k in ("rank1", "mAP") and isinstance(v, (int, float))}


@dataclass
class AdaptationRecord:
    target: str
    method: str
    source_weights: str
    thresholds_from: str = THRESHOLDS_INHERITED
    target_images: int | None = None
    target_cameras: int | None = None
    seconds: float = 0.0
    source_metrics: dict[str, float] = field(default_factory=dict)
    source_evaluated_on: str = "its test set"
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    evaluated_on: str = ""

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> AdaptationRecord | None:
        """The record of weights' `extra` (ModelConfig.extra), or None for weights that were not adapted."""
        a = extra.get("adapted")
        if not isinstance(a, dict):
            return None
        n, cams = a.get("target_images"), a.get("target_cameras")
        fig, src = a.get("figures") or {}, a.get("source_metrics") or {}
        return cls(target=str(a.get("target", "?")), method=str(a.get("method", "?")),
                   source_weights=Path(str(a.get("source_weights", "?"))).name,
                   thresholds_from=str(a.get("thresholds_from") or THRESHOLDS_INHERITED),
                   target_images=n if isinstance(n, int) else None,
                   target_cameras=cams if isinstance(cams, int) else None,
                   seconds=float(a.get("seconds") or 0), source_metrics=_figures(src),
                   source_evaluated_on=str(src.get("evaluated_on", "its test set")),
                   before=_figures(fig.get("before")), after=_figures(fig.get("after")),
                   evaluated_on=str(fig.get("evaluated_on", "")))

    def facts(self) -> list[tuple[str, str]]:
        """(what, said) pairs, in the order a reader wants them."""
        n = f"{self.target_images:,}" if self.target_images is not None else "?"
        cams = self.target_cameras if self.target_cameras is not None else "unknown"
        out = [("Adapted to", f"{self.target} ({n} unlabeled crops, {cams} cameras)"),
               ("Method", f"{self.method} ({self.seconds:.0f} s)"), ("From", self.source_weights),
               ("Thresholds and calibration", self.thresholds_from)]
        if {"rank1", "mAP"} <= set(self.source_metrics):
            src = self.source_metrics
            out.append((f"Source model on {self.source_evaluated_on}",
                        f"Rank-1 {100 * src['rank1']:.1f} %, mAP {100 * src['mAP']:.1f} %"))
        if {"rank1", "mAP"} <= set(self.before) & set(self.after):
            out.append((f"On the target ({self.evaluated_on})",
                        f"Rank-1 {100 * self.before['rank1']:.1f} → {100 * self.after['rank1']:.1f} %, "
                        f"mAP {100 * self.before['mAP']:.1f} → {100 * self.after['mAP']:.1f} %"))
        return out
