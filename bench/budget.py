"""Seed recipe (pair BCE only) vs the default recipe (ID + triplet + pair BCE) at equal compute.

    python bench/budget.py --data ../shared/data/market1501 --init-weights W.safetensors --steps 240

Both train the same backbone at the same input size for the same number of optimiser steps of 64 images
(PK 16x4 vs 32 pairs), with the same optimiser and schedule, then are scored on the full query/gallery
split. Equal steps x equal images per step = equal compute; the wall-clock each took is printed beside.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.evaluation.evaluate import evaluate, format_figures, subset_eval  # noqa: E402
from reid_core.train.config import TrainConfig
from reid_core.train.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--init-weights", required=True, help="ImageNet weights (python -m reid_core convert ...)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=240, help="optimiser steps per recipe")
    ap.add_argument("--epochs", type=int, default=4, help="the steps are spread over this many epochs")
    ap.add_argument("--eval-max-ids", type=int, default=0, help="0: the full query/gallery split")
    ap.add_argument("--out", default="runs/bench_budget")
    ap.add_argument("--recipes", nargs="+", default=["bce", "metric"], choices=["bce", "metric"])
    ap.add_argument("--freeze-epochs", type=int, default=0, help="default recipe: heads-only epochs first")
    args = ap.parse_args()
    results = {}
    for recipe in args.recipes:
        cfg = TrainConfig(data=args.data, out=args.out, name=recipe, backbone=args.backbone, pretrained=False,
                          init_weights=args.init_weights, height=args.height, width=args.width, loss=recipe,
                          epochs=args.epochs, max_steps_per_epoch=args.steps // args.epochs, warmup_epochs=1,
                          schedule="cosine", p=16, k=4, pair_batch=32, last_stride=2, norm="imagenet",
                          freeze_epochs=args.freeze_epochs if recipe == "metric" else 0)
        trainer = Trainer(cfg)
        trainer.fit()
        train_s = sum(float(r.split(",")[-1]) for r in (cfg.run_dir / "log.csv").read_text().splitlines()[1:])
        query, gallery = subset_eval(trainer.data, args.eval_max_ids)
        report = evaluate(trainer.model, query, gallery)
        m = report.figures()
        results[recipe] = {"train_seconds": round(train_s, 1), "steps": trainer.step, **m, "config": asdict(cfg)}
        print(f"{recipe}: {trainer.step} steps, {train_s:.0f} s: {format_figures(report.plain)}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))
    print("| recipe | steps | train s | R1 | mAP | mINP | pair AUC |")
    for k, r in results.items():
        print(f"| {k} | {r['steps']} | {r['train_seconds']:.0f} | {100 * r['rank1']:.1f} | {100 * r['mAP']:.1f} | "
              f"{100 * r['mINP']:.1f} | {100 * r['pair_auc']:.1f} |")


if __name__ == "__main__":
    main()
