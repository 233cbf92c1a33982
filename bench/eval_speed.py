"""Time the Market-1501 protocol on the full query x gallery matrix (3,368 x 15,913).

    python bench/eval_speed.py --data ../shared/data/market1501 [--repeat 5]

Uses the real pids and cameras of the split (so the same-camera and junk rules do their real work) and
random embeddings; prints the median time of the distance matrix and of the ranking metrics.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.data.datasets import load_dataset  # noqa: E402
from reid_core.evaluation.metrics import cosine_distance, market_rank  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    d = load_dataset(args.data)
    q_pids, q_cams = np.array([r.pid for r in d.query]), np.array([r.camid for r in d.query])
    g_pids, g_cams = np.array([r.pid for r in d.gallery]), np.array([r.camid for r in d.gallery])
    rng = np.random.default_rng(0)
    qf = rng.standard_normal((len(q_pids), args.dim), dtype=np.float32)
    gf = rng.standard_normal((len(g_pids), args.dim), dtype=np.float32)
    t_dist, t_rank = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        dist = cosine_distance(qf, gf)
        t1 = time.perf_counter()
        r = market_rank(dist, q_pids, g_pids, q_cams, g_cams)
        t2 = time.perf_counter()
        t_dist.append(t1 - t0)
        t_rank.append(t2 - t1)
    print(f"matrix {len(q_pids)} x {len(g_pids)}, dim {args.dim}, {r.num_valid} valid queries")
    print(f"distance median {statistics.median(t_dist):.2f} s, ranking (CMC/mAP/mINP) median "
          f"{statistics.median(t_rank):.2f} s, total {statistics.median(t_dist) + statistics.median(t_rank):.2f} s")
    print(f"random features: R1 {r.cmc[0]:.4f} mAP {r.mAP:.4f} (chance level, as expected)")


if __name__ == "__main__":
    main()
