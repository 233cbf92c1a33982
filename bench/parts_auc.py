"""Does Compare's explanation explain the verdict? On real pairs, how well the quantity each picture shows tells a
same-person pair from a different one (ROC AUC): the old per-region agreement map (each cell of one crop's feature
map scored by its best cosine anywhere in the other, averaged over both maps) against the stripe cosines that
`ReID.compare_parts` gives (mean over the stripes; also the worst stripe), for several stripe counts, each stripe
matched to the same stripe only (shift 0) or to the best within one (shift 1, the app's), beside the pair head's
probability and the embedding cosine.

    python bench/parts_auc.py --data /path/to/market1501 [--weights weights/model.safetensors] [--pairs 300]

`--time N`: also the median of N Compares of two pairs' crops, before (the engine's `ReID.compare`, then the map's
own torch pass) and after (`compare_parts`: one pass), on the engine `ReID.load` picks here.

Pairs: `--pairs` same-id and as many different-id pairs, each of two crops from different cameras, drawn with a
fixed seed from Market-1501's bounding_box_train (the identities the shipped weights were trained on; the test
identities are for the headline figures). Test-time flip as the app runs it (on).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core import ReID  # noqa: E402
from reid_core.data.datasets import Record, load_market  # noqa: E402


def cross_camera_pairs(records: list[Record], n: int, seed: int) -> tuple[list[tuple[Path, Path]], list[int]]:
    """n same-id and n different-id pairs, every pair from two cameras; labels 1 (same) and 0."""
    rng = random.Random(seed)
    by_pid: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        by_pid[r.pid].append(r)
    multi = [p for p, rs in by_pid.items() if len({r.camid for r in rs}) > 1]
    pairs, labels = [], []
    while len(pairs) < n:
        a = rng.choice(by_pid[rng.choice(multi)])
        b = rng.choice([r for r in by_pid[a.pid] if r.camid != a.camid])
        pairs.append((a.path, b.path))
        labels.append(1)
    while len(pairs) < 2 * n:
        a, b = rng.sample(records, 2)
        if a.pid != b.pid and a.camid != b.camid:
            pairs.append((a.path, b.path))
            labels.append(0)
    return pairs, labels


@torch.no_grad()
def old_agreement(reid: ReID, a: Path, b: Path) -> float:
    """What the app's heat map showed before (ReID.similarity_map, removed): the mean of both best-match maps."""
    x = reid.pixels([a, b]).to(reid.device).contiguous(memory_format=torch.channels_last)
    fm = F.normalize(reid.model.feature_map(x).float(), dim=1)
    sim = fm[0].flatten(1).T @ fm[1].flatten(1)
    return float((sim.max(1).values.clamp(0, 1).mean() + sim.max(0).values.clamp(0, 1).mean()) / 2)


def timed(reid: ReID, pair: tuple[Path, Path], n: int) -> None:
    """Median ms of one Compare of the pair (crops decoded once), the old way and the new, after one warm-up each."""
    from reid_core import load_image

    a, b = (load_image(p) for p in pair)
    for name, run in (("before: engine compare + map pass", lambda: (reid.compare(a, b), old_agreement(reid, a, b))),
                      ("after: compare_parts, one pass", lambda: reid.compare_parts(a, b))):
        run()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            run()
            times.append(1000 * (time.perf_counter() - t))
        print(f"{name}: median {statistics.median(times):.1f} ms over {n} ({reid.engine})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Market-1501 root (its bounding_box_train is read)")
    ap.add_argument("--weights", default=None, help="default: $REID_WEIGHTS, else weights/model.safetensors")
    ap.add_argument("--pairs", type=int, default=300, help="same-id pairs, and as many different-id pairs")
    ap.add_argument("--stripes", type=int, nargs="+", default=[3, 6, 8])
    ap.add_argument("--shifts", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time", type=int, default=0, help="also time N Compares before and after (0: no timing)")
    args = ap.parse_args()
    torch.manual_seed(0)
    reid = ReID.load(args.weights, device="cpu", engine="fp32")  # compare_parts runs torch fp32 whatever the engine
    pairs, labels = cross_camera_pairs(load_market(Path(args.data)).train, args.pairs, args.seed)
    scores: dict[str, list[float]] = defaultdict(list)
    t0 = time.perf_counter()
    for a, b in pairs:
        scores["old map: mean agreement"].append(old_agreement(reid, a, b))
        for s in args.stripes:
            for shift in args.shifts:
                c, parts = reid.compare_parts(a, b, stripes=s, shift=shift)
                scores[f"{s} stripes, shift {shift}: mean cosine"].append(float(parts.mean()))
                scores[f"{s} stripes, shift {shift}: lowest stripe"].append(float(parts.min()))
        scores["pair head probability"].append(c.score)
        scores["embedding cosine"].append(c.cosine)
    if args.time:
        timed(ReID.load(args.weights, device="cpu"), pairs[0], args.time)
    y = np.array(labels)
    print(f"{len(pairs)} pairs ({sum(labels)} same, cross-camera) from {args.data}, "
          f"{time.perf_counter() - t0:.0f} s\n\n| quantity | AUC same vs different | mean same | mean different |\n"
          "|---|---|---|---|")
    for name, v in scores.items():
        v = np.array(v)
        print(f"| {name} | {roc_auc_score(y, v):.3f} | {v[y == 1].mean():.3f} | {v[y == 0].mean():.3f} |")


if __name__ == "__main__":
    main()
