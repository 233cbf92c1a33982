"""Re-id metrics on plain arrays: Market-1501 protocol CMC/mAP/mINP, verification, k-reciprocal re-ranking.

Kept free of models so each number can be checked against a hand computation or a per-query loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def cosine_distance(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
    g = g / np.linalg.norm(g, axis=1, keepdims=True).clip(1e-12)
    return (1.0 - torch.from_numpy(q).float() @ torch.from_numpy(g).float().T).numpy()


def euclidean_distance(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return torch.cdist(torch.from_numpy(q).float(), torch.from_numpy(g).float()).numpy()


@dataclass
class RankResult:
    cmc: np.ndarray  # cmc[k-1] = fraction of queries with a true match within the top k
    mAP: float  # torchreid's AP: mean precision at each true match
    mAP_official: float  # Market-1501's own trapezoid AP
    mINP: float
    num_valid: int  # queries with at least one valid true match

    def as_dict(self) -> dict[str, float]:
        return {"rank1": float(self.cmc[0]), "rank5": float(self.cmc[4]), "rank10": float(self.cmc[9]),
                "rank20": float(self.cmc[19]), "mAP": self.mAP, "mAP_official": self.mAP_official,
                "mINP": self.mINP}


def market_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                g_camids: np.ndarray, max_rank: int = 50, chunk: int = 512) -> RankResult:
    """Market-1501 protocol: per query, gallery images with the same pid and the same camera, and junk
    (pid -1), are removed; distractors (pid 0) stay as negatives; queries with no true match are skipped.
    Ties rank by gallery order, as a stable argsort would.

    Only each query's own-identity images matter, so instead of arg-sorting the whole matrix it sorts the
    distance values once (numpy's SIMD sort) and finds those few images' ranks by binary search.
    """
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    distmat = np.asarray(distmat, dtype=np.float32)
    if (g_pids == -1).any():  # junk is removed for every query alike: drop its columns once
        keep = g_pids != -1
        distmat, g_pids, g_camids = distmat[:, keep], g_pids[keep], g_camids[keep]
    num_g = distmat.shape[1]
    n_cmc = max(max_rank, 20)
    cmc_hits = np.zeros(n_cmc, dtype=np.int64)
    ap_sum = ap_off_sum = inp_sum = 0.0
    valid = 0
    for s in range(0, len(q_pids), chunk):
        d = distmat[s:s + chunk]
        qp, qc = q_pids[s:s + chunk], q_camids[s:s + chunk]
        rel = g_pids[None, :] == qp[:, None]  # the query's identity: true matches and same-camera removals
        counts = rel.sum(1)
        if counts.max(initial=0) == 0:
            continue
        rows, cols = np.nonzero(rel)
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        col = np.zeros((len(d), counts.max()), dtype=np.int64)
        col[rows, slot] = cols
        present = np.zeros(col.shape, dtype=bool)
        present[rows, slot] = True
        dist_rel = np.full(col.shape, np.inf, dtype=np.float32)
        dist_rel[rows, slot] = d[rows, cols]
        sorted_d = torch.from_numpy(np.ascontiguousarray(np.sort(d, axis=1)))
        left = torch.searchsorted(sorted_d, torch.from_numpy(dist_rel)).numpy()
        right = torch.searchsorted(sorted_d, torch.from_numpy(dist_rel), right=True).numpy()
        for i, m in zip(*np.nonzero(present & (right - left > 1)), strict=True):  # exact ties: rare
            left[i, m] += np.count_nonzero(d[i, : col[i, m]] == dist_rel[i, m])
        pos = np.where(present, left, num_g + 1)  # 0-based place in the full stable order
        order = np.argsort(pos, axis=1, kind="stable")
        pos = np.take_along_axis(pos, order, 1)
        present = np.take_along_axis(present, order, 1)
        same_cam = np.take_along_axis(g_camids[col] == qc[:, None], order, 1)
        removed = present & same_cam
        match = present & ~same_cam
        n_pos = match.sum(1)
        ok = n_pos > 0
        if not ok.any():
            continue
        pos, removed, match, n_pos = pos[ok], removed[ok], match[ok], n_pos[ok]
        rank = pos - (np.cumsum(removed, 1) - removed) + 1  # 1-based rank among kept images
        hits = np.cumsum(match, 1)
        idx = np.arange(len(rank))
        first = rank[idx, match.argmax(1)]
        last = rank[idx, match.shape[1] - 1 - match[:, ::-1].argmax(1)]
        cmc_hits += (first[:, None] <= np.arange(1, n_cmc + 1)[None, :]).sum(0)
        r = np.where(match, rank, 1).astype(np.float64)
        h = np.where(match, hits, 0).astype(np.float64)
        precision = np.where(match, h / r, 0.0)
        ap_sum += float((precision.sum(1) / n_pos).sum())
        prev = np.where(r > 1, (h - 1) / np.maximum(r - 1, 1), 1.0)  # precision just before this hit
        ap_off_sum += float((np.where(match, (prev + precision) / 2, 0.0).sum(1) / n_pos).sum())
        inp_sum += float((n_pos / last).sum())
        valid += int(ok.sum())
    if valid == 0:
        raise ValueError("no query has a true match in the gallery under the Market-1501 protocol")
    return RankResult(cmc_hits / valid, ap_sum / valid, ap_off_sum / valid, inp_sum / valid, valid)


def ranking_ap(pid: int, cam: int, scores: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray) -> float | None:
    """One query's AP over a whole ranked gallery (similarity `scores`; unknown ids and cameras as -1) under the
    Market-1501 protocol (its own-camera copies and unknown ids ignored), or None when no image of its id from
    another camera is in the gallery."""
    dist = 1 - np.asarray(scores, np.float32)
    try:
        return market_rank(dist[None], np.array([pid]), np.asarray(g_pids), np.array([cam]), np.asarray(g_cams)).mAP
    except ValueError:
        return None


# --- verification ----------------------------------------------------------------------------------------
@dataclass
class VerificationResult:
    auc: float
    eer: float
    threshold: float  # the score threshold the accuracy was measured at
    accuracy: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}auc": self.auc, f"{prefix}eer": self.eer, f"{prefix}threshold": self.threshold,
                f"{prefix}accuracy": self.accuracy}


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score cut that maximises balanced accuracy (mean of TPR and TNR): robust to class imbalance."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y) / max(y.sum(), 1)  # TPR if the cut is just below s[i]
    tn = 1 - np.cumsum(~y) / max((~y).sum(), 1)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    i = np.flatnonzero(last_of_tie)[np.argmax((tp + tn)[last_of_tie])]
    return float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i] - 1e-6)


def verification(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> VerificationResult:
    """AUC, EER and balanced accuracy of same-person scores (higher = more alike).

    With `threshold` given (chosen on other, held-out pairs) the accuracy is honest; without, it is the
    best cut on these very pairs.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError("verification needs both positive and negative pairs")
    fpr, tpr, _ = roc_curve(labels, scores)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    eer = float((fpr[i] + 1 - tpr[i]) / 2)
    t = best_threshold(scores, labels) if threshold is None else float(threshold)
    pred = scores >= t
    acc = 0.5 * (pred[labels == 1].mean() + (~pred[labels == 0]).mean())
    return VerificationResult(float(roc_auc_score(labels, scores)), eer, t, float(acc))


# --- k-reciprocal re-ranking (Zhong et al., CVPR 2017) ----------------------------------------------------
def _reciprocal(rank: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every pair where col is among row's k nearest and row among col's (rank: nearest first)."""
    fwd = rank[:, :k]
    rows, cols = [], []
    for s in range(0, len(rank), chunk):
        f = fwd[s:s + chunk]
        r, c = np.nonzero((fwd[f] == np.arange(s, s + len(f))[:, None, None]).any(2))
        rows.append(r + s)
        cols.append(f[r, c])
    return np.concatenate(rows), np.concatenate(cols)


def kreciprocal_weights(rank: np.ndarray, dist: Callable[[np.ndarray, np.ndarray], np.ndarray], k2: int = 6) -> Any:
    """The k-reciprocal core shared by re-ranking (Zhong et al.) and pseudo-label clustering (SpCL, Cluster
    Contrast), on neighbour lists alone, so it never needs an n x n matrix: a scipy CSR matrix (n, n) whose row i
    weighs i's k1-reciprocal neighbours, expanded by its neighbours' k1/2-reciprocal ones when they overlap by
    2/3, by exp(-distance), normalised, then averaged over its k2 nearest (query expansion).

    `rank` (n, k1 + 1): each item's nearest items, itself first; `dist(rows, cols)`: the distances of those pairs
    (an expanded neighbour may lie outside the row's own list)."""
    from scipy import sparse

    n, width = rank.shape
    k1 = width - 1
    half = int(np.around(k1 / 2)) + 1
    rows, cols = _reciprocal(rank, k1 + 1)
    keys = np.sort(rows.astype(np.int64) * n + cols)
    h_rows, h_cols = _reciprocal(rank, half)
    h_ptr = np.r_[0, np.cumsum(np.bincount(h_rows, minlength=n))]
    h_cols = h_cols[np.argsort(h_rows, kind="stable")]
    # for each reciprocal pair (i, c): c's half-reciprocal set, and how much of it is in i's set
    lens = h_ptr[cols + 1] - h_ptr[cols]
    pair = np.repeat(np.arange(len(rows)), lens)
    elem = h_cols[np.repeat(h_ptr[cols] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())]
    cand = rows[pair].astype(np.int64) * n + elem
    found = keys[np.searchsorted(keys, cand).clip(max=len(keys) - 1)] == cand
    overlap = np.bincount(pair, weights=found, minlength=len(rows))
    joins = (overlap > 2 / 3 * lens)[pair]
    keys = np.unique(np.concatenate([keys, cand[joins]]))
    rows, cols = (keys // n).astype(np.int64), (keys % n).astype(np.int64)
    w = np.exp(-np.asarray(dist(rows, cols), dtype=np.float32))
    w /= np.bincount(rows, weights=w, minlength=n).astype(np.float32)[rows]
    v = sparse.csr_matrix((w, (rows, cols)), shape=(n, n), dtype=np.float32)
    if k2 > 1:
        kk = min(k2, width)
        expand = sparse.csr_matrix((np.full(n * kk, 1 / kk, np.float32), (np.repeat(np.arange(n), kk),
                                                                          rank[:, :kk].ravel())), shape=(n, n))
        v = (expand @ v).tocsr()
    return v


def jaccard_pairs(v: Any, rows: np.ndarray, cols: np.ndarray, block: int = 256,
                  step: Callable[[int], Any] | None = None) -> np.ndarray:
    """Jaccard distance 1 - sum(min) / sum(max) of the given pairs of rows of kreciprocal_weights' matrix,
    without the n x n matrix: a block of rows is scattered into a reusable dense buffer and each pair's
    sum(min(a, b)) gathered over b's non-zeros only (min is 0 elsewhere). `step(pairs)`: after each block."""
    v = v.tocsr()
    n = v.shape[0]
    order = np.argsort(rows, kind="stable")
    rows, cols = np.asarray(rows)[order], np.asarray(cols)[order]
    total = np.asarray(v.sum(1)).ravel()
    tmin = np.empty(len(rows), np.float64)
    buf = np.zeros((block, n), np.float32)
    bounds = np.searchsorted(rows, np.arange(0, n + block, block))
    for b, i0 in enumerate(range(0, n, block)):
        lo, hi = bounds[b], bounds[b + 1]
        if lo == hi:
            continue
        part = v[i0:i0 + block].tocoo()
        buf[part.row, part.col] = part.data
        r, c = rows[lo:hi] - i0, cols[lo:hi]
        lens = v.indptr[c + 1] - v.indptr[c]
        pair = np.repeat(np.arange(len(c)), lens)
        pos = np.repeat(v.indptr[c] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        mins = np.minimum(buf[r[pair], v.indices[pos]], v.data[pos])
        tmin[lo:hi] = np.bincount(pair, weights=mins, minlength=len(c))
        buf[part.row, part.col] = 0
        if step is not None:
            step(hi - lo)
    out = np.empty(len(rows), np.float32)
    out[order] = 1 - tmin / (total[rows] + total[cols] - tmin)
    return out.clip(0, 1)


def kreciprocal_jaccard(d: np.ndarray, k1: int = 20, k2: int = 6, rows: int | None = None) -> np.ndarray:
    """Jaccard distance between the k-reciprocal neighbour sets of every pair of items, from their square
    distance matrix d (n, n), on kreciprocal_weights (re-ranking's form; clustering uses the sparse graph of
    reid_core.neighbours). `rows`: only the first rows' distances (re-ranking's queries), in rows / n of the
    memory and time of the last step."""
    d = np.asarray(d, dtype=np.float32)
    n = d.shape[0]
    k1 = min(k1, n - 1)
    rank = np.argsort(d, axis=1)[:, : k1 + 1]
    v = kreciprocal_weights(rank, lambda r, c: d[r, c], k2).toarray()
    # sum_k min(v_ik, v_jk), column by column: only items where column k is non-zero can share it
    m = n if rows is None else rows
    tmin = np.zeros((m, n), dtype=np.float32)
    for k in range(n):
        nz = np.flatnonzero(v[:, k])
        mine = nz[nz < m]
        if len(mine):
            tmin[np.ix_(mine, nz)] += np.minimum(v[mine, k][:, None], v[nz, k][None, :])
    return 1 - tmin / (2 - tmin)


def jaccard_distance(feats: np.ndarray, k1: int = 30, k2: int = 6, penalty: np.ndarray | None = None) -> np.ndarray:
    """(n, n) k-reciprocal Jaccard distance of unit embeddings, on their squared Euclidean distance 2 - 2 cos
    (as SpCL clusters target crops), plus `penalty` (n, n) if given (e.g. for pairs of one camera)."""
    f = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    d = (2 - 2 * f @ f.T).clamp(min=0).numpy()
    return kreciprocal_jaccard(d if penalty is None else d + penalty, k1, k2).clip(0, 1)  # rounding: -1e-7


def rerank(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
           lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked query-gallery distances from the three distance blocks (Euclidean or cosine)."""
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32)
    d = np.power(d.clip(0), 2)
    d = (d / d.max(axis=0, keepdims=True)).T  # column-normalised, as in the reference
    final = kreciprocal_jaccard(d, k1, k2, rows=nq) * (1 - lambda_value) + d[:nq] * lambda_value
    return final[:, nq:]
