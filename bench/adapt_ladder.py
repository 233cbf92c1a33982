"""The adaptation ladder (BENCHMARKS.md §14): the shipped weights adapted to CUHK03 without its labels, each rung
scored on CUHK03's held-out identities (and, for the chosen rungs, on Market: what the source domain loses).

    python bench/adapt_ladder.py --target ../shared/data/cuhk03 --rungs base bn [--market ../shared/data/market1501]

CUHK03 (NNNN_KK files) splits its identities in two seeded halves: the training half is the unlabeled target
folder; `--score test` scores on the other half (the reported figures), `--score select` on the training half's own
labels (what settings were chosen on: the identities the adaptation saw, unlabeled, never the test half).
Rungs: base, bn, bn-backbone, bn-neck, bn-N (statistics from N target crops, 0: all), bn-cams (camera-balanced
batches), self-train (every round scored; `--save DIR` keeps each round's weights), saved (the rounds kept in --save
scored again). Self-training settings come from the flags of `python -m reid_core adapt`. Every rung is scored with
plain, camera-centred (centred_), flip-averaged (flip_) and both (flip_centred_) embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid_core.adapt.config import AdaptConfig, Round  # noqa: E402
from reid_core.adapt.recipe import adapt_model  # noqa: E402
from reid_core.adapt.targets import target_records  # noqa: E402
from reid_core.data.datasets import Record, ReIDData, _split_ids, load_dataset  # noqa: E402
from reid_core.engines import choose_engine  # noqa: E402
from reid_core.evaluation.evaluate import EvalOptions, evaluate  # noqa: E402
from reid_core.model.network import SiameseReID, load_model, save_model
from reid_core.model.weights import resolve_weights

CACHE: Path | None = None  # where the ladder's ONNX exports go ($REID_CACHE_DIR, else a temporary folder)


def scored(model: SiameseReID, data: ReIDData, flip: bool = True) -> dict[str, float]:
    """Rank-1 / mAP / mINP through ONNX Runtime, the default engine on a CPU: plain and camera-centred
    (centred_), and with `flip` the same of flip-averaged embeddings (flip_, flip_centred_)."""
    embedder = choose_engine(model, "onnx", CACHE)[0]
    m = evaluate(model, data.query, data.gallery, EvalOptions(flip=flip, centred=True, progress=False),
                 embedder).figures()
    prefixes = ("", "centred_", "flip_", "flip_centred_") if flip else ("", "centred_")
    return {p + k: round(100 * m[p + k], 1) for p in prefixes for k in ("rank1", "mAP", "mINP")}


def select_split(target: Path) -> ReIDData:
    """The training half scored with its own labels (first image of each camera a query, the rest gallery)."""
    train = load_dataset(target).train
    by_pid: dict[int, list] = {}
    for r in train:
        by_pid.setdefault(r.pid, []).append(r)
    return _split_ids(by_pid, 1.0, 0)


class RoundScorer:
    """Scores the model after each self-training round; the time spent scoring is not the adaptation's."""

    def __init__(self, report: Callable[..., None]):
        self.report, self.t0, self.scoring = report, time.time(), 0.0

    def __call__(self, r: Round, model: SiameseReID) -> None:
        t1 = time.time()
        self.report(f"self-train round {r.round}", model, t1 - self.t0 - self.scoring,
                    {"clusters": r.clusters, "clustered": r.clustered, "round_seconds": round(r.seconds, 1),
                     "agreement": round(r.agreement, 4) if r.agreement is not None else None})
        self.scoring += time.time() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="default: the shipped weights")
    ap.add_argument("--target", required=True, help="CUHK03 folder (NNNN_KK files)")
    ap.add_argument("--market", help="also score the adapted models on this Market-1501 folder")
    ap.add_argument("--market-rungs", nargs="+", default=["bn", "self-train"],
                    help="the rungs scored on --market (self-train: its last round)")
    ap.add_argument("--score", choices=["test", "select", "both"], default="both")
    ap.add_argument("--rungs", nargs="+", default=["base", "bn", "self-train"])
    ap.add_argument("--json", help="append one JSON line per result to this file")
    ap.add_argument("--save", help="keep each self-training round's weights in this folder (roundN.safetensors), "
                                   "to score them again later (--rungs saved)")
    ap.add_argument("--tracklets", action="store_true",
                    help="give self-training each target crop's (identity, camera) group as its tracklet, what a "
                         "tracker gives for free on footage (identities stay unread otherwise): how much tracklets add")
    for f in fields(AdaptConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):
            ap.add_argument(flag, action="store_true")
        elif f.name != "method":
            ap.add_argument(flag, type=type(f.default), default=f.default)
    args = ap.parse_args()
    global CACHE
    CACHE = Path(os.environ.get("REID_CACHE_DIR") or tempfile.mkdtemp(prefix="reid-onnx-"))
    base = load_model(resolve_weights(args.weights or os.environ.get("REID_WEIGHTS")))
    target = target_records(args.target)
    if args.tracklets:  # the same crops in the same order, each with its (identity, camera) group as a tracklet
        train = load_dataset(args.target).train
        if [t.path for t in target] != [r.path for r in train]:
            raise SystemExit("--tracklets: the target's crops are not its training split's")
        groups = {key: k for k, key in enumerate(sorted({(r.pid, r.camid) for r in train}))}
        target = [Record(t.path, -1, t.camid, groups[r.pid, r.camid]) for t, r in zip(target, train, strict=True)]
    splits = {name: load_dataset(args.target) if name == "test" else select_split(Path(args.target))
              for name in (("test", "select") if args.score == "both" else (args.score,))}
    market = load_dataset(args.market) if args.market else None
    print(f"target: {len(target)} unlabeled crops; scored on " + "; ".join(
        f"{name}: {len(d.query)} queries x {len(d.gallery)} gallery" for name, d in splits.items()), flush=True)

    def report(rung: str, model: SiameseReID, seconds: float, extra: dict | None = None) -> None:
        row = {"rung": rung, "seconds": round(seconds, 1), **(extra or {}),
               **{name: scored(model, d) for name, d in splits.items()}}
        last = rung == f"self-train round {args.rounds}"
        if market is not None and (rung in args.market_rungs or (last and "self-train" in args.market_rungs)):
            row["market"] = scored(model, market, flip=False)
        print(json.dumps(row), flush=True)
        if args.save and rung.startswith("self-train round "):  # (not the BatchNorm rung: seconds to make again)
            Path(args.save).mkdir(parents=True, exist_ok=True)
            save_model(model, Path(args.save) / f"round{rung.split()[-1]}.safetensors")
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    saved = sorted((p for p in Path(args.save).glob("round*.safetensors") if re.fullmatch(r"round\d+", p.stem)),
                   key=lambda p: int(p.stem[5:])) if args.save else []
    if saved and "self-train" in args.rungs:
        raise SystemExit(f"--save {args.save} already holds rounds of another run: name an empty folder")
    settings = {f.name: getattr(args, f.name) for f in fields(AdaptConfig) if f.name != "method"}
    for rung in args.rungs:
        if rung == "base":
            report(rung, base, 0.0)
            continue
        if rung == "saved":  # the rounds a run kept (--save) scored again, nothing trained
            if not args.save:
                raise SystemExit("--rungs saved needs --save DIR (where an earlier run kept its rounds)")
            for path in saved:
                report(f"saved {path.stem}", load_model(path), 0.0)
            continue
        cfg = AdaptConfig(method="bn", **settings)
        if rung.startswith("bn-") and rung[3:].isdigit():
            cfg.bn_images = int(rung[3:])  # bn-0: every target crop
        elif rung in ("bn-backbone", "bn-neck"):
            cfg.bn_layers = rung[3:]
        elif rung == "bn-cams":
            cfg.balance_cameras = True
        elif rung == "self-train":
            cfg.method = "self-train"
            adapt_model(base, target, cfg, on_round=RoundScorer(report))
            continue
        elif rung != "bn":
            raise SystemExit(f"unknown rung {rung}")
        t0 = time.time()
        model, rep = adapt_model(base, target, cfg, progress=False)
        report(rung, model, time.time() - t0, {"images": rep.images})


if __name__ == "__main__":
    main()
