"""The app's "Adapt to this gallery" on a real gallery from another camera network (BENCHMARKS.md §14): search AP
of the shipped weights before and after BatchNorm statistics from the gallery's own crops, as the app does it
(at most 500 crops, torch fp32, test-time flip as the app embeds).

    python bench/adapt_gallery.py --target ../shared/data/cuhk03 --ids 100

The gallery: `--ids` seeded identities of CUHK03's held-out half (the split `evaluate` scores); each identity's
first crop of each camera is a query, the rest are the gallery, as a visitor would upload them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid_core import ReID, load_dataset, market_rank  # noqa: E402


def search_map(reid: ReID, query: list, gallery: list) -> tuple[float, float]:
    """(mean AP, Rank-1) of the queries searched in the gallery, both embedded by `reid`."""
    q, g = reid.embed([r.path for r in query]), reid.embed([r.path for r in gallery])
    ranked = market_rank(1 - q @ g.T, np.array([r.pid for r in query]), np.array([r.pid for r in gallery]),
                         np.array([r.camid for r in query]), np.array([r.camid for r in gallery]))
    return ranked.mAP, float(ranked.cmc[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="CUHK03 folder (NNNN_KK files)")
    ap.add_argument("--weights", help="default: the shipped weights")
    ap.add_argument("--ids", type=int, default=100, help="identities in the gallery")
    ap.add_argument("--images", type=int, default=500, help="gallery crops the statistics come from (the app's 500)")
    args = ap.parse_args()
    data = load_dataset(args.target)
    pids = sorted({r.pid for r in data.query})
    keep = set(random.Random(0).sample(pids, min(args.ids, len(pids))))
    query = [r for r in data.query if r.pid in keep]
    gallery = [r for r in data.gallery if r.pid in keep]
    reid = ReID.load(args.weights, device="cpu", engine="fp32")  # the app's session models run torch fp32
    before = search_map(reid, query, gallery)
    t0 = time.perf_counter()
    crops = [gallery[i].path for i in sorted(random.Random(0).sample(range(len(gallery)),
                                                                     min(args.images, len(gallery))))]
    adapted = reid.bn_adapted(crops)
    seconds = time.perf_counter() - t0
    after = search_map(adapted, query, gallery)
    print(f"{len(query)} queries x {len(gallery)} gallery crops of {len(keep)} CUHK03 identities; statistics from "
          f"{len(crops)} gallery crops in {seconds:.1f} s\n"
          f"search mAP {100 * before[0]:.1f} -> {100 * after[0]:.1f}, Rank-1 {100 * before[1]:.1f} -> "
          f"{100 * after[1]:.1f}")


if __name__ == "__main__":
    main()
