"""GalleryIndex: exact search must equal a brute-force numpy ranking, before and after edits; the approximate
(FAISS IVF) index must keep its recall through edits. (Persistence is the gallery file's: test_gallery.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from reid_core.search.index import RERANK_POOL, GalleryIndex, recall_at_k
from reid_core.search.synthetic import clustered


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = unit(queries) @ unit(gallery).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 32)).astype(np.float32), rng.normal(size=(5, 32)).astype(np.float32)


@pytest.fixture
def index(data: tuple[np.ndarray, np.ndarray]) -> GalleryIndex:
    g = GalleryIndex()
    g.add(data[0], [f"id{i}" for i in range(len(data[0]))], [{"row": i} for i in range(len(data[0]))])
    return g


def assert_matches_brute_force(index: GalleryIndex, gallery: np.ndarray, rows: list[int], queries: np.ndarray,
                               k: int) -> None:
    scores, meta = index.search(queries, k)
    want_scores, want_order = brute_force(gallery[rows], queries, k)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert [[m["row"] for m in q] for q in meta] == [[rows[j] for j in q] for q in want_order]


def test_search_equals_brute_force(index: GalleryIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    assert len(index) == 200 and index.dim == 32
    assert_matches_brute_force(index, gallery, list(range(200)), queries, 10)
    scores, meta = index.search(queries[0], 3)  # a single (D,) query is a batch of one
    assert scores.shape == (1, 3) and len(meta) == 1


def test_matches_faiss_flat_ip(index: GalleryIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    faiss = pytest.importorskip("faiss")
    gallery, queries = data
    flat = faiss.IndexFlatIP(32)
    flat.add(unit(gallery))
    want, order = flat.search(unit(queries), 10)
    scores, meta = index.search(queries, 10)
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert [[m["row"] for m in q] for q in meta] == order.tolist()


def test_own_copy_ranks_first(index: GalleryIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, meta = index.search(data[0][17] * 3.0, 1)  # scale does not matter: embeddings are normalised
    assert meta[0][0]["id"] == "id17" and scores[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_add_validates(index: GalleryIndex) -> None:
    with pytest.raises(ValueError, match="duplicate id id5"):
        index.add(np.ones((1, 32)), ["id5"])
    with pytest.raises(ValueError, match="duplicate id"):
        GalleryIndex().add(np.ones((2, 4)), ["a", "a"])
    with pytest.raises(ValueError, match="dimension 8"):
        index.add(np.ones((1, 8)), ["x"])
    with pytest.raises(ValueError, match="differ"):
        index.add(np.ones((2, 32)), ["x"])
    with pytest.raises(ValueError, match="query has dimension 4"):
        index.search(np.ones(4), 1)


def test_empty_and_oversized_k() -> None:
    empty = GalleryIndex()
    scores, meta = empty.search(np.ones((2, 4)), 5)
    assert scores.shape == (2, 0) and meta == [[], []]
    g = GalleryIndex()
    g.add(np.eye(3), ["a", "b", "c"])
    scores, meta = g.search(np.array([1.0, 0.1, 0.0]), 10)
    assert [m["id"] for m in meta[0]] == ["a", "b", "c"] and scores.shape == (1, 3)


def test_exact_search_keeps_ties_in_insertion_order() -> None:
    g = GalleryIndex()
    g.add(np.array([[1.0, 0], [0, 1], [1, 0], [1, 0], [0.9, 0.1]]), list("abcde"))
    scores, meta = g.search(np.array([1.0, 0]), 2)  # three rows tie for first: the two earliest win
    assert [m["id"] for m in meta[0]] == ["a", "c"] and scores[0].tolist() == pytest.approx([1.0, 1.0])


def test_recall_at_k_helper() -> None:
    assert recall_at_k([[1, 2, 3]], [[1, 2, 3]], 3) == 1.0
    assert recall_at_k([[1, 9, 3], [4, 5, 6]], [[1, 2, 3], [7, 8, 4]], 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert recall_at_k([[3, 2, 1, 7]], [[1, 2, 3, 4]], 2) == 0.5  # only the top 2 of each count
    with pytest.raises(ValueError, match="2 approximate vs 1 exact"):
        recall_at_k([[1], [2]], [[1]])


@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray]:
    """3,000 re-id-like vectors (300 identities x 10 views) and 100 held-out views as queries."""
    gallery, held = clustered(300, 10, dim=64, latent=16)
    return gallery, held[:100]


@pytest.fixture
def approx(clustered_data: tuple[np.ndarray, np.ndarray]) -> GalleryIndex:
    g = GalleryIndex(approx="ivf", nlist=30, nprobe=6)
    g.add(clustered_data[0], [f"id{i}" for i in range(len(clustered_data[0]))])
    g.train()
    return g


def ids_of(meta: list[list[dict]]) -> list[list[str]]:
    return [[m["id"] for m in row] for row in meta]


def test_approximate_recall_on_clustered_data(approx: GalleryIndex, clustered_data: tuple[np.ndarray, np.ndarray],
                                              ) -> None:
    queries = clustered_data[1]
    exact = ids_of(approx.search(queries, 10, exact=True)[1])
    _, want = brute_force(clustered_data[0], queries, 10)
    assert exact == [[f"id{j}" for j in row] for row in want]
    recall = recall_at_k(ids_of(approx.search(queries, 10)[1]), exact, 10)
    approx.nprobe = 1
    narrow = recall_at_k(ids_of(approx.search(queries, 10)[1]), exact, 10)
    approx.nprobe = 30  # every cell scanned: the same rows as exact search
    assert ids_of(approx.search(queries, 10)[1]) == exact
    assert recall >= 0.9 and narrow < recall  # scanning fewer cells must cost recall: the index is really used


def test_approximate_adds_after_training(approx: GalleryIndex,
                                          clustered_data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, _ = clustered_data
    approx.add(gallery[:4] * 2.0, ["a", "b", "c", "d"])  # new rows go into the trained cells
    approx.nprobe = approx.nlist  # every cell scanned
    scores, meta = approx.search(gallery[2], 2)  # id2 and its copy "c"
    assert {m["id"] for m in meta[0]} == {"id2", "c"} and scores[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert approx._ivf.ntotal == len(approx) == 3004 and approx.nbytes > approx.embeddings.nbytes


def test_approx_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="approx must be one of"):
        GalleryIndex(approx="hnsw")
    small = GalleryIndex(approx="ivf", nlist=100)
    small.add(np.eye(3), list("abc"))
    assert small.search(np.array([0, 1.0, 0]), 1)[1][0][0]["id"] == "b" and not small.trained  # exact meanwhile
    with pytest.raises(ValueError, match="cannot fill 100 IVF cells"):
        small.train()


def test_rerank(clustered_data: tuple[np.ndarray, np.ndarray]) -> None:
    from reid_core.evaluation.metrics import cosine_distance, rerank

    gallery, queries = clustered_data[0][:200], clustered_data[1][:1]
    g = GalleryIndex()
    g.add(gallery, [str(i) for i in range(200)])
    scores, meta = g.search(queries, 10, rerank=True)
    want = rerank(cosine_distance(queries, gallery), np.zeros((1, 1), np.float32), cosine_distance(gallery, gallery))
    order = np.argsort(want[0], kind="stable")[:10]
    assert [int(m["id"]) for m in meta[0]] == order.tolist()  # the whole gallery re-ranked, as evaluate does
    np.testing.assert_allclose(scores[0], 1 - want[0, order], atol=1e-6)
    assert (np.diff(scores[0]) <= 0).all()
    assert g.search(queries, 5000, rerank=True)[0].shape == (1, 200)
    tiny = GalleryIndex()
    tiny.add(np.eye(3), list("abc"))  # fewer rows than k1: still a ranking of all of them
    assert sorted(m["id"] for m in tiny.search(np.array([1.0, 0, 0]), 5, rerank=True)[1][0]) == ["a", "b", "c"]
    assert RERANK_POOL >= 1000
