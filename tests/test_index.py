"""GalleryIndex: exact search must equal a brute-force numpy ranking, before and after edits and a reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reid_core.index import METADATA_FILE, GalleryIndex, IndexLoadError


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


def test_remove(index: GalleryIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    gone = [f"id{i}" for i in range(0, 200, 3)]
    assert index.remove(gone + ["unknown"]) == len(gone)
    assert len(index) == 200 - len(gone) and "id3" not in index and "id4" in index
    keep = [i for i in range(200) if i % 3]
    assert_matches_brute_force(index, gallery, keep, queries, 20)
    index.add(gallery[:1], ["id0"], [{"row": 0}])  # a removed id can come back
    assert "id0" in index and len(index) == len(keep) + 1


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


def test_save_load_round_trip(tmp_path: Path, index: GalleryIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    index.remove(["id1", "id2"])
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.ids == index.ids and loaded.metadata == index.metadata and loaded.dim == 32
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
    a, b = index.search(data[1], 7), loaded.search(data[1], 7)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["embeddings.safetensors", METADATA_FILE]

    GalleryIndex().save(tmp_path / "empty")  # an empty index persists too
    assert len(GalleryIndex.load(tmp_path / "empty")) == 0


def test_load_errors(tmp_path: Path, index: GalleryIndex) -> None:
    with pytest.raises(IndexLoadError, match="no saved index"):
        GalleryIndex.load(tmp_path / "missing")
    index.save(tmp_path / "idx")
    meta = tmp_path / "idx" / METADATA_FILE
    table = json.loads(meta.read_text())
    meta.write_text(json.dumps({**table, "generation": "stale"}))  # as if a crash fell between the two renames
    with pytest.raises(IndexLoadError, match="do not belong together"):
        GalleryIndex.load(tmp_path / "idx")
    meta.write_text("{not json")
    with pytest.raises(IndexLoadError, match="unreadable index"):
        GalleryIndex.load(tmp_path / "idx")
