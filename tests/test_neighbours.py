"""The sparse k-reciprocal Jaccard graph (reid_core.neighbours) against the dense form, on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_core.evaluation.metrics import jaccard_distance
from reid_core.evaluation.neighbours import jaccard_graph, mutual_share, nearest
from reid_core.search.synthetic import clustered


def noisy_people(n_ids: int = 60, views: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    emb, _ = clustered(n_ids, views, 64, latent=16, view_noise=0.9, iso_noise=0.5, seed=seed)
    return emb, np.repeat(np.arange(n_ids), views), np.tile(np.arange(views) % 2, n_ids)


def dense_penalty(cams: np.ndarray, penalty: float) -> np.ndarray:
    p = penalty * (cams[:, None] == cams[None]).astype(np.float32)
    np.fill_diagonal(p, 0)
    return p


@pytest.mark.parametrize("penalty", [0.0, 0.4])
def test_the_sparse_graph_is_the_dense_distance_where_it_matters(penalty: float) -> None:
    """Every stored pair holds the dense form's value, the graph is symmetric, and every pair the dense form
    puts within a DBSCAN radius of 0.5 is stored (a missing pair would never be a neighbour)."""
    emb, _, cams = noisy_people()
    dense = jaccard_distance(emb, 20, 6, dense_penalty(cams, penalty) if penalty else None)
    g = jaccard_graph(emb, 20, 6, cams, penalty)
    coo = g.tocoo()
    np.testing.assert_allclose(coo.data, dense[coo.row, coo.col], atol=2e-6)
    assert abs(g - g.T).max() == 0 and (coo.row != coo.col).all()
    near = dense < 0.5
    np.fill_diagonal(near, False)
    stored = np.zeros_like(near)
    stored[coo.row, coo.col] = True
    assert near.sum() > 300 and not (near & ~stored).any()
    assert g.nnz < 0.25 * len(emb) ** 2  # sparse: a fraction of the pairs


def test_camera_aware_neighbours_are_exact() -> None:
    """Searching each camera apart gives the neighbours of the penalised dense distance, in order, itself first."""
    emb, _, cams = noisy_people(40, 6)
    f = torch.from_numpy(emb)
    d = (2 - 2 * f @ f.T).clamp(min=0).numpy() + dense_penalty(cams, 0.4)
    rank, dist = nearest(emb, 10, cams, 0.4)
    want = np.argsort(d, axis=1, kind="stable")[:, :11]
    assert (rank[:, 0] == np.arange(len(emb))).all()
    np.testing.assert_array_equal(rank, want)
    np.testing.assert_allclose(dist[:, 1:], np.take_along_axis(d, want, 1)[:, 1:], atol=1e-5)


def test_mutual_share_across_cameras() -> None:
    """1 when each crop's best match in the other camera picks it back; lower the more of them are replaced
    by unrelated crops (random points are mutual neighbours by chance too, about half of them)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 32)).astype(np.float32)
    pairs = np.vstack([a, a + 0.05 * rng.normal(size=a.shape).astype(np.float32)])
    cams = np.repeat([0, 1], 50)
    unit = pairs / np.linalg.norm(pairs, axis=1, keepdims=True)
    assert mutual_share(unit, cams) == 1.0
    shares = []
    for replaced in (10, 25, 50):
        other = unit.copy()
        other[50:50 + replaced] = rng.normal(size=(replaced, 32))
        shares.append(mutual_share(other / np.linalg.norm(other, axis=1, keepdims=True), cams))
    assert 1 > shares[0] > shares[1] > shares[2], shares
    # without cameras: nearest neighbours among all crops (the pairs again, in one pool)
    assert mutual_share(unit) == 1.0
