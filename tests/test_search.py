"""The embed and gallery verbs of `python -m reid_core` end to end on synthetic crops (the gallery verb keeps
the app's gallery file), and re-ranking from the app's Search tab."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reid_core import ReID
from reid_core.cli import main as cli
from reid_core.embed import load_embeddings
from reid_core.search.index import GalleryIndex


def embed_main(argv: list[str]) -> int:
    return cli(["embed", *argv])


def gallery_main(argv: list[str]) -> int:
    return cli(["gallery", *argv])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, people_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("emb") / "gallery.safetensors"
    assert embed_main([str(people_folder), "--out", str(out), "--weights", str(tiny_weights), "--batch-size", "5",
                       "--threads", "2"]) == 0
    return out


def test_embed_cli_skips_corrupt_images(embedded: Path, tiny_weights: Path, people_folder: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    emb, paths, header = load_embeddings(embedded)
    images = sorted(people_folder.rglob("*.png"))
    assert [Path(p) for p in paths] == [p.resolve() for p in images]  # recursive, sorted, broken.jpg left out
    assert emb.shape == (12, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(emb, ReID.load(tiny_weights, "cpu").embed(images), atol=1e-5)  # same as the API
    assert header.engine == ReID.load(tiny_weights, "cpu").choice.name  # the default engine, named in the header

    out = embedded.with_name("again.safetensors")  # run again to see its messages
    assert embed_main([str(people_folder), "--out", str(out), "--weights", str(tiny_weights), "--threads", "1"]) == 0
    printed = capsys.readouterr()
    skipped = sorted(line for line in printed.err.splitlines() if line.startswith("skipped "))
    assert [line.split(":")[0] for line in skipped] == [f"skipped {people_folder / n}" for n in ("broken.jpg",
                                                                                              "notes.txt")]
    assert "embedded 12 images (2 skipped)" in printed.out  # the .txt named and counted too, as `uploads` does
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
    g = str(tmp_path / "g.sqlite")
    assert gallery_main(["build", "--gallery", g, "--embeddings", str(embedded), *extra]) == 0
    assert "12 rows added (0 already there), 12 in all" in capsys.readouterr().out
    gallery = ReID.load(tiny_weights, "cpu").gallery(g)
    assert len(gallery) == 12 and gallery.index_settings.get("approx") == approx
    np.testing.assert_allclose(gallery.embeddings(), load_embeddings(embedded)[0], atol=1e-6)

    query = sorted(people_folder.rglob("0003_c2.png"))[0]
    for flags in ([], ["--rerank"]):
        assert gallery_main(["query", "--gallery", g, "--image", str(query), "--k", "4",
                            "--weights", str(tiny_weights), *flags]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 4 and lines[0].split()[0] == "1"
        assert Path(lines[0].split()[2]) == query.resolve()  # the query itself is in the gallery: rank 1
        scores = [float(line.split()[1]) for line in lines]
        assert scores == sorted(scores, reverse=True)


def test_search_cli_add_info_clear(tmp_path: Path, tiny_weights: Path, people_folder: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    g, w = str(tmp_path / "g.sqlite"), ["--weights", str(tiny_weights)]
    files = [str(p) for p in sorted(people_folder.rglob("*.png"))[:3]] + [str(people_folder / "broken.jpg")]
    assert gallery_main(["add", "--gallery", g, *w, *files]) == 0
    out, err = capsys.readouterr()
    assert "added 3, skipped 1, 3 in all" in out and "- skipped broken.jpg: not a readable image" in err
    assert gallery_main(["info", "--gallery", g, *w]) == 0
    assert "3 images (3 stored pictures, 0 paths)" in capsys.readouterr().out
    assert gallery_main(["clear", "--gallery", g, *w]) == 0 and "removed 3 images" in capsys.readouterr().out


def test_search_cli_errors(tmp_path: Path, embedded: Path, tiny_weights: Path, people_folder: Path,
                           capsys: pytest.CaptureFixture) -> None:
    w = ["--weights", str(tiny_weights)]
    assert gallery_main(["query", "--gallery", str(tmp_path / "none.sqlite"), "--image", "x.png", *w]) == 2
    assert "no gallery file" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    assert gallery_main(["build", "--gallery", str(tmp_path / "g.sqlite"), "--embeddings", str(bad), *w]) == 2
    assert "not an embeddings file" in capsys.readouterr().err
    gallery_main(["build", "--gallery", str(tmp_path / "g.sqlite"), "--embeddings", str(embedded)])
    capsys.readouterr()
    assert gallery_main(["query", "--gallery", str(tmp_path / "g.sqlite"), "--image",
                        str(people_folder / "broken.jpg"), *w]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.jpg" in err and "\n" not in err


def test_app_search_rerank(tmp_path: Path, tiny_weights: Path, people_folder: Path) -> None:
    import app

    handlers = app.ReIDApp(app.Settings(tiny_weights, tmp_path / "store", tmp_path))
    images = sorted(people_folder.rglob("*.png"))
    assert handlers.search.add_to_gallery([str(p) for p in images]).startswith("Added 12 images")
    query = images[0]
    plain = handlers.search.search(str(query), 5)
    reranked = handlers.search.search(str(query), 5, True)
    assert "Re-ranked" in reranked[2] and "Re-ranked" not in plain[2]
    assert reranked[1].iloc[0]["name"] == query.name  # itself still first
    index = GalleryIndex()
    gallery = handlers.search.own_gallery()
    index.add(gallery.embeddings(), [r["name"] for r in gallery.entries()])
    scores, meta = index.search(handlers.host.reid.embed(str(query)), 12, rerank=True)
    assert reranked[1]["name"].tolist() == [m["id"] for m in meta[0][:5]]
    assert json.dumps(reranked[1]["cosine"].tolist()) == json.dumps([round(float(s), 4) for s in scores[0][:5]])


def test_cli_refuses_bad_paths_and_devices_in_one_line(tmp_path: Path, embedded: Path, tiny_weights: Path,
                                                       people_folder: Path, market: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Checked before the long work: an output that is a folder, a folder that is missing, a device that is not
    one; and a file where a folder should be is one line too (an OSError, not a traceback)."""
    w = ["--weights", str(tiny_weights)]
    cases = [
        (["embed", str(people_folder), "--out", str(tmp_path), *w], f"error: {tmp_path}: is a folder, not a file"),
        (["evaluate", "--data", str(market), "--json", str(tmp_path / "no" / "m.json"), *w], "no folder"),
        (["evaluate", "--data", str(market), "--device", "bogus", *w], "--device bogus: not a device"),
        (["plots", str(tmp_path / "log.csv"), "--html", str(tmp_path / "no" / "x.html")], "no folder"),
        (["gallery", "add", "--gallery", str(embedded / "g.sqlite"), str(sorted(people_folder.rglob("*.png"))[0]),
          *w], f"error: {embedded}"),
    ]
    for argv, message in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_gallery_build_takes_the_weights_given_over_the_files_own(tmp_path: Path, tiny_weights: Path,
                                                                 people_folder: Path) -> None:
    """An embeddings file names the weights it was made with; --weights (the same weights moved) wins."""
    import shutil

    first = tmp_path / "a" / "model.safetensors"
    first.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_weights.with_suffix(suffix), first.with_suffix(suffix))
    out = tmp_path / "e.safetensors"
    assert embed_main([str(people_folder), "--out", str(out), "--weights", str(first)]) == 0
    moved = tmp_path / "b"
    shutil.move(first.parent, moved)
    assert gallery_main(["build", "--gallery", str(tmp_path / "g.sqlite"), "--embeddings", str(out)]) == 2
    assert gallery_main(["build", "--gallery", str(tmp_path / "g.sqlite"), "--embeddings", str(out),
                         "--weights", str(moved / "model.safetensors")]) == 0
