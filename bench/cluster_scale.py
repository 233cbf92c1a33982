"""The clustering step of self-training at a camera network's size (BENCHMARKS.md section 24): the sparse
k-reciprocal Jaccard graph (reid_core.neighbours) and DBSCAN on it, for n synthetic re-id-like embeddings
(reid_core.synthetic: identities in a low-dimensional subspace, noisy views) with the default settings, two
cameras (camera-aware, as self-training clusters a network whose crops name their cameras). Prints one JSON line:
seconds per step, peak RSS of the process, clusters found and their purity. With --dense (small n only) it also
runs the dense form and says how far the two clusterings agree (adjusted Rand index). With --target, the
embeddings are real: a folder's crops (its cameras from their names) embedded by the shipped weights after the
BatchNorm rung, as self-training's first round clusters them (identity labels only score the purity).

    python bench/cluster_scale.py --n 100000
    python bench/cluster_scale.py --target ../shared/data/cuhk03 --dense
    python bench/cluster_scale.py --search 2048 50000    # the neighbour search alone: FAISS flat vs torch blocks
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid_core.adapt.clustering import cluster  # noqa: E402
from reid_core.adapt.config import AdaptConfig  # noqa: E402
from reid_core.search.synthetic import clustered  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def dense_labels(emb: np.ndarray, cams: np.ndarray, cfg: AdaptConfig) -> np.ndarray:
    """The dense form the sparse graph replaced (metrics.jaccard_distance on the full n x n matrix)."""
    from sklearn.cluster import DBSCAN

    from reid_core.evaluation.metrics import jaccard_distance

    emb = emb.copy()
    for c in np.unique(cams):
        emb[cams == c] -= emb[cams == c].mean(0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    penalty = cfg.camera_penalty * (cams[:, None] == cams[None, :])
    np.fill_diagonal(penalty, 0)
    dist = jaccard_distance(emb, cfg.k1, cfg.k2, penalty)
    return DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, metric="precomputed").fit_predict(dist)


def real_embeddings(target: str, cache: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip-averaged unit embeddings of the folder's training crops by the BatchNorm-adapted shipped weights, with
    their identities (for the purity only) and cameras."""
    if cache and Path(cache).exists():
        z = np.load(cache)
        return z["emb"], z["ids"], z["cams"]
    from reid_core.adapt.recipe import adapt_model
    from reid_core.adapt.split import Split, embed_maps, fill_cache
    from reid_core.adapt.targets import sample
    from reid_core.data.datasets import load_dataset
    from reid_core.model.network import load_model
    from reid_core.model.weights import resolve_weights

    records = sample(load_dataset(target).train, 0)
    model, _ = adapt_model(load_model(resolve_weights(None)), records, AdaptConfig(method="bn"))
    split = Split(model, AdaptConfig().train_stages)
    maps, kept = fill_cache(split, records, AdaptConfig(), True)
    emb = embed_maps(split, maps, progress=True)
    ids, cams = np.array([records[i].pid for i in kept]), np.array([records[i].camid for i in kept])
    if cache:
        np.savez(cache, emb=emb, ids=ids, cams=cams)
    return emb, ids, cams


def search_speeds(queries: int, base: int, dim: int, repeats: int = 3) -> dict:
    """The exact top-31 search of `queries` unit vectors among `base`, FAISS's flat index against the blocks of
    matrix products reid_core.evaluation.neighbours runs, side by side (medians; the same neighbours)."""
    import statistics

    import faiss

    from reid_core.evaluation.neighbours import _search, flat_index

    rng = np.random.default_rng(0)
    b = rng.standard_normal((base, dim), np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    q = b[:queries].copy()
    index = faiss.IndexFlatIP(dim)
    index.add(b)
    times: dict[str, list[float]] = {"faiss": [], "torch": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, by_faiss = index.search(q, 31)
        times["faiss"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, by_torch = _search(flat_index(b), np.arange(base), q, 31)
        times["torch"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"queries": queries, "base": base, "dim": dim, "faiss_s": round(med["faiss"], 2),
            "torch_s": round(med["torch"], 2), "ratio": round(med["faiss"] / med["torch"], 2),
            "same_neighbours": float((by_faiss == by_torch).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="embeddings (a multiple of --views)")
    ap.add_argument("--views", type=int, default=10, help="crops per identity, half in each camera")
    ap.add_argument("--dim", type=int, default=1280, help="embedding size (the shipped weights': 1280)")
    ap.add_argument("--dense", action="store_true", help="also the dense form, and the agreement of the two")
    ap.add_argument("--target", help="real crops instead: this folder's training images (see above)")
    ap.add_argument("--cache", help="with --target: keep the embeddings in this .npz and reuse them")
    ap.add_argument("--search", type=int, nargs=2, metavar=("QUERIES", "BASE"),
                    help="only time the neighbour search, FAISS flat vs torch blocks, at --dim")
    args = ap.parse_args()
    if args.search:
        print(json.dumps(search_speeds(*args.search, args.dim)), flush=True)
        return
    if args.target:
        emb, ids, cams = real_embeddings(args.target, args.cache)
    else:
        emb, _ = clustered(args.n // args.views, args.views, args.dim, view_noise=0.9, iso_noise=0.5)
        ids = np.repeat(np.arange(args.n // args.views), args.views)
        cams = np.tile(np.arange(args.views) % 2, args.n // args.views)
    cfg = AdaptConfig()
    before = peak_rss_gb()
    t0 = time.time()
    labels = cluster(emb, cfg, cams, progress=True)
    row = {"n": len(emb), "dim": args.dim, "seconds": round(time.time() - t0, 1),
           "peak_rss_gb_before": round(before, 2), "peak_rss_gb": round(peak_rss_gb(), 2),
           "clusters": int(labels.max()) + 1, "clustered": int((labels >= 0).sum())}
    kept = labels >= 0
    majority = [np.bincount(ids[kept][labels[kept] == c]).max() for c in range(labels.max() + 1)]
    row["purity"] = round(float(np.sum(majority) / max(1, kept.sum())), 3)
    if args.dense:
        from sklearn.metrics import adjusted_rand_score

        t0 = time.time()
        dense = dense_labels(emb, cams, cfg)
        row.update(dense_seconds=round(time.time() - t0, 1), dense_peak_rss_gb=round(peak_rss_gb(), 2),
                   dense_clusters=int(dense.max()) + 1, dense_clustered=int((dense >= 0).sum()),
                   adjusted_rand=round(float(adjusted_rand_score(dense, labels)), 4))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
