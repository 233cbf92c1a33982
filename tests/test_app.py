"""The Gradio app end to end through gradio_client, plus its handlers called directly, with a tiny random
model (assertions hold for any model: an image beats a different person, its own copy ranks first)."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import PAIR_THRESHOLD, make_tiny_weights, person, serve, write_log, write_people
from gradio_client import Client, handle_file
from PIL import Image

import app
from reid_core import ReID, ServerLimits
from reid_core.data.limits import Limits
from reid_core.data.uploads import iter_uploads
from reid_core.figures.crop_pictures import BARS_WIDTH, DISPLAY_SIZE
from reid_core.model.network import load_model
from space.compare import EXAMPLE_PAIRS
from space.curves import SHIPPED_LOG
from space.host import PictureFiles
from space.search import MIN_ADAPT_IMAGES


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("app")
    make_tiny_weights(root / "weights" / "model.safetensors")
    write_people(root / "people")
    write_log(root / "runs" / "demo_run" / "log.csv")
    return root


@pytest.fixture(scope="module")
def settings(workdir: Path) -> app.Settings:
    return app.Settings(workdir / "weights" / "model.safetensors", workdir / "store", workdir / "runs")


@pytest.fixture(scope="module")
def client(settings: app.Settings) -> Iterator[Client]:
    with serve(settings) as (url, _):
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def reid(settings: app.Settings) -> ReID:
    return ReID(load_model(settings.weights))


def people(workdir: Path) -> list[Path]:
    return sorted((workdir / "people").glob("*.png"))


# --- through the API -------------------------------------------------------------------------------------------
def test_compare_endpoint(client: Client, workdir: Path, reid: ReID) -> None:
    a, b = people(workdir)[0], people(workdir)[-1]  # ids 1 and 3
    p_self, verdict_self, cos_self, parts = client.predict(handle_file(a), handle_file(a), api_name="/compare")
    p_diff, verdict_diff, cos_diff, _ = client.predict(handle_file(a), handle_file(b), api_name="/compare")
    assert cos_self == pytest.approx(1.0, abs=1e-3)
    assert cos_self > cos_diff and p_self > p_diff
    expected = reid.compare(a, b)  # the app returns the library's numbers, rounded to 4 places
    assert p_diff == pytest.approx(expected.score, abs=1e-3)
    assert cos_diff == pytest.approx(expected.cosine, abs=1e-3)
    assert verdict_self.startswith("Same person") and f"threshold {PAIR_THRESHOLD:.3f}" in verdict_self
    assert "a score, not a probability" in verdict_self  # these weights record no calibration
    assert verdict_diff.startswith("Same person" if p_diff >= PAIR_THRESHOLD else "Different people")
    w, h = DISPLAY_SIZE
    assert Image.open(parts).size[0] == 2 * w + BARS_WIDTH + 12  # both crops, the stripe bars between them


def test_add_and_search_endpoints(client: Client, workdir: Path) -> None:
    files = people(workdir)
    archive = workdir / "gallery.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in files[2:]:
            zf.write(p, f"crops/{p.name}")
    status = client.predict([handle_file(p) for p in files[:2]] + [handle_file(archive)],
                            api_name="/add_to_gallery")
    assert f"Added {len(files)} images" in status
    status = client.predict([handle_file(files[0])], api_name="/add_to_gallery")  # same file again: deduped
    assert f"Added 0 images. Your private gallery: **{len(files)}** images" in status
    assert f"- skipped {files[0].name}: already in the gallery" in status

    query = files[0]  # 0001_c1: its own copy is in the gallery, and 0001_c2 is a true match from another camera
    items, table, summary = client.predict(handle_file(query), 4, api_name="/search")
    rows = table["data"]
    assert len(items) == len(rows) == 4
    assert rows[0][1] == query.name and rows[0][2] == pytest.approx(1.0, abs=1e-3)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    assert all(r[3] == ("right" if r[1].startswith("0001_") else "wrong") for r in rows)
    assert items[0]["caption"] == "✓ #1 1.000"
    assert "AP = " in summary


def test_bad_upload_gives_clear_error(client: Client, workdir: Path) -> None:
    bogus = workdir / "notes.txt"
    bogus.write_text("not an image")
    with pytest.raises(Exception, match="notes.txt: not a readable image"):
        client.predict(handle_file(bogus), handle_file(people(workdir)[0]), api_name="/compare")


# --- handlers directly -----------------------------------------------------------------------------------------
def test_gallery_reloads_and_reembeds_for_new_weights(tmp_path: Path, workdir: Path) -> None:
    files = people(workdir)
    first = app.ReIDApp(app.Settings(workdir / "weights" / "model.safetensors", tmp_path / "store", tmp_path))
    first.host.reid.batch_size = 4  # 6 images: two embedding batches
    first.search.add_to_gallery([str(p) for p in files])
    gallery = first.search.own_gallery()
    rows = gallery.entries()
    assert [m["name"] for m in rows] == [p.name for p in files]
    pictures = [gallery.picture(r["id"]) for r in rows]
    np.testing.assert_allclose(gallery.embeddings(), first.host.reid.embed(pictures), atol=1e-5)
    again = app.ReIDApp(first.settings).search.own_gallery()  # a restart
    assert len(again) == len(files) and again.message == ""
    np.testing.assert_allclose(again.embeddings(), gallery.embeddings(), atol=1e-6)

    other = make_tiny_weights(tmp_path / "w2" / "model.safetensors", embed_dim=64, seed=1)
    moved = app.ReIDApp(app.Settings(other, tmp_path / "store", tmp_path))
    assert moved.search.own_gallery().embeddings().shape == (len(files), 64)
    assert "re-embedded" in moved.search.gallery_summary()
    _, table, _ = moved.search.search(str(files[3]), 1)
    assert table.iloc[0]["name"] == files[3].name

    moved.search.clear_gallery()
    assert len(app.ReIDApp(moved.settings).search.own_gallery()) == 0
    _, table, summary = moved.search.search(str(files[0]), 3)
    assert table.empty and "gallery is empty" in summary


def test_example_people_and_unnamed_query(tmp_path: Path, settings: app.Settings) -> None:
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path))
    n = len(list(app.EXAMPLES_DIR.glob("*.png")))
    assert n >= 6 and handlers.search.add_examples().startswith(f"Added {n} images.")
    query = tmp_path / "snapshot.png"  # no PPPP_cC id in the name: nothing to mark, no AP
    query.write_bytes((app.EXAMPLES_DIR / "person-B_c1.png").read_bytes())
    items, table, summary = handlers.search.search(str(query), 3)
    assert table.iloc[0]["name"] == "person-B_c1.png" and table.iloc[0]["cosine"] == pytest.approx(1, abs=1e-3)
    assert set(table["match"]) == {""} and items[0][1] == "#1 1.000"
    assert "carries no id" in summary


def test_shipped_weights_are_right_on_every_example_pair() -> None:
    """The examples a visitor tries first are real crops of people the shipped weights never trained on, and
    the shipped weights (test-time flip on, as the app runs them) give the right verdict on every example pair:
    the same person across two cameras, or two different people (drawn figures were once called the same)."""
    def identity(name: str) -> str:
        return name.split("_c")[0]  # person-A of person-A_c1.png

    pairs = EXAMPLE_PAIRS
    same = [(a, b) for a, b in pairs if identity(a) == identity(b)]
    assert len(same) >= 2 and len(pairs) - len(same) >= 2 and all(a != b for a, b in pairs)
    assert all(a.split("_c")[1] != b.split("_c")[1] for a, b in same)  # across cameras
    reid = ReID.load(engine="fp32")  # weights/model.safetensors
    for a, b in pairs:
        c = reid.compare(app.EXAMPLES_DIR / a, app.EXAMPLES_DIR / b)
        assert c.same == (identity(a) == identity(b)), (a, b, c.verdict)
    sources = (app.EXAMPLES_DIR / "sources.csv").read_text().splitlines()[1:]
    assert len(sources) == len(list(app.EXAMPLES_DIR.glob("*.png"))) >= 12
    assert all(",query/" in s or ",bounding_box_test/" in s for s in sources)  # the test split only


def test_missing_weights_still_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_WEIGHTS", str(tmp_path / "nope.safetensors"))
    monkeypatch.setenv("REID_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.delitem(vars(app), "demo", raising=False)
    demo = app.demo  # the module-level demo a Space runs, built from the environment on first access
    monkeypatch.delitem(vars(app), "demo")
    assert isinstance(demo, gr.Blocks) and demo.reid_app.settings.data_dir == tmp_path / "store"
    handlers = demo.reid_app
    assert handlers.host.reid is None and "nope.safetensors" in handlers.host.error
    assert "No model loaded" in handlers.model.model_markdown()
    with pytest.raises(gr.Error, match="nope.safetensors"):
        handlers.compare.compare(__file__, __file__)


def test_zip_skips_unsafe_hidden_and_broken_entries(tmp_path: Path, settings: app.Settings) -> None:
    good = write_people(tmp_path / "p", range(1, 2), range(1, 2))[0]
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(good, "ok/good.png")
        zf.writestr("../escape.png", good.read_bytes())
        zf.writestr("/abs.png", good.read_bytes())
        zf.writestr("__MACOSX/._good.png", b"resource fork")
        zf.writestr("readme.txt", "hello")
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path))
    status = handlers.search.add_to_gallery([str(archive)])
    assert status.startswith("Added 1 image.")
    assert "../escape.png: unsafe path" in status and "/abs.png: unsafe path" in status
    assert "readme.txt: not a readable image" in status and "_good.png" not in status
    assert [m["name"] for m in handlers.search.own_gallery().entries()] == ["good.png"]


def test_upload_file_cap(tmp_path: Path) -> None:
    files = write_people(tmp_path, range(1, 3), range(1, 3))
    skipped: list[str] = []
    names = [n for n, _ in iter_uploads(files, skipped, Limits(max_files=3))]
    assert names == [p.name for p in files[:3]]
    assert len(skipped) == 1 and "over the 3-file limit" in skipped[0]


def test_compare_runs_the_backbone_once(settings: app.Settings, workdir: Path) -> None:
    """One Compare is one backbone pass (both crops, and their mirror images with test-time flip, in one batch):
    the verdict's embeddings and the stripe picture come from the same feature maps."""
    handlers = app.ReIDApp(settings)
    reid = handlers.host.reid
    stem = next(m for m in reid.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    batches: list[int] = []
    hook = stem.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
    a, b = people(workdir)[0], people(workdir)[-1]
    try:
        prob, verdict, cos, parts, note_a, note_b = handlers.compare.compare_view(str(a), str(b))
    finally:
        hook.remove()
    assert batches == [4 if reid.flip else 2]
    assert (note_a, note_b) == ("", "") and Path(parts).is_file()
    expected = reid.compare(a, b)  # the engine's embeddings: the same numbers
    assert prob == pytest.approx(expected.score, abs=1e-3) and cos == pytest.approx(expected.cosine, abs=1e-3)
    c, stripes = reid.compare_parts(a, a)
    assert stripes.shape == (6,) and stripes == pytest.approx(1.0, abs=1e-4) and c.cosine == pytest.approx(1, abs=1e-4)


def test_compare_notes_stay_by_their_input(settings: app.Settings, workdir: Path, caplog: pytest.LogCaptureFixture,
                                           ) -> None:
    """A user's mistake is said beside the input it concerns, outputs emptied, nothing raised (no toast, no error
    badges); an unreadable upload is removed at once, and its reason stays until the input changes."""
    handlers = app.ReIDApp(settings)
    good, bogus = str(people(workdir)[0]), workdir / "notes.txt"
    bogus.write_text("not an image")
    with caplog.at_level(logging.INFO, logger="reid.app"):
        out = handlers.compare.compare_view(str(bogus), good)
    assert out[:4] == (None, "", None, None) and out[5] == ""
    assert out[4].startswith("⚠️ notes.txt: not a readable image") and "\n" not in out[4]
    assert [r.message for r in caplog.records if r.name == "reid.app"][0].startswith("user error: notes.txt")
    assert handlers.compare.compare_view(None, good)[4] == "⚠️ Upload an image of Person A."
    # removed: its reason stays
    kept = handlers.compare.compare_view(None, None, "⚠️ notes.txt: not a readable image", "")
    assert kept[4:] == ("⚠️ notes.txt: not a readable image", "⚠️ Upload an image of Person B.")
    image, note, *cleared = handlers.compare.compare_input(str(bogus))  # on upload: the file goes, the reason shows
    assert image is None and note.startswith("⚠️ notes.txt: not a readable image") and cleared == [None, "", None, None]
    assert handlers.compare.compare_input(good) == (gr.skip(), "", None, "", None, None)  # a usable one: the note goes
    # emptied: the note left as is
    assert handlers.compare.compare_input(None) == (gr.skip(), gr.skip(), None, "", None, None)


def test_curves_handler(tmp_path: Path, settings: app.Settings) -> None:
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", settings.runs_dir))
    assert handlers.curves.run_choices() == ["demo_run"]
    loss, acc, lr, ev, status = handlers.curves.curves(["demo_run"], None)
    assert {t.name for t in loss.data} == {"loss", "loss_id", "loss_tri", "loss_pair"}
    assert list(ev.data[0].x) == [3, 6]
    assert status == "Showing 1 of 1 log(s)."
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    *figs, status = handlers.curves.curves(["demo_run"], str(bad))
    assert "Showing 1 of 2" in status and "bad.csv: empty file" in status


def test_shipped_log_shows_the_recorded_figures(tmp_path: Path, settings: app.Settings) -> None:
    """Weights trained without periodic evaluation: their log's Rank-1/mAP panel shows the figures recorded with
    them (ReID.info "metrics", as the Model tab does) at the last epoch, and says so."""
    weights = make_tiny_weights(tmp_path / "w" / "model.safetensors")  # metrics: rank1 0.5, mAP 0.25
    write_log(weights.with_name("train_log.csv"), epochs=5, eval_every=99)
    handlers = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path / "runs"))
    *_, ev, status = handlers.curves.curves([SHIPPED_LOG], None)
    assert [(t.name, list(t.x), list(t.y)) for t in ev.data] == [("rank1", [5], [0.5]), ("mAP", [5], [0.25])]
    assert "Shipped weights at epoch 5: Rank-1 50.0 %, mAP 25.0 %, the figures recorded with them" in status



def test_output_pictures_are_whole_files_named_by_content(tmp_path: Path, settings: app.Settings) -> None:
    """Gradio rewrote a cached PIL output in place on every request, truncating it under a concurrent reader;
    the app hands pictures over as files (named by content, written once, atomically), which Gradio copies
    into its cache atomically."""
    files = PictureFiles()
    img = person(1, 1, 0)
    first = files(img)
    mtime = Path(first).stat().st_mtime_ns
    assert files(img.copy()) == first and Image.open(first).tobytes() == img.tobytes()
    assert files(person(2, 1, 0)) != first
    assert sorted(p.suffix for p in files.folder.iterdir()) == [".png", ".png"]  # no temp file left
    assert Path(first).stat().st_mtime_ns >= mtime


def test_user_errors_log_one_line_not_a_traceback(client: Client, caplog: pytest.LogCaptureFixture,
                                                  capfd: pytest.CaptureFixture) -> None:
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="reid.app"), pytest.raises(Exception, match="Upload the first image"):
        client.predict(None, None, api_name="/compare")
    assert [r.message for r in caplog.records if r.name == "reid.app"] == ["user error: Upload the first image."]
    assert "Traceback" not in capfd.readouterr().err


def test_add_reports_progress_in_images(tmp_path: Path, settings: app.Settings, workdir: Path) -> None:
    calls = []

    def progress(value: tuple[int, int], desc: str = "", unit: str = "") -> None:
        calls.append((value, unit))

    files = people(workdir)
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in files[:4]:
            zf.write(p, p.name.replace(".png", "_copy.png"))
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path))
    handlers.search.add_to_gallery([str(p) for p in files] + [str(archive)], None, progress)
    total = len(files) + 4  # the zip's members are counted before any is read
    assert calls[0] == ((0, total), "images") and calls[-1] == ((total, total), "images")
    assert [c[0][0] for c in calls] == list(range(total + 1))


def test_adapt_to_this_gallery_and_back(tmp_path: Path, settings: app.Settings) -> None:
    """BatchNorm statistics from the visitor's own crops: the session's gallery and its queries move to a private
    adapted model (the shared one untouched), and Undo goes back; too few crops or too many adapted sessions get
    one line."""
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path,
                                        server=ServerLimits(max_adapted=1)))
    base_id = handlers.host.reid.embedding_id
    with pytest.raises(gr.Error, match="at least 20 crops"):
        handlers.search.adapt_gallery()
    write_people(tmp_path / "crops", pids=range(1, 13), cams=range(1, 3))
    handlers.search.add_to_gallery(sorted(map(str, (tmp_path / "crops").glob("*.png"))))
    query = str(next((tmp_path / "crops").glob("0001_c1*.png")))
    before = handlers.search.search(query, 3)[1]
    said, items, table, summary = handlers.search.adapt_gallery()
    assert items == [] and table.empty and summary == ""  # old results were scored by the other model
    assert said.startswith("Search uses a model adapted to your gallery") and "24 of your crops" in said
    assert said.count("re-embedded") == 1  # the state once, not the re-embedding twice
    gallery = handlers.search.own_gallery()
    assert gallery.weights_id != base_id and handlers.host.reid.embedding_id == base_id
    after = handlers.search.search(query, 3)[1]
    assert after.iloc[0]["name"] == before.iloc[0]["name"] and after.iloc[0]["cosine"] == pytest.approx(1, abs=1e-4)
    assert not np.allclose(after["cosine"].to_numpy(float), before["cosine"].to_numpy(float))
    assert handlers.search.adapt_gallery()[0].startswith("Search already uses a model adapted to your gallery")
    other = type("Request", (), {"session_hash": "another visitor"})()
    handlers.search.add_to_gallery(sorted(map(str, (tmp_path / "crops").glob("*.png"))), other)
    with pytest.raises(gr.Error, match="1 visitors hold adapted models"):
        handlers.search.adapt_gallery(other)
    said = handlers.search.undo_adapt()[0]
    assert said.startswith("Search uses the shared model again") and said.count("re-embedded") == 1
    said = handlers.search.undo_adapt()[0]  # pressed twice: the state, and no word of a re-embedding done before
    assert said.startswith("Search uses the shared model (not adapted). Your private gallery: **24** images")
    assert "re-embedded" not in said
    assert handlers.search.own_gallery().weights_id == base_id
    np.testing.assert_allclose(handlers.search.search(query, 3)[1]["cosine"].to_numpy(float),
                               before["cosine"].to_numpy(float), atol=1e-5)


def test_model_tab_says_what_the_weights_were_adapted_to(tmp_path: Path, settings: app.Settings) -> None:
    import json
    import shutil

    weights = tmp_path / "adapted.safetensors"
    shutil.copy(settings.weights, weights)
    cfg = json.loads(settings.weights.with_suffix(".json").read_text())
    cfg["extra"]["adapted"] = {"target": "my_cameras", "target_images": 1234, "target_cameras": 3, "method": "bn",
                               "seconds": 9.0, "source_weights": "weights/model.safetensors",
                               "figures": {"before": {"rank1": 0.1, "mAP": 0.05}, "after": {"rank1": 0.2, "mAP": 0.1},
                                           "evaluated_on": "its own split"}}
    weights.with_suffix(".json").write_text(json.dumps(cfg))
    text = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path)).model.model_markdown()
    assert "Adapted to a new camera network" in text and "my_cameras (1,234 unlabeled crops, 3 cameras)" in text
    assert "Rank-1 10.0 → 20.0 %" in text and "mAP 5.0 → 10.0 %" in text
    # no word of where its thresholds came from (a file written before they said): the source's, said so
    assert "- **Thresholds and calibration**: the source weights': chosen on the source cameras'" in text


def test_model_tab_shows_a_cosine_threshold_as_a_cosine(tmp_path: Path, settings: app.Settings) -> None:
    """Thresholds are plain numbers: a cosine and the pair head's raw score are not probabilities (it showed
    "20.4 %")."""
    import json
    import shutil

    weights = tmp_path / "cos.safetensors"
    shutil.copy(settings.weights, weights)
    cfg = json.loads(settings.weights.with_suffix(".json").read_text())
    cfg["extra"]["cos_threshold"] = 0.20431
    weights.with_suffix(".json").write_text(json.dumps(cfg))
    text = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path)).model.model_markdown()
    assert "- **Cosine threshold with test-time flip**: 0.204\n" in text  # no flip threshold recorded: the plain one
    assert f"- **Same-person threshold (pair score) with test-time flip**: {PAIR_THRESHOLD:.3f}\n" in text


def test_refused_adapt_is_a_note_beside_the_button(tmp_path: Path, settings: app.Settings) -> None:
    """The Adapt button with too few crops: one line in its note, the status and Search's outputs untouched
    (gr.skip: no error badge on them, no stale change), and the page says up front how many crops it needs."""
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path))
    write_people(tmp_path / "crops", pids=range(1, 4), cams=range(1, 3))
    handlers.search.add_to_gallery(sorted(map(str, (tmp_path / "crops").glob("*.png"))))
    note, *rest = handlers.search.adapt_view()
    assert note == f"⚠️ Add at least {MIN_ADAPT_IMAGES} crops from your cameras first (the gallery has 6): the " \
                   "statistics come from them."
    assert rest == [gr.skip()] * 4
    demo = app.build_demo(app.Settings(settings.weights, tmp_path / "store2", tmp_path))
    helps = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "adapt-help"]
    assert helps and f"at least {MIN_ADAPT_IMAGES}" in helps[0]


def test_unreadable_query_is_removed_with_a_note(tmp_path: Path, settings: app.Settings) -> None:
    """Search's query, as Compare's inputs: an unreadable file is removed as it lands and its note says why; the
    Search button with none says so in the note (kept while the input stays empty), the results emptied."""
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path))
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not a picture")
    image, note, items, table, summary = handlers.search.search_input({"path": str(bogus), "orig_name": "notes.jpg"})
    assert image is None and note.startswith("⚠️ notes.jpg: not a readable image")
    assert items == [] and table.empty and summary == ""
    *results, kept = handlers.search.search_view(None, 10, False, note)
    assert kept == note and results[0] == [] and results[2] == ""  # the reason a file went stays
    *_, said = handlers.search.search_view(None, 10, False, "")
    assert said == "⚠️ Upload a query image."
    good = tmp_path / "0001_c1.png"
    person(1, 1, 0).save(good)
    assert handlers.search.search_input(str(good))[:2] == (gr.skip(), "")


def test_adding_the_examples_twice_says_so_in_one_line(tmp_path: Path, settings: app.Settings) -> None:
    handlers = app.ReIDApp(app.Settings(settings.weights, tmp_path / "store", tmp_path))
    handlers.search.add_examples()
    said = handlers.search.add_examples()
    n = len(list(app.EXAMPLES_DIR.glob("*.png")))
    assert said.startswith("Added 0 images.")
    assert [line for line in said.splitlines() if "already in the gallery" in line] == [
        f"- skipped {n} files: already in the gallery (person-A_c1.png, person-A_c2.png, person-A_c3.png, …)"]


def test_model_tab_speaks_of_scores_and_shows_the_cuts_in_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              ) -> None:
    """The shipped weights with test-time flip (the app's default): the list gives the flip cuts the verdict uses
    (pair and cosine alike), the histogram of the recorded (plain) scores is called a pair score and drawn with
    the plain cut."""
    import json

    weights = app.ROOT / "weights" / "model.safetensors"
    extra = json.loads(weights.with_suffix(".json").read_text())["extra"]
    monkeypatch.setenv("REID_ENGINE", "fp32")  # no ONNX export for this
    handlers = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path))
    text = handlers.model.model_markdown()
    flip_pair, flip_cos = extra["metrics"]["flip_pair_threshold"], extra["metrics"]["flip_cos_threshold"]
    assert f"- **Same-person threshold (pair score) with test-time flip**: {flip_pair:.3f}\n" in text
    assert f"- **Cosine threshold with test-time flip**: {flip_cos:.3f}\n" in text
    assert handlers.host.reid.threshold == pytest.approx(flip_pair)
    fig = handlers.model.model_figures()["scores"]
    said = json.dumps(fig.to_plotly_json()["layout"])
    assert "probability" not in said and "pair score" in said
    assert f"threshold {extra['pair_threshold']:.3f}" in said
