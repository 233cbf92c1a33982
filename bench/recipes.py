"""Which training recipe, at an equal budget: one script, three questions (BENCHMARKS.md §1 and §9.2).

    python bench/recipes.py budget --data ../shared/data/market1501 --init-weights W.safetensors --steps 240
    python bench/recipes.py sweep --data ../shared/data/market1501 --init-weights init/lite0_timm.safetensors
    python bench/recipes.py ablation --data ../shared/data/market1501 --cuhk03 ../shared/data/cuhk03

- budget: the seed recipe (pair BCE only) vs the default recipe (ID + triplet + pair BCE) at equal compute: the
  same backbone, input size and optimiser steps of 64 images (PK 16x4 vs 32 pairs), scored on the full
  query/gallery split; the wall-clock each took is printed beside.
- sweep: which loss term helps or hurts at a small budget, the default recipe with one term changed at a time.
  Needs only the train split: 100 of its identities are held out as query/gallery (one query image per camera,
  the rest gallery), linked (never copied) into a temporary Market-style folder; scored after every epoch.
- ablation (issue #12): each fix's gain at one equal budget, then the backbones, then the data, on the sweep's
  held-out split and on 100 held-out CUHK03 identities (other people, other cameras: a proxy for a user's camera
  network). Every run takes the same steps of 64 images (PK 16x4), schedule and seed, so each row differs from
  the one it names by one change; the ImageNet start of every row is scored too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from questions import Question, ask  # bench/ is the script's folder: on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.data.datasets import combine, load_dataset, parse_market_name  # noqa: E402
from reid_core.evaluation.evaluate import EvalOptions, evaluate, format_figures, subset_eval  # noqa: E402
from reid_core.model.convert import convert  # noqa: E402
from reid_core.model.pretrained import lite_package_file  # noqa: E402
from reid_core.train.config import TrainConfig  # noqa: E402
from reid_core.train.trainer import Trainer  # noqa: E402


def budget_flags(ap: argparse.ArgumentParser) -> None:
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


def budget(args: argparse.Namespace) -> None:
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


def sweep_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", required=True, help="Market-1501 root (only bounding_box_train is read)")
    ap.add_argument("--init-weights", required=True)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--steps-per-epoch", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/recipe_sweep")


def sweep(args: argparse.Namespace) -> None:
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


def ablation_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", required=True, help="Market-1501 root (only bounding_box_train is read)")
    ap.add_argument("--cuhk03", required=True, help="CUHK03 root (training ids join the cuhk03 row; 100 of its "
                                                    "held-out ids score every row)")
    ap.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS])
    ap.add_argument("--results", default="results.json", help="file name under --out for this call's rows")
    ap.add_argument("--steps", type=int, default=120, help="optimiser steps of 64 images per run")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out", default="runs/ablation")


def ablation(args: argparse.Namespace) -> None:
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



QUESTIONS: dict[str, Question] = {
    "budget": (budget_flags, budget, "seed recipe vs default recipe at equal compute"),
    "sweep": (sweep_flags, sweep, "one loss term changed at a time, on held-out train identities"),
    "ablation": (ablation_flags, ablation, "issue #12: each fix, the backbones, the data"),
}


def main() -> None:
    ask(__doc__, QUESTIONS)


if __name__ == "__main__":
    main()
