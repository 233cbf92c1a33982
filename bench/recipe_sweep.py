"""Which loss term helps or hurts at a small budget: the default recipe with one term changed at a time.

    python bench/recipe_sweep.py --data ../shared/data/market1501 --init-weights init/lite0_timm.safetensors

Needs only the train split: 100 of its identities are held out as query/gallery (one query image per
camera, the rest gallery), linked (never copied) into a temporary Market-style folder. Every run takes the
same steps of 64 images with the same optimiser and schedule, and is scored after every epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.data.datasets import load_dataset, parse_market_name  # noqa: E402
from reid_core.evaluation.evaluate import format_figures  # noqa: E402
from reid_core.train.config import TrainConfig
from reid_core.train.trainer import Trainer  # noqa: E402

RUNS = {
    "seed_bce": {"loss": "bce"},
    "default": {},
    "raw_triplet": {"triplet_norm": False},
    "no_triplet": {"triplet_weight": 0.0},
    "raw_triplet_no_id": {"triplet_norm": False, "id_weight": 0.0},
    "pair_only_pk": {"id_weight": 0.0, "triplet_weight": 0.0},
    "raw_triplet_lr1e-4": {"triplet_norm": False, "lr": 1e-4},
    "raw_triplet_w0.1": {"triplet_norm": False, "triplet_weight": 0.1},
}


def held_out_split(train_dir: Path, dst: Path, n_ids: int = 100) -> Path:
    files = sorted(train_dir.glob("*.jpg"))
    pids = sorted({parse_market_name(f.name)[0] for f in files})
    held = set(pids[::7][:n_ids])
    seen: set[tuple[int, int]] = set()
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (dst / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        pid, cam = parse_market_name(f.name)[:2]
        if pid not in held:
            sub = "bounding_box_train"
        elif (pid, cam) in seen:
            sub = "bounding_box_test"
        else:
            sub = "query"
            seen.add((pid, cam))
        os.symlink(f.resolve(), dst / sub / f.name)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Market-1501 root (only bounding_box_train is read)")
    ap.add_argument("--init-weights", required=True)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--steps-per-epoch", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/recipe_sweep")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = held_out_split(Path(args.data) / "bounding_box_train", Path(tmp) / "market1501")
        data = load_dataset(root)
        print(data.summary())
        base = TrainConfig(data=str(root), out=args.out, backbone="efficientnet_lite0", pretrained=False,
                           init_weights=args.init_weights, height=128, width=64, epochs=args.epochs,
                           max_steps_per_epoch=args.steps_per_epoch, warmup_epochs=1, schedule="cosine",
                           last_stride=2, norm="imagenet",  # as measured in BENCHMARKS §1 (before issue #12)
                           workers=args.workers, eval_every=1)
        start = Trainer(replace(base, name="start"), data=data).evaluate()
        results = {"start": start.figures()}
        print("ImageNet start:", format_figures(start.plain), flush=True)
        for name in args.runs:
            cfg = replace(base, name=name, **RUNS[name])
            Trainer(cfg, data=data).fit()
            with open(cfg.run_dir / "log.csv") as f:
                results[name] = list(csv.DictReader(f))
            print(name, [(r["step"], r["rank1"], r["mAP"]) for r in results[name]], flush=True)
            Path(args.out, "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
