"""Top-10 search over a large gallery: numpy brute force vs FAISS flat vs the approximate GalleryIndex (IVF-Flat),
in one run, with recall@10 of the approximate index against exact search.

    python bench/search_speed.py --n 1000000 --dim 512 [--queries 1000] [--latency-queries 50]

Random isotropic vectors have no neighbourhoods (every point is about as far from every other), which makes
IVF/HNSW recall meaningless, so the gallery is re-id-like: identities are random centres in a `--latent`-dim
subspace of R^dim (embeddings of a trained network occupy far fewer dimensions than they have), each seen in
`--views` noisy views (same-identity cosine ~0.7, different identities ~0 +- 1/sqrt(latent), plus isotropic
noise); the queries are held-out views of gallery identities.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.search.index import TRAIN_POINTS_PER_CELL, GalleryIndex, recall_at_k  # noqa: E402
from reid_core.search.synthetic import clustered  # noqa: E402


def median_ms(fn, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def faiss_flat(gallery: np.ndarray, queries: np.ndarray, lat: np.ndarray, exact: list[list[int]], k: int) -> float:
    """The plain FAISS alternative: exact IndexFlatIP (its own 2 GiB copy, freed on return)."""
    import faiss

    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    t_flat = time.perf_counter() - t0
    flat_ms = median_ms(lambda q: flat.search(q[None], k), lat)
    flat_recall = recall_at_k(flat.search(queries, k)[1].tolist(), exact, k)
    print(f"faiss IndexFlatIP: median {flat_ms:.1f} ms/query, recall@{k} {flat_recall:.4f} (build {t_flat:.1f} s)")
    return flat_ms


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--views", type=int, default=10, help="gallery views per identity (+1 held out as a query)")
    ap.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    ap.add_argument("--latency-queries", type=int, default=50, help="single queries timed for brute force")
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (0: the index default, ~4 sqrt(n))")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128, 250, 500],
                    help="IVF cells scanned per query (250: the index's default nlist/16 for 1M rows)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    n_ids = args.n // args.views
    t0 = time.perf_counter()
    gallery, held = clustered(n_ids, args.views, args.dim, args.latent)
    queries = held[np.random.default_rng(1).choice(n_ids, args.queries, replace=False)]
    del held
    print(f"data: {len(gallery):,} x {args.dim} ({n_ids:,} identities x {args.views} views, latent {args.latent}), "
          f"{args.queries} held-out queries, made in {time.perf_counter() - t0:.0f} s; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")

    index = GalleryIndex(approx="ivf", nlist=args.nlist or None)
    t0 = time.perf_counter()
    index.add(gallery, [str(i) for i in range(len(gallery))])
    t_add = time.perf_counter() - t0
    del gallery  # the index holds its own normalised copy
    gc.collect()
    k = args.k
    lat = queries[: args.latency_queries]
    numpy_ms = median_ms(lambda q: index.search(q, k, exact=True), lat)
    t0 = time.perf_counter()
    exact = [[int(m["id"]) for m in row] for row in index.search(queries, k, exact=True)[1]]
    t_exact = time.perf_counter() - t0
    print(f"numpy brute force (GalleryIndex exact): median {numpy_ms:.1f} ms/query "
          f"(add {t_add:.1f} s; {args.queries}-query batch {t_exact:.1f} s)")

    flat_ms = faiss_flat(index._emb, queries, lat, exact, k)

    t0 = time.perf_counter()
    index.train()
    t_train = time.perf_counter() - t0
    sample = min(len(index), TRAIN_POINTS_PER_CELL * index.nlist)
    print(f"IVF-Flat nlist {index.nlist}: build (k-means on {sample:,} rows + add {len(index):,}) {t_train:.1f} s")
    print(f"| nprobe | recall@{k} | median ms/query | speed-up vs numpy | speed-up vs faiss flat |")
    print("|---|---|---|---|---|")
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        approx = [[int(m["id"]) for m in row] for row in index.search(queries, k)[1]]
        ms = median_ms(lambda q: index.search(q, k), queries)
        print(f"| {nprobe} | {recall_at_k(approx, exact, k):.4f} | {ms:.2f} | {numpy_ms / ms:.0f}x | "
              f"{flat_ms / ms:.0f}x |")
    print(f"peak memory {peak_gib():.1f} GiB")


if __name__ == "__main__":
    main()
