"""Where to cut when joining tracklets (BENCHMARKS §25.3): cosines of multi-crop means on Market-1501's TRAINING
identities (never its test split, never the footage the figures are reported on).

    python bench/join_threshold.py --data ../shared/data/market1501 --ids 200

A "tracklet" here is the mean of one identity's crops in one camera (up to 8, as a tracklet keeps). Joining
fragments within a video risks merging two people seen by the same camera; people across cameras risks merging two
people anywhere. For each cut: the share of same-person pairs (other camera) kept, and of different-person pairs
(same camera, and any camera) wrongly joined.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_core import ReID, load_dataset  # noqa: E402
from reid_core.evaluation.evaluate import extract  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ids", type=int, default=200)
    ap.add_argument("--crops", type=int, default=8)
    args = ap.parse_args()
    data = load_dataset(args.data)
    rng = np.random.default_rng(0)
    pids = rng.choice(sorted({r.pid for r in data.train}), args.ids, replace=False)
    groups: dict[tuple[int, int], list] = {}
    for r in data.train:
        if r.pid in set(pids.tolist()):
            groups.setdefault((r.pid, r.camid), []).append(r)
    groups = {k: v[:args.crops] for k, v in groups.items()}
    records = [r for v in groups.values() for r in v]
    reid = ReID.load()
    feats = extract(reid.embedding_step, records, desc="train crops")
    means, keys, s = [], [], 0
    for k, v in groups.items():
        m = feats[s:s + len(v)].mean(0)
        means.append(m / np.linalg.norm(m))
        keys.append(k)
        s += len(v)
    emb, keys = np.stack(means), np.array(keys)
    sim = emb @ emb.T
    iu = np.triu_indices(len(keys), 1)
    same_id = keys[iu[0], 0] == keys[iu[1], 0]
    same_cam = keys[iu[0], 1] == keys[iu[1], 1]
    cos = sim[iu]
    print(f"{args.ids} training identities, {len(keys)} (identity, camera) means of up to {args.crops} crops")
    print("| cut | same person, other camera: kept | other person, same camera: joined | other person, any camera: "
          "joined |\n|---|---|---|---|")
    for t in np.arange(0.3, 0.95, 0.05):
        pos = (cos[same_id] >= t).mean()
        neg_cam = (cos[~same_id & same_cam] >= t).mean()
        neg = (cos[~same_id] >= t).mean()
        print(f"| {t:.2f} | {100 * pos:.1f} % | {100 * neg_cam:.2f} % | {100 * neg:.3f} % |")


if __name__ == "__main__":
    main()
