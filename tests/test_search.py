"""The embed and search CLIs end to end on synthetic crops, and re-ranking from the app's Search tab."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from reid_core import ReID
from reid_core.embed import load_embeddings
from reid_core.embed import main as embed_main
from reid_core.index import GalleryIndex
from reid_core.search import main as search_main


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, people_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("emb") / "gallery.safetensors"
    assert embed_main([str(people_folder), "--out", str(out), "--weights", str(tiny_weights), "--batch-size", "5",
                       "--workers", "2"]) == 0
    return out


def test_embed_cli_skips_corrupt_images(embedded: Path, tiny_weights: Path, people_folder: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    emb, paths = load_embeddings(embedded)
    images = sorted(people_folder.rglob("*.png"))
    assert [Path(p) for p in paths] == [p.resolve() for p in images]  # recursive, sorted, broken.jpg left out
    assert emb.shape == (12, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(emb, ReID.load(tiny_weights, "cpu").embed(images), atol=1e-5)  # same as the API
    with safe_open(str(embedded), "np") as f:
        assert f.metadata()["backend"] == "torch"

    out = embedded.with_name("again.safetensors")  # run again to see its messages
    assert embed_main([str(people_folder), "--out", str(out), "--weights", str(tiny_weights), "--workers", "0"]) == 0
    printed = capsys.readouterr()
    warnings = [line for line in printed.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0] and warnings[0].endswith("skipped")
    assert "embedded 12 images (1 skipped)" in printed.out
    assert load_embeddings(out)[1] == paths


def test_embed_cli_errors(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture) -> None:
    assert embed_main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert embed_main([str(tmp_path), "--out", str(tmp_path / "x.safetensors"), "--weights", str(tiny_weights)]) == 2
    assert "no images" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("approx", [None, "ivf"])
def test_search_cli_build_and_query(tmp_path: Path, embedded: Path, tiny_weights: Path, people_folder: Path,
                                    approx: str | None, capsys: pytest.CaptureFixture) -> None:
    extra = ["--approx", approx, "--nlist", "3", "--nprobe", "3"] if approx else []
    assert search_main(["build", "--embeddings", str(embedded), "--out", str(tmp_path / "idx"), *extra]) == 0
    assert "12 x 32" in capsys.readouterr().out
    index = GalleryIndex.load(tmp_path / "idx")
    assert len(index) == 12 and index.approx == approx and index.trained == bool(approx)

    query = sorted(people_folder.rglob("0003_c2.png"))[0]
    for flags in ([], ["--rerank"]):
        assert search_main(["query", "--index", str(tmp_path / "idx"), "--image", str(query), "--k", "4",
                            "--weights", str(tiny_weights), *flags]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 4 and lines[0].split()[0] == "1"
        assert Path(lines[0].split()[2]) == query.resolve()  # the query itself is in the gallery: rank 1
        scores = [float(line.split()[1]) for line in lines]
        assert scores == sorted(scores, reverse=True)


def test_search_cli_errors(tmp_path: Path, embedded: Path, tiny_weights: Path, people_folder: Path,
                           capsys: pytest.CaptureFixture) -> None:
    assert search_main(["query", "--index", str(tmp_path), "--image", "x.png"]) == 2
    assert "no saved index" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    assert search_main(["build", "--embeddings", str(bad), "--out", str(tmp_path / "i")]) == 2
    assert "not an embeddings file" in capsys.readouterr().err
    search_main(["build", "--embeddings", str(embedded), "--out", str(tmp_path / "idx")])
    capsys.readouterr()
    assert search_main(["query", "--index", str(tmp_path / "idx"), "--image", str(people_folder / "broken.jpg"),
                        "--weights", str(tiny_weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.jpg" in err and "\n" not in err


def test_app_search_rerank(tmp_path: Path, tiny_weights: Path, people_folder: Path) -> None:
    import app

    handlers = app.ReIDApp(app.Settings(tiny_weights, tmp_path / "store", tmp_path))
    images = sorted(people_folder.rglob("*.png"))
    added, _ = handlers.gallery.add(images, app.gr.Progress())
    assert added == 12
    query = images[0]
    plain = handlers.search(str(query), 5)
    reranked = handlers.search(str(query), 5, True)
    assert "Re-ranked" in reranked[2] and "Re-ranked" not in plain[2]
    assert reranked[1].iloc[0]["name"] == query.name  # itself still first
    emb = handlers.reid.embed(str(query))
    scores, meta = handlers.gallery.index.search(emb, 12, rerank=True)
    assert reranked[1]["name"].tolist() == [m["name"] for m in meta[0][:5]]
    assert json.dumps(reranked[1]["cosine"].tolist()) == json.dumps([round(float(s), 4) for s in scores[0][:5]])
