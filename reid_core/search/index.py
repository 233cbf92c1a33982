"""GalleryIndex: cosine (inner-product) search over a gallery's embeddings, exact or approximate.

Embeddings are L2-normalised on the way in, so a score is a cosine similarity. The default search is an exact
matrix product (numpy): for demo-sized galleries (up to ~10^5 images) it is fast enough and never misses a
match. `approx="ivf"` adds a FAISS IVF-Flat index (k-means cells, `nprobe` of `nlist` cells scanned per
query) for camera-network galleries of millions, where the exact product grows slow (BENCHMARKS §6); the exact
matrix is kept too (for re-ranking and recall checks).
It lives in memory only: a cache of a gallery file (gallery.py, SQLite), rebuilt from it when that changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

APPROX_KINDS = ("ivf",)
MAX_K = 50  # a search shows at most this many matches: the app's slider, its API and `gallery query --k`
RERANK_POOL = 1000  # k-reciprocal re-ranking runs over at most this many top candidates (the whole gallery below)
TRAIN_POINTS_PER_CELL = 40  # k-means training sample per IVF cell: FAISS wants >= 39
KMEANS_ITERATIONS = 10  # FAISS's default 25 costs 2.5x the training time for little recall on re-id data
EXACT_BLOCK = 1 << 26  # query x gallery scores per block of exact search: 256 MiB


def _normalise(x: np.ndarray) -> np.ndarray:
    """A unit-row copy; the norms via einsum, because np.linalg.norm would hold a second full-size temporary."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.sqrt(np.einsum("ij,ij->i", x, x))[:, None].clip(1e-12)


def default_nlist(n: int) -> int:
    """~4 sqrt(n) cells (FAISS's guideline: 4-16 sqrt(n)), and at least TRAIN_POINTS_PER_CELL rows per cell to
    train them on: on clustered vectors (BENCHMARKS §6), 4 sqrt(n) cells reach a recall in a quarter of the
    list scan that sqrt(n) cells need."""
    return max(1, min(round(4 * math.sqrt(n)), n // TRAIN_POINTS_PER_CELL))


def recall_at_k(approx: Sequence[Sequence[Any]], exact: Sequence[Sequence[Any]], k: int = 10) -> float:
    """Mean share of each query's exact top-k that the approximate top-k found (ids or row numbers)."""
    if len(approx) != len(exact):
        raise ValueError(f"recall_at_k: {len(approx)} approximate vs {len(exact)} exact result lists")
    hits = [len(set(list(a)[:k]) & set(list(e)[:k])) / max(1, min(k, len(e))) for a, e in zip(approx, exact,
                                                                                           strict=True)]
    return float(np.mean(hits)) if hits else 1.0


class GalleryIndex:
    """Embeddings plus one metadata dict per row; every row has a unique string `id`.

    `approx=None` (default): exact search. `approx="ivf"`: FAISS IVF-Flat with `nlist` cells (default
    ~4 sqrt(n), fixed when it is trained) and `nprobe` cells scanned per query (default nlist/16: recall@10
    0.96 on the 1M-vector benchmark), trained on first search or by `train()`; rows added later go into the
    trained cells.
    """

    def __init__(self, dim: int | None = None, approx: str | None = None, nlist: int | None = None,
                 nprobe: int | None = None):
        if approx not in (None, *APPROX_KINDS):
            raise ValueError(f"approx must be one of {APPROX_KINDS} or None, not {approx!r}")
        self.dim = dim
        self.approx, self.nlist, self._nprobe = approx, nlist, nprobe
        self._emb = np.zeros((0, dim or 0), np.float32)
        self._meta: list[dict[str, Any]] = []
        self._row: dict[str, int] = {}
        self._ivf: Any = None  # faiss.IndexIVFFlat once trained

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._row

    @property
    def ids(self) -> list[str]:
        return [m["id"] for m in self._meta]

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._meta]

    @property
    def embeddings(self) -> np.ndarray:
        return self._emb.copy()

    @property
    def nprobe(self) -> int | None:
        if self._nprobe is None and self.nlist:
            return max(1, self.nlist // 16)
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = int(value)
        if self._ivf is not None:
            self._ivf.nprobe = self.nprobe

    @property
    def trained(self) -> bool:
        return self._ivf is not None

    def add(self, embeddings: np.ndarray, ids: Sequence[str], metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Append rows. Ids must be new and unique; metadata (JSON-serialisable dicts) is optional."""
        emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        ids = [str(i) for i in ids]
        metadata = list(metadata) if metadata is not None else [{} for _ in ids]
        if emb.ndim != 2 or len(emb) != len(ids) or len(metadata) != len(ids):
            raise ValueError(f"add: {len(emb)} embeddings, {len(ids)} ids and {len(metadata)} metadata rows differ")
        if self.dim is None:
            self.dim = emb.shape[1]
            self._emb = self._emb.reshape(0, self.dim)
        if emb.shape[1] != self.dim:
            raise ValueError(f"add: embeddings have dimension {emb.shape[1]}, the index holds {self.dim}")
        dup = [i for i in ids if i in self._row]
        if dup or len(set(ids)) != len(ids):
            raise ValueError(f"add: duplicate id {dup[0] if dup else ids}")
        first = len(self._meta)
        labels = np.arange(first, first + len(ids), dtype=np.int64)  # FAISS ids: the row numbers
        unit_rows = _normalise(emb).astype(np.float32, copy=False)
        # the first add takes the matrix as it is: a million rows must not be copied twice
        self._emb = unit_rows if not first else np.concatenate([self._emb, unit_rows])
        self._meta.extend({**m, "id": i} for i, m in zip(ids, metadata, strict=True))
        self._row.update((i, first + k) for k, i in enumerate(ids))
        if self._ivf is not None:
            self._ivf.add_with_ids(unit_rows, labels)

    @property
    def nbytes(self) -> int:
        """Memory held, roughly: the embeddings (twice once an IVF index holds its own copy) plus metadata."""
        return self._emb.nbytes * (1 + self.trained) + 300 * len(self._meta)

    # --- the approximate index ----------------------------------------------------------------------------
    def train(self, seed: int = 0) -> None:
        """Fit the IVF cells (k-means on a seeded sample of TRAIN_POINTS_PER_CELL rows per cell) and fill them."""
        import faiss  # only approximate indexes need it

        if self.approx is None:
            raise ValueError("train: this index is exact (approx=None); nothing to train")
        n = len(self)
        nlist = self.nlist or default_nlist(n)
        if n < nlist:
            raise ValueError(f"train: {n} rows cannot fill {nlist} IVF cells; add more or lower nlist")
        sample = self._emb
        if n > TRAIN_POINTS_PER_CELL * nlist:
            rows = np.random.default_rng(seed).choice(n, TRAIN_POINTS_PER_CELL * nlist, replace=False)
            sample = self._emb[np.sort(rows)]
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed, ivf.cp.niter = seed, KMEANS_ITERATIONS
        ivf.train(sample)
        ivf.add_with_ids(self._emb, np.arange(n, dtype=np.int64))
        self.nlist, self._ivf = nlist, ivf
        ivf.nprobe = self.nprobe

    def _search_ivf(self, q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[int]]]:
        scores, labels = self._ivf.search(q, k)
        scores[labels < 0] = -np.inf  # fewer than k rows in the scanned cells
        return scores, [[int(r) for r in row if r >= 0] for row in labels]  # a label is its row number

    def _search_exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[int]]]:
        """Top-k by a partial sort; ties keep insertion order, exactly as a stable full sort would. Queries go
        in blocks so a thousand queries on a million rows do not hold a 4 GiB score matrix."""
        out_rows, out_scores = [], []
        block = max(1, EXACT_BLOCK // max(1, len(self)))
        for s in (row for b in range(0, len(q), block) for row in q[b:b + block] @ self._emb.T):
            if k < len(s):
                cand = np.flatnonzero(s >= np.partition(s, len(s) - k)[len(s) - k])  # every row tied with the k-th
            else:
                cand = np.arange(len(s))
            top = cand[np.lexsort((cand, -s[cand]))[:k]]
            out_rows.append(top.tolist())
            out_scores.append(s[top])
        return np.array(out_scores, np.float32).reshape(len(q), k), out_rows

    def _rerank(self, q: np.ndarray, rows: list[int], k: int) -> tuple[np.ndarray, list[int]]:
        """k-reciprocal re-ranking (Zhong et al. 2017, k1=20, k2=6, lambda=0.3) of one query's candidates;
        the score becomes 1 - the re-ranked distance, so it still sorts best first."""
        from ..evaluation.metrics import cosine_distance, rerank

        g = self._emb[rows]
        dist = rerank(cosine_distance(q[None], g), np.zeros((1, 1), np.float32), cosine_distance(g, g))[0]
        order = np.argsort(dist, kind="stable")[:k]
        return (1 - dist[order]).astype(np.float32), [rows[i] for i in order]

    def search(self, query: np.ndarray, k: int = 10, exact: bool = False, rerank: bool = False,
               ) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
        """Top-k rows per query by cosine similarity, best first.

        `query` is (D,) or (Q, D); returns scores (Q, min(k, len)) and a list of Q lists of metadata dicts.
        Exact search (the default, or `exact=True` on an approximate index) keeps ties in insertion order, so
        results are deterministic. An approximate index may find fewer than k rows (padded with -inf).
        `rerank=True` re-ranks the top RERANK_POOL candidates k-reciprocally (k at most RERANK_POOL).
        """
        q = _normalise(np.atleast_2d(query))
        if self.dim is not None and q.shape[1] != self.dim:
            raise ValueError(f"search: query has dimension {q.shape[1]}, the index holds {self.dim}")
        k = max(0, min(int(k), len(self), RERANK_POOL if rerank else len(self)))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), [[] for _ in q]
        fetch = min(len(self), RERANK_POOL) if rerank else k
        if self.approx and not exact and self._ivf is None:
            if len(self) < (self.nlist or 1):
                exact = True  # too few rows for the cells asked for: exact search is the better answer anyway
            else:
                self.train()
        if self.approx and not exact:
            scores, rows = self._search_ivf(q, fetch)
        else:
            scores, rows = self._search_exact(q, fetch)
        if rerank:
            reranked = [self._rerank(qi, r, k) for qi, r in zip(q, rows, strict=True)]
            rows = [r for _, r in reranked]
            scores = np.full((len(q), k), -np.inf, np.float32)
            for i, (s, _) in enumerate(reranked):
                scores[i, : len(s)] = s
        return scores[:, :k], [[dict(self._meta[r]) for r in row[:k]] for row in rows]
