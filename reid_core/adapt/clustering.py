"""Pseudo-labels and the choice between rungs: DBSCAN on the sparse k-reciprocal Jaccard graph (camera-aware),
tracklets kept whole, whether the clusters can teach, and the unsupervised signal that picks the rung kept."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..evaluation.camera_centring import centre_cameras
from ..evaluation.neighbours import jaccard_graph, mutual_share
from .config import AdaptConfig

MIN_CLUSTERED = 0.2  # clusters holding fewer of the crops than this cannot teach: the BatchNorm rung is kept
MIN_CROSS_CAMERA = 0.1  # ... nor clusters of which fewer span two cameras (when cameras are known)


def cluster(emb: np.ndarray, cfg: AdaptConfig, cams: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """DBSCAN on the k-reciprocal Jaccard distance (SpCL / Cluster Contrast): a label per crop, -1 for outliers.
    The distance is a sparse graph (each crop's k1 nearest: reid_core.neighbours), so memory grows with n k1.

    With cameras (`cams`, 0-based, two or more), camera-aware: each camera's mean embedding is removed and
    same-camera pairs are pushed `cfg.camera_penalty` apart first. A network's cameras differ more than its
    people do, so plain clusters mostly gather one camera's crops (20 % of them spanned both cameras of CUHK03's
    training half); these span both in 66 %, at the same purity (BENCHMARKS.md section 14)."""
    from sklearn.cluster import DBSCAN

    penalty = 0.0
    if cams is not None and cfg.camera_penalty > 0 and len(np.unique(cams)) > 1:
        emb = centre_cameras(emb, cams)
        penalty = cfg.camera_penalty
    graph = jaccard_graph(emb, cfg.k1, cfg.k2, cams if penalty else None, penalty, progress)
    return DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, metric="precomputed", n_jobs=1).fit_predict(graph)


def tracklet_labels(labels: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """Pseudo-labels that keep each tracklet whole (a tracker's track is one person: free positives): every crop of
    a track takes the label most of its clustered crops have, outliers included; a track none of whose crops
    clustered stays out. Crops of no track (-1) keep their own label. A cluster every crop of which went to its
    tracks' majorities is gone: labels are numbered 0..k-1 again (no cluster without a crop)."""
    out = labels.copy()
    for t in np.unique(tracks[tracks >= 0]):
        members = np.flatnonzero(tracks == t)
        votes = labels[members][labels[members] >= 0]
        if len(votes):
            out[members] = np.bincount(votes).argmax()
    keep = out >= 0
    out[keep] = np.unique(out[keep], return_inverse=True)[1]
    return out


def clustering_support(labels: np.ndarray, cams: np.ndarray | None, cfg: AdaptConfig) -> str | None:
    """Why these pseudo-labels cannot teach, in one line, or None. Too few clusters for a batch; too few crops in
    clusters (DBSCAN needs `min_samples` crops of one person close together: a network with one or two crops per
    person leaves almost all of them outliers); clusters that hardly ever join two cameras (training on them
    teaches nothing about matching across cameras, which is the task)."""
    n, k = len(labels), int(labels.max()) + 1
    clustered = int((labels >= 0).sum())
    if k < cfg.p:
        return f"only {k} clusters among {n:,} crops, and a batch needs {cfg.p}"
    if clustered < MIN_CLUSTERED * n:
        return (f"only {clustered:,} of {n:,} crops ({clustered / n:.0%}) fall in clusters: too few crops per person "
                f"for DBSCAN's {cfg.min_samples} neighbours")
    if cams is not None and len(np.unique(cams)) > 1:
        keep = labels >= 0
        spans = np.array([len(np.unique(cams[keep][labels[keep] == c])) > 1 for c in range(k)])
        if spans.mean() < MIN_CROSS_CAMERA:
            return f"only {spans.mean():.0%} of the {k} clusters span two cameras"
    return None


def rung_signal(emb: np.ndarray, cams: np.ndarray | None) -> float:
    """The unsupervised signal that chooses between rungs: the share of crops that are mutual nearest neighbours
    across cameras (i's best match in the other cameras has i as its own best match there), or among all crops
    when cameras are unknown. It reads no label and no pseudo-label (a model trained on its own clusters would
    always prefer them); it rises when one person's crops in two cameras find each other, which is what Rank-1
    counts (BENCHMARKS.md section 24 checks it against the held-out figures)."""
    return mutual_share(emb, cams)


def kept_rung(signals: Sequence[float], n: int) -> int:
    """Which rung to keep (0: the BatchNorm rung, r: round r) from each rung's signal, a share of `n` crops: the
    last within two standard errors (binomial, sqrt(p (1 - p) / n) at the best share) of the best. Rungs that
    close cannot be told apart by the signal (on CUHK03 two runs of one recipe differed by 0.008 at round 1,
    more than rung to rung), and later rounds have trained longer, so the tie goes to them; a round is dropped
    for the BatchNorm rung only when the signal says it is worse beyond its noise."""
    best = max(signals)
    margin = 2 * float(np.sqrt(best * (1 - best) / max(n, 1)))
    return max(i for i, s in enumerate(signals) if s >= best - margin)
