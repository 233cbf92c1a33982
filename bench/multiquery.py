"""What a tracklet buys over one crop: Market-1501's multi-query protocol beside single query (BENCHMARKS §25).

    python bench/multiquery.py --data ../shared/data/market1501 [--weights W] [--no-flip]

Multi-query, as Market-1501 defines it: a query is the mean of the query image's and every test crop of that
identity in that camera (what a tracklet's embedding is: several crops of one passage through one camera),
ranked against the same gallery under the same protocol (same identity and camera removed, so the averaged
crops are never matches).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_core import ReID, load_dataset, market_rank  # noqa: E402
from reid_core.evaluation.evaluate import extract  # noqa: E402
from reid_core.evaluation.metrics import cosine_distance  # noqa: E402


def multi_query(qf: np.ndarray, q_ids: np.ndarray, gf: np.ndarray, g_ids: np.ndarray) -> np.ndarray:
    """Each query's embedding averaged with the gallery's crops of its (pid, camera), re-normalised."""
    out = qf.copy()
    for k, key in enumerate(map(tuple, q_ids)):
        same = (g_ids[:, 0] == key[0]) & (g_ids[:, 1] == key[1])
        out[k] = qf[k] + gf[same].sum(0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--no-flip", dest="flip", action="store_false")
    args = ap.parse_args()
    data = load_dataset(args.data)
    reid = ReID.load(args.weights, flip=args.flip)
    t0 = time.time()
    qf = extract(reid.embedding_step, data.query, desc="query")
    gf = extract(reid.embedding_step, data.gallery, desc="gallery")
    q_ids = np.array([[r.pid, r.camid] for r in data.query])
    g_ids = np.array([[r.pid, r.camid] for r in data.gallery])
    rows = {"single query": qf, "multi-query (mean of the identity's crops in that camera)":
            multi_query(qf, q_ids, gf, g_ids)}
    print(f"{len(qf)} queries x {len(gf)} gallery, flip {'on' if args.flip else 'off'}, engine {reid.engine}, "
          f"{time.time() - t0:.0f} s to embed")
    print("| query | Rank-1 | Rank-5 | mAP | mINP |\n|---|---|---|---|---|")
    for name, f in rows.items():
        r = market_rank(cosine_distance(f, gf), q_ids[:, 0], g_ids[:, 0], q_ids[:, 1], g_ids[:, 1])
        print(f"| {name} | {100 * r.cmc[0]:.1f} | {100 * r.cmc[4]:.1f} | {100 * r.mAP:.1f} | {100 * r.mINP:.1f} |")


if __name__ == "__main__":
    main()
