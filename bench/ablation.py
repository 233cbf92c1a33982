"""Issue #12's ablation: each fix's gain at one equal budget, then the backbones, then the data.

    python bench/ablation.py --data ../shared/data/market1501 --cuhk03 ../shared/data/cuhk03

Recipes are judged on identities no run trains on: 100 Market train identities are held out as query/gallery
(bench/recipe_sweep.py's split; Market's own query/gallery split is never read), and every model is also
scored on 100 held-out CUHK03 identities (other people, other cameras: a proxy for a user's camera network).
Every run takes the same optimiser steps of 64 images (PK 16x4), the same schedule and the same seed, so each
row differs from the one above it by one change. The ImageNet start of every row is scored too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from recipe_sweep import held_out_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.data.datasets import combine, load_dataset  # noqa: E402
from reid_core.evaluation.evaluate import EvalOptions, evaluate, subset_eval  # noqa: E402
from reid_core.model.convert import convert  # noqa: E402
from reid_core.model.pretrained import lite_package_file  # noqa: E402
from reid_core.train.config import TrainConfig
from reid_core.train.trainer import Trainer  # noqa: E402

# (name, the row it changes, what changed, config overrides): the fixes in turn, then the backbones and the
# data, each against the last fix's row.
ROWS: list[tuple[str, str, str, dict]] = [
    ("shipped", "", "the shipped recipe: timm efficientnet_lite0 (wrong ImageNet mapping), ImageNet mean/std, "
     "output stride 32, raw triplet",
     {"backbone": "efficientnet_lite0", "norm": "imagenet", "last_stride": 2, "triplet_norm": False}),
    ("tf_mapping", "shipped", "+ the right network for the weights: tf_efficientnet_lite0",
     {"backbone": "tf_efficientnet_lite0"}),
    ("tf_norm", "tf_mapping", "+ TF input normalisation (x - 127) / 128", {"norm": "tf"}),
    ("last_stride1", "tf_norm", "+ last stride 1 (output stride 16)", {"last_stride": 1}),
    ("unit_triplet", "last_stride1", "+ triplet on unit vectors (the default recipe)", {"triplet_norm": True}),
    ("lite1", "unit_triplet", "backbone tf_efficientnet_lite1", {"backbone": "tf_efficientnet_lite1"}),
    ("lite2", "unit_triplet", "backbone tf_efficientnet_lite2", {"backbone": "tf_efficientnet_lite2"}),
    ("cuhk03", "unit_triplet", "+ CUHK03 training identities (733, kept apart)", {"extra": True}),
    # the same fixes with the recipe first: at a short budget the raw triplet's early dip hides the rest
    ("recipe_first", "shipped", "shipped + triplet on unit vectors", {"triplet_norm": True}),
    ("recipe_tf_mapping", "recipe_first", "+ tf_efficientnet_lite0", {"backbone": "tf_efficientnet_lite0"}),
    ("recipe_tf_norm", "recipe_tf_mapping", "+ (x - 127) / 128 (then + last stride 1 = unit_triplet)", {"norm": "tf"}),
]
KEYS = ("rank1", "mAP", "mINP", "pair_auc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Market-1501 root (only bounding_box_train is read)")
    ap.add_argument("--cuhk03", required=True, help="CUHK03 root (training ids join the cuhk03 row; 100 of its "
                                                    "held-out ids score every row)")
    ap.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS])
    ap.add_argument("--results", default="results.json", help="file name under --out for this call's rows")
    ap.add_argument("--steps", type=int, default=120, help="optimiser steps of 64 images per run")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out", default="runs/ablation")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuhk = load_dataset(args.cuhk03)
    cuhk_q, cuhk_g = subset_eval(cuhk, 100, seed=1)
    base = TrainConfig(out=args.out, pretrained=False, height=args.height, width=args.width, epochs=3,
                       max_steps_per_epoch=args.steps // 3, warmup_epochs=1, schedule="cosine", workers=2, seed=0)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        market = load_dataset(held_out_split(Path(args.data) / "bounding_box_train", Path(tmp) / "market1501"))
        settings: dict[str, dict] = {"": {}}
        for name, parent, what, change in ROWS:
            overrides = settings[name] = {**settings[parent], **change}
            if name not in args.rows:
                continue
            extra = overrides.get("extra", False)
            cfg_kw = {k: v for k, v in overrides.items() if k != "extra"}
            init = out / f"{cfg_kw['backbone']}.imagenet.safetensors"
            if not init.exists():
                convert(lite_package_file(cfg_kw["backbone"]), cfg_kw["backbone"], str(init))
            cfg = replace(base, name=name, init_weights=str(init), data=str(market.root), **cfg_kw)
            trainer = Trainer(cfg, data=combine([market, cuhk]) if extra else market)
            q, g = market.query, market.gallery
            row = {"what": what, "config": cfg_kw | {"extra_data": ["cuhk03"] if extra else []},
                   "start": evaluate(trainer.model, q, g, EvalOptions(progress=False)).figures()}
            t0 = time.time()
            trainer.fit()
            row["train_seconds"] = round(time.time() - t0, 1)
            after = evaluate(trainer.model, q, g, EvalOptions(progress=False, flip=True)).figures()
            row["after"] = {k: v for k, v in after.items() if not k.startswith("flip_")}
            row["after_flip"] = {k[5:]: v for k, v in after.items() if k.startswith("flip_")}
            row["cuhk03"] = evaluate(trainer.model, cuhk_q, cuhk_g, EvalOptions(progress=False)).figures()
            results[name] = row
            print(name, {k: {m: round(100 * row[k][m], 1) for m in KEYS}
                         for k in ("start", "after", "after_flip", "cuhk03")}, flush=True)
            (out / args.results).write_text(json.dumps(results, indent=1))
    print(f"| row | change | ImageNet start R1 / mAP | after {args.steps} steps R1 / mAP / mINP | + flip R1 / mAP |"
          " CUHK03 held-out R1 / mAP | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s, a, f, c = r["start"], r["after"], r["after_flip"], r["cuhk03"]
        print(f"| {name} | {r['what']} | {100 * s['rank1']:.1f} / {100 * s['mAP']:.1f} | {100 * a['rank1']:.1f} / "
              f"{100 * a['mAP']:.1f} / {100 * a['mINP']:.1f} | {100 * f['rank1']:.1f} / {100 * f['mAP']:.1f} | "
              f"{100 * c['rank1']:.1f} / {100 * c['mAP']:.1f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
