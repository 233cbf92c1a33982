"""The whole adaptation: every refusal before any pass (`preflight`), the BatchNorm rung then self-training
(`adapt_model`), and what the weights' JSON records of it (`provenance`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..data.datasets import Record
from ..model.network import SiameseReID
from .batchnorm import adapt_bn
from .config import AdaptConfig, AdaptReport, Round
from .self_training import self_train
from .split import Split, check_cache_room, trunk_cache
from .targets import camera_balanced, pixel_batches, sample


def preflight(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig) -> list[Record]:
    """Everything that can refuse an adaptation, checked before any pass (the CLI asks before its "before"
    evaluation too): enough crops, a backbone and number of stages self-training can split, disk for a large
    cache. Returns the crops used (cfg.max_images of them, in a seeded order)."""
    records = sample(records, cfg.max_images, cfg.seed)
    if len(records) < 2:
        raise ValueError(f"adaptation needs at least 2 target crops, got {len(records)}")
    if cfg.method == "self-train":
        check_cache_room(trunk_cache(Split(model, cfg.train_stages), records, (model.cfg.height, model.cfg.width))[1])
    return records


def adapt_model(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig, progress: bool = True,
                on_round: Callable[[Round, SiameseReID], None] | None = None) -> tuple[SiameseReID, AdaptReport]:
    """A copy of `model` adapted to the target crops `records` (labels unread): BatchNorm statistics, then, with
    method self-train, the self-training rounds. Whatever can refuse (too few crops, a backbone or a number of
    stages self-training cannot split, no disk for a large cache) refuses before the first pass."""
    t0 = time.time()
    records = preflight(model, records, cfg)
    model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    size = (model.cfg.height, model.cfg.width)
    bn_records = records[: cfg.bn_images or None]  # records are in a seeded order already
    bn_records = camera_balanced(bn_records) if cfg.balance_cameras else bn_records
    seen = adapt_bn(model, pixel_batches(bn_records, size, cfg.batch_size, "BatchNorm statistics", progress),
                    cfg.bn_layers)
    bn_seconds = time.time() - t0
    cams = len({r.camid for r in records if r.camid >= 0})
    if cfg.method != "self-train":
        return model, AdaptReport(cfg.method, seen, seen, cams, time.time() - t0, bn_seconds)
    st = self_train(model, records, cfg, progress, on_round)
    return model, AdaptReport(cfg.method, len(records), seen, cams, time.time() - t0, bn_seconds, st.rounds,
                              st.bn_agreement, st.kept, st.reason)


THRESHOLDS_INHERITED = ("the source weights': chosen on the source cameras' held-out pairs, not on these cameras "
                        "(adaptation reads no labels; `evaluate --record` on labelled crops of these cameras "
                        "chooses them anew)")
THRESHOLDS_CHOSEN = "chosen anew on the target's held-out pairs (labels used for scoring only)"


def provenance(cfg: AdaptConfig, report: AdaptReport, source: str, target: str,
               thresholds_from: str = THRESHOLDS_INHERITED) -> dict[str, Any]:
    """What model.json records of an adaptation (extra.adapted), including where the decision thresholds and
    the calibration came from: an adapted model scores pairs of the new cameras with the source's unless they
    were chosen anew."""
    return {"source_weights": source, "target": Path(target).name, "target_images": report.images,
            "thresholds_from": thresholds_from,
            "bn_images": report.bn_images,
            "target_cameras": report.cameras, "method": cfg.method, "settings": asdict(cfg),
            "seconds": round(report.seconds, 1), "rounds": [asdict(r) for r in report.rounds],
            **({"kept": report.kept, "why": report.reason} if report.kept else {})}
