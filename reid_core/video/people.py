"""Global identities: tracklets from every camera clustered into people.

Average-linkage agglomerative clustering on cosine similarity, with one rule the data gives for free: two
tracklets of one camera that share a moment (overlapping time spans) are two people, so no cluster may hold both.
scikit-learn's AgglomerativeClustering takes no such cannot-link constraint, and a large distance in its matrix
only discourages a merge under average linkage, so this is the plain O(n^2)-memory loop, on at most a few
thousand tracklets (a gallery's tracklet limit bounds it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .tracklets import in_domain_cut


def cannot_link(cameras: Sequence[str], spans: np.ndarray) -> np.ndarray:
    """(n, n) bool: tracklets i and j are in one camera and their [start, end] spans overlap."""
    cam = np.asarray(cameras)
    same = cam[:, None] == cam[None, :]
    overlap = (spans[:, None, 0] <= spans[None, :, 1]) & (spans[None, :, 0] <= spans[:, None, 1])
    out = same & overlap
    np.fill_diagonal(out, False)
    return out


def cluster_people(embeddings: np.ndarray, cameras: Sequence[str], spans: np.ndarray, threshold: float,
                   ) -> np.ndarray:
    """A person label (0..P-1, by first appearance) for each tracklet. Two clusters merge, most alike first,
    while their average cosine similarity is >= the cut and no pair across them is cannot-linked; the cut is
    `threshold` raised to the most alike cannot-linked pair (tracklets.in_domain_cut)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, np.int64)
    emb = np.asarray(embeddings, np.float64)
    total = emb @ emb.T  # sum of similarities between clusters (members' pairs)
    size = np.ones(n)
    blocked = cannot_link(cameras, np.asarray(spans, np.float64))
    threshold = in_domain_cut(total, blocked, threshold)
    alive = np.ones(n, bool)
    label = np.arange(n)
    while True:
        avg = total / np.outer(size, size)
        avg[~alive, :] = -np.inf
        avg[:, ~alive] = -np.inf
        avg[blocked] = -np.inf
        np.fill_diagonal(avg, -np.inf)
        i, j = divmod(int(np.argmax(avg)), n)
        if avg[i, j] < threshold:
            break
        total[i, :] += total[j, :]  # j into i
        total[:, i] += total[:, j]
        blocked[i, :] |= blocked[j, :]
        blocked[:, i] |= blocked[:, j]
        blocked[i, i] = False
        size[i] += size[j]
        alive[j] = False
        label[label == j] = i
    _, first = np.unique(label, return_index=True)
    order = {lab: k for k, lab in enumerate(label[np.sort(first)])}
    return np.array([order[x] for x in label], np.int64)
