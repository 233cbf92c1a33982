"""The k-reciprocal Jaccard distance of many embeddings as a sparse graph: exact nearest neighbours, then
metrics.kreciprocal_weights (the core re-ranking shares), kept only between items that are near: each one's k1
nearest and the items its k-reciprocal weights reach.

Pseudo-label clustering (reid_core.adapt) needs it for a camera network's 10^5 crops, where the n x n distance
and Jaccard matrices of the dense form (metrics.jaccard_distance) would take tens of GB: here memory grows with
n k1, and DBSCAN reads the graph as a sparse precomputed distance (a pair that is not stored is never a
neighbour, which at the DBSCAN radius costs next to nothing: BENCHMARKS.md section 24).

The neighbours are exact: blocks of queries times the base (a matrix product and a top-k in torch, which ran 4x
FAISS's flat index for 1280-d embeddings on one core here, BENCHMARKS.md section 24.1), so memory is one block's
similarities (SEARCH_BLOCK x n floats) beside the embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..base.progress import progress_bar
from .metrics import jaccard_pairs, kreciprocal_weights

SEARCH_BLOCK = 1024  # queries per block: a bar step, and (block x n) similarities at a time (400 MB at n = 10^5)


def flat_index(base: np.ndarray) -> torch.Tensor:
    """The base of an exact inner-product search (shares `base`'s memory)."""
    return torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))


@torch.no_grad()
def _search(index: torch.Tensor, base_ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of `queries` in a flat_index, a block of queries at a time: (similarities,
    ids from base_ids), best first."""
    k = min(k, len(index))
    sims, found = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), SEARCH_BLOCK):
        v, j = (torch.from_numpy(np.ascontiguousarray(queries[s:s + SEARCH_BLOCK])) @ index.T).topk(k, dim=1)
        sims[s:s + len(v)], found[s:s + len(v)] = v.numpy(), j.numpy()
    return sims, base_ids[found]


def nearest(feats: np.ndarray, k: int, cams: np.ndarray | None = None, penalty: float = 0.0,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each unit row's k + 1 nearest rows, itself first, and their distances 2 - 2 cos (squared Euclidean), with
    `penalty` added between two rows of one camera (`cams`). Exact: with cameras, each camera's rows search their
    own camera and the others apart, so a penalised neighbour list is the best of both, not a re-sorted
    approximation. (n, k + 1) ints and float32s."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    n = len(feats)
    k = min(k, n - 1)
    groups = [np.arange(n)] if cams is None or penalty == 0 else [np.flatnonzero(cams == c) for c in np.unique(cams)]
    rank = np.zeros((n, k + 1), np.int64)
    dist = np.zeros((n, k + 1), np.float32)
    bar = progress_bar(total=n, desc="neighbours", unit="crop", disable=not progress)
    for g in groups:
        other = np.setdiff1d(np.arange(n), g, assume_unique=True) if len(groups) > 1 else g[:0]
        own_index = flat_index(feats[g])
        other_index = flat_index(feats[other]) if len(other) else None
        for s in range(0, len(g), SEARCH_BLOCK):
            q = g[s:s + SEARCH_BLOCK]
            sims, ids = _search(own_index, g, feats[q], k + 1)
            d = np.maximum(0, 2 - 2 * sims) + penalty * (len(groups) > 1)
            if len(other):
                o_sims, o_ids = _search(other_index, other, feats[q], k + 1)
                ids, d = np.hstack([ids, o_ids]), np.hstack([d, np.maximum(0, 2 - 2 * o_sims)])
            d[ids == q[:, None]] = -1.0  # itself first, whatever the rounding
            order = np.argsort(d, axis=1, kind="stable")[:, : k + 1]
            rank[q], dist[q] = np.take_along_axis(ids, order, 1), np.take_along_axis(d, order, 1).clip(0)
            bar.update(len(q))
    bar.close()
    return rank, dist


def pair_distance(feats: np.ndarray, cams: np.ndarray | None, penalty: float, chunk: int = 65_536,
                  progress: bool = False) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """dist(rows, cols) for kreciprocal_weights: 2 - 2 cos of unit rows, plus `penalty` within a camera."""

    def dist(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), np.float32)
        for s in progress_bar(range(0, len(rows), chunk), desc="k-reciprocal sets", unit="block",
                              disable=not progress):
            r, c = rows[s:s + chunk], cols[s:s + chunk]
            out[s:s + chunk] = np.maximum(0, 2 - 2 * np.einsum("ij,ij->i", feats[r], feats[c]))
            if cams is not None and penalty:
                out[s:s + chunk] += penalty * ((cams[r] == cams[c]) & (r != c))
        return out

    return dist


def jaccard_graph(feats: np.ndarray, k1: int = 30, k2: int = 6, cams: np.ndarray | None = None,
                  penalty: float = 0.0, progress: bool = False) -> Any:
    """The k-reciprocal Jaccard distance (k1, k2 as metrics.kreciprocal_jaccard) of unit embeddings on their
    distance 2 - 2 cos, plus `penalty` between two rows of one camera, as a symmetric scipy CSR matrix holding
    each row's distance to its k1 nearest and to every row its k-reciprocal weights reach (and theirs to it):
    the same values as the dense form's at those pairs, and every pair the dense form puts closer than 0.5 (a
    DBSCAN radius) was among them in the tests; its k1 nearest alone missed 13 % of those on noisy synthetic
    identities. Distances of 0 are stored as 1e-12, so a sparse reader never takes one for a missing pair."""
    from scipy import sparse

    feats = np.ascontiguousarray(feats, dtype=np.float32)
    n = len(feats)
    if n < 2:
        raise ValueError(f"a Jaccard graph needs at least 2 embeddings, got {n}")
    cams = None if cams is None or not penalty else np.asarray(cams)
    rank, _ = nearest(feats, k1, cams, penalty, progress)
    v = kreciprocal_weights(rank, pair_distance(feats, cams, penalty, progress=progress), k2)
    coo = v.tocoo()
    rows = np.r_[np.repeat(np.arange(n), rank.shape[1] - 1), coo.row].astype(np.int64)
    cols = np.r_[rank[:, 1:].ravel(), coo.col].astype(np.int64)
    del coo
    keys = np.minimum(rows, cols) * n + np.maximum(rows, cols)
    keys = np.unique(keys[rows != cols])  # each unordered pair once
    del rows, cols
    a, b = keys // n, keys % n
    bar = progress_bar(total=len(a), desc="Jaccard distances", unit="pair", disable=not progress)
    d = np.maximum(jaccard_pairs(v, a, b, step=bar.update), 1e-12)
    bar.close()
    return sparse.csr_matrix((np.r_[d, d], (np.r_[a, b], np.r_[b, a])), shape=(n, n))


def mutual_share(feats: np.ndarray, cams: np.ndarray | None = None) -> float:
    """The share of unit rows that are mutual nearest neighbours: i's nearest row in the other cameras has i as
    its own nearest in the other cameras (every row but itself when `cams` is None). Exact."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    n = len(feats)
    if n < 2:
        return float("nan")
    best = np.full(n, -1, np.int64)
    if cams is None or len(np.unique(cams)) < 2:
        _, ids = _search(flat_index(feats), np.arange(n), feats, 2)
        best = np.where(ids[:, 0] == np.arange(n), ids[:, 1], ids[:, 0])
    else:
        for c in np.unique(cams):
            mine, other = np.flatnonzero(cams == c), np.flatnonzero(cams != c)
            best[mine] = _search(flat_index(feats[other]), other, feats[mine], 1)[1][:, 0]
    return float((best[best] == np.arange(n)).mean())
