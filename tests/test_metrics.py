import numpy as np
import pytest

from reid_core.evaluation.metrics import best_threshold, cosine_distance, market_rank, rerank, verification


def reference_market(dist, q_pids, g_pids, q_cams, g_cams):
    """A plain per-query loop of the Market-1501 protocol (torchreid's eval_market1501, written out)."""
    cmc_all, aps, aps_off, inps = [], [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind="stable")
        keep = [j for j in order if not ((g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i]) or g_pids[j] == -1)]
        hits = [g_pids[j] == q_pids[i] for j in keep]
        if not any(hits):
            continue
        ranks = [r for r, h in enumerate(hits) if h]  # 0-based among kept
        cmc = np.zeros(len(keep))
        cmc[ranks[0]:] = 1
        cmc_all.append(cmc[:50] if len(cmc) >= 50 else np.pad(cmc, (0, 50 - len(cmc)), constant_values=1))
        aps.append(np.mean([(n + 1) / (r + 1) for n, r in enumerate(ranks)]))
        ap = 0.0
        for n, r in enumerate(ranks):
            old = n / r if r != 0 else 1.0
            ap += ((n + 1) / (r + 1) + old) / 2 / len(ranks)
        aps_off.append(ap)
        inps.append(len(ranks) / (ranks[-1] + 1))
    return np.mean(cmc_all, 0), np.mean(aps), np.mean(aps_off), np.mean(inps), len(aps)


def test_hand_computed_case() -> None:
    # gallery: same pid+cam (removed), negative, positive, distractor, junk, positive
    g_pids = np.array([1, 2, 1, 0, -1, 1])
    g_cams = np.array([0, 1, 1, 1, 1, 2])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.05, 0.6],
                     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    q_pids, q_cams = np.array([1, 2]), np.array([0, 1])  # query 2's only match shares its camera: skipped
    r = market_rank(dist, q_pids, g_pids, q_cams, g_cams)
    # kept order: neg(r1), pos(r2), distractor(r3), pos(r4)
    assert r.num_valid == 1
    assert r.cmc[0] == 0.0 and r.cmc[1] == 1.0 and r.cmc[4] == 1.0
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert r.mAP_official == pytest.approx(((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2)
    assert r.mINP == pytest.approx(2 / 4)


def test_perfect_and_worst_rankings() -> None:
    g_pids, g_cams = np.array([1, 1, 2, 2]), np.array([1, 2, 1, 2])
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    good = np.array([[0, 0, 1, 1], [1, 1, 0, 0]], float)
    r = market_rank(good, q_pids, g_pids, q_cams, g_cams)
    assert r.cmc[0] == 1 and r.mAP == 1 and r.mINP == 1 and r.mAP_official == 1
    r = market_rank(1 - good, q_pids, g_pids, q_cams, g_cams)
    assert r.cmc[0] == 0 and r.cmc[2] == 1
    assert r.mAP == pytest.approx((1 / 3 + 2 / 4) / 2) and r.mINP == pytest.approx(2 / 4)


def test_no_valid_query_is_an_error() -> None:
    with pytest.raises(ValueError, match="no query"):
        market_rank(np.zeros((1, 2)), np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nq, ng = 60, 300
    q_pids, g_pids = rng.integers(1, 20, nq), rng.integers(-1, 20, ng)
    q_cams, g_cams = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    dist[:, :10] = dist[:, 10:20]  # ties must break the same way (stable order)
    r = market_rank(dist, q_pids, g_pids, q_cams, g_cams, chunk=7)
    cmc, ap, ap_off, inp, n = reference_market(dist, q_pids, g_pids, q_cams, g_cams)
    assert r.num_valid == n
    np.testing.assert_allclose(r.cmc[:50], cmc, atol=1e-6)
    assert r.mAP == pytest.approx(ap, abs=1e-6)
    assert r.mAP_official == pytest.approx(ap_off, abs=1e-6)
    assert r.mINP == pytest.approx(inp, abs=1e-6)
    assert r.mAP_official < r.mAP  # the trapezoid rule sits below the mean of precisions


def test_verification_known_values() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    v = verification(scores, labels)
    assert v.auc == pytest.approx(8 / 9)
    assert v.accuracy == pytest.approx(5 / 6)
    assert 0.7 < v.threshold < 0.8 or 0.2 < v.threshold < 0.3
    fixed = verification(scores, labels, threshold=0.5)  # a threshold chosen elsewhere is used as given
    assert fixed.threshold == 0.5 and fixed.accuracy == pytest.approx((2 / 3 + 2 / 3) / 2)
    sep = verification(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0]))
    assert sep.auc == 1 and sep.eer == 0 and sep.accuracy == 1 and 0.2 < sep.threshold < 0.8


def test_best_threshold_ignores_class_balance() -> None:
    scores = np.r_[np.full(10, 0.9), np.full(1000, 0.1)]
    labels = np.r_[np.ones(10), np.zeros(1000)]
    assert 0.1 < best_threshold(scores, labels) < 0.9


def test_rerank_helps_on_clustered_data() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    g_pids = np.repeat(np.arange(10), 6)
    g = centres[g_pids] + rng.normal(scale=1.2, size=(60, 16))
    q_pids = np.arange(10)
    q = centres[q_pids] + rng.normal(scale=1.2, size=(10, 16))
    q_cams, g_cams = np.zeros(10, int), np.ones(60, int)
    base = cosine_distance(q, g)
    rr = rerank(base, cosine_distance(q, q), cosine_distance(g, g))
    assert rr.shape == base.shape and np.isfinite(rr).all()
    m0 = market_rank(base, q_pids, g_pids, q_cams, g_cams).mAP
    m1 = market_rank(rr, q_pids, g_pids, q_cams, g_cams).mAP
    assert m1 > m0
