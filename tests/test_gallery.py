"""The gallery file (reid_core.search.gallery): every change all-or-nothing under kill -9, concurrent clients, other
weights, hostile zips and odd images named one by one, private galleries per browser session."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from badinputs import png_header
from conftest import make_tiny_weights, person, serve
from gradio_client import Client, handle_file
from PIL import Image

import app
from reid_core import ReID
from reid_core.data.images import ImageError, load_image
from reid_core.data.limits import Limits
from reid_core.data.person_check import person_warning
from reid_core.data.uploads import iter_uploads, read_image
from reid_core.search.gallery import Gallery, GalleryError

ROOT = Path(__file__).resolve().parent.parent


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def crops(n: int, start: int = 1) -> list[tuple[str, bytes]]:
    """n distinct synthetic crops as (Market-style name, PNG bytes)."""
    return [(f"{pid:04d}_c{cam}s1_000001_00.png", png(person(pid, cam, 0).resize((64, 128))))
            for pid in range(start, start + (n + 1) // 2) for cam in (1, 2)][:n]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("w") / "model.safetensors")


@pytest.fixture(scope="module")
def reid(weights: Path) -> ReID:
    return ReID.load(weights, "cpu")


def check_whole(g: Gallery, reid: ReID) -> int:
    """Every row has its picture, and its stored embedding is that picture's; every row is found by search."""
    rows = g.entries()
    emb = g.embeddings()
    assert len(rows) == len(g) == len(emb) == len({r["id"] for r in rows})
    for r, e in zip(rows, emb, strict=True):
        assert g.search(e, 1)[0].id == r["id"]
    if rows:
        sample = random.Random(len(rows)).sample(range(len(rows)), min(4, len(rows)))
        np.testing.assert_allclose(reid.embed([g.picture(rows[i]["id"]) for i in sample]), emb[sample], atol=1e-4)
    with sqlite3.connect(g.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM images WHERE picture IS NULL AND path IS NULL").fetchone()[0] == 0
    assert {p.name for p in g.path.parent.iterdir()} <= {g.path.name, f"{g.path.name}-wal", f"{g.path.name}-shm"}
    return len(rows)


def test_round_trip_and_reopen(tmp_path: Path, reid: ReID) -> None:
    g = reid.gallery(tmp_path / "g" / "gallery.sqlite")
    report = g.add(crops(10))
    assert (report.added, report.skipped, report.warnings) == (10, [], [])
    again = reid.gallery(g.path)  # a restart
    assert check_whole(again, reid) == 10 and again.message == ""
    assert [r["name"] for r in again.entries()] == [n for n, _ in crops(10)]
    assert [(r["pid"], r["camid"]) for r in again.entries()[:2]] == [(1, 1), (1, 2)]
    np.testing.assert_array_equal(again.embeddings(), g.embeddings())
    top = again.search(reid.embed(load_image(crops(1)[0][1])), 3, pictures=2)
    assert top[0].name == crops(1)[0][0] and top[0].picture is not None and top[2].picture is None
    dup = again.add(crops(3) + crops(1, start=30) + [("copy.png", crops(1)[0][1])])
    assert dup.added == 1 and len(dup.skipped) == 4
    assert dup.skipped[0] == "0001_c1s1_000001_00.png: already in the gallery"
    assert dup.skipped[-1] == "copy.png: already in the gallery (same picture as 0001_c1s1_000001_00.png)"
    assert again.remove([again.entries()[0]["id"], "nope"]) == 1 and len(again) == 10
    assert again.clear() == 10 and len(reid.gallery(g.path)) == 0


def test_failed_add_changes_nothing(tmp_path: Path, reid: ReID) -> None:
    g = reid.gallery(tmp_path / "gallery.sqlite")
    g.add(crops(4))
    calls = []

    def failing(images: list) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return reid.embed(images)

    broken = Gallery(g.path, failing, reid.embedding_id, batch_size=4)
    with pytest.raises(RuntimeError, match="out of memory"):
        broken.add(crops(12, start=10))
    assert calls == [4, 4] and check_whole(reid.gallery(g.path), reid) == 4  # the first batch was staged only


def test_an_add_holds_the_write_lock_for_the_insert_only(tmp_path: Path, reid: ReID) -> None:
    """While an add embeds, another writer (another handle, as another process would be) writes at once: the
    add takes the lock only to copy its staged rows in. Embedding inside the lock made it wait up to 60 s."""
    g = reid.gallery(tmp_path / "gallery.sqlite")
    other = reid.gallery(g.path)
    other.add(crops(2, start=50))
    written = []

    def embed_then_write(images: list) -> np.ndarray:
        written.append(other.remove([f"no-such-{len(written)}"]) == 0 and other.add(crops(1, start=60 + len(written))))
        return reid.embed(images)

    slow = Gallery(g.path, embed_then_write, reid.embedding_id, batch_size=4)
    slow.add(crops(12, start=10))
    assert len(written) == 3 and all(r.added == 1 for r in written)
    # the other writer wrote three times during this add's embedding: the add held no lock while it embedded
    assert check_whole(reid.gallery(g.path), reid) == 2 + 3 + 12


def test_other_weights_are_reembedded_or_refused(tmp_path: Path, reid: ReID) -> None:
    g = reid.gallery(tmp_path / "g" / "gallery.sqlite")
    g.add(crops(6))
    other = ReID.load(make_tiny_weights(tmp_path / "w2" / "model.safetensors", embed_dim=64, seed=1), "cpu")
    moved = other.gallery(g.path)
    assert "re-embedded" in moved.message and moved.embeddings().shape == (6, 64)
    check_whole(moved, other)
    back = reid.gallery(g.path)  # and back again: never a mix of the two models' embeddings
    np.testing.assert_allclose(back.embeddings(), g.embeddings(), atol=1e-5)

    listed = reid.gallery(tmp_path / "paths.sqlite")
    files = []
    for name, data in crops(2):
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    assert listed.add_paths(files) == 2
    files[1].unlink()  # a path row whose file is gone cannot be re-embedded: refused, and nothing changes
    with pytest.raises(GalleryError, match=r"paths\.sqlite: embedded by other weights and cannot be re-embedded"):
        other.gallery(listed.path)
    assert len(reid.gallery(listed.path)) == 2


def test_the_stored_width_follows_reembedding_and_clearing(tmp_path: Path, reid: ReID) -> None:
    """A gallery re-embedded for weights of another width, or emptied, takes the adds of the weights now open
    (it kept the old width once, and refused every later add: "holds 512-d embeddings, not 64-d")."""
    wide = ReID.load(make_tiny_weights(tmp_path / "w2" / "model.safetensors", embed_dim=64, seed=1), "cpu")
    g = reid.gallery(tmp_path / "g.sqlite")
    g.add(crops(4))
    moved = wide.gallery(g.path)  # re-embedded at 64-d, then added to at 64-d
    assert moved.add(crops(2, start=20)).added == 2 and moved.embeddings().shape == (6, 64)
    assert moved.clear() == 6
    back = reid.gallery(g.path)  # emptied, then opened by the other weights: their width is taken
    assert back.add(crops(2, start=30)).added == 2 and back.embeddings().shape == (2, reid.model.embed_dim) != (2, 64)
    assert back.remove([m["id"] for m in back.entries()]) == 2
    again = wide.gallery(g.path)  # emptied by removing every row: the same
    assert again.add(crops(2, start=40)).added == 2 and again.embeddings().shape == (2, 64)


def test_unreadable_gallery_file_is_refused_not_reset(tmp_path: Path, reid: ReID) -> None:
    bad = tmp_path / "gallery.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(GalleryError, match="gallery.sqlite: not a readable gallery"):
        reid.gallery(bad)
    assert bad.read_bytes() == b"not a database" * 100


@pytest.mark.slow
def test_kill_9_at_random_moments(tmp_path: Path, weights: Path, reid: ReID) -> None:
    """>= 30 SIGKILLs at random moments of adds and clears; after each, a restart shows the count before or
    after that operation, every row whole and searchable, and nothing else on disk."""
    images = tmp_path / "images"
    images.mkdir()
    for name, data in crops(60):
        (images / name).write_bytes(data)
    gallery, log = tmp_path / "store" / "gallery.sqlite", tmp_path / "ops.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    zygote = subprocess.Popen([sys.executable, str(Path(__file__).with_name("gallery_worker.py")), str(weights),
                               str(gallery), str(images), str(log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    rng = random.Random(0)
    during = {"add": 0, "clear": 0}
    try:
        for seed in range(32):
            zygote.stdin.write(f"{seed}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.15, 1.0))
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}").exists():
                time.sleep(0.01)
            lines = [json.loads(x) for x in log.read_text().splitlines()]
            ops = [x for x in lines if "op" in x]
            last = ops[-1] if ops else None
            finished = bool(lines) and "done" in lines[-1]
            n = check_whole(reid.gallery(gallery), reid)
            if last is None:
                continue
            if finished:
                assert n == lines[-1]["done"]
            else:
                during[last["op"]] += 1
                assert n in (last["before"], last["after"]), (last, n)
            log.write_text("")  # the next worker starts from what this restart saw
    finally:
        zygote.kill()
    assert during["add"] >= 15 and during["add"] + during["clear"] >= 20, during  # the kills hit operations


@pytest.mark.slow
def test_concurrent_adds_searches_and_clears(tmp_path: Path, reid: ReID) -> None:
    g = reid.gallery(tmp_path / "gallery.sqlite", Limits(max_gallery=10_000))
    g.add(crops(8))
    queries = reid.embed([load_image(d) for _, d in crops(4)])
    errors: list[BaseException] = []
    stop = time.monotonic() + 6

    def loop(job) -> None:
        k = 0
        while time.monotonic() < stop:
            try:
                job(k)
            except BaseException as e:  # noqa: BLE001 - collected and asserted empty below
                errors.append(e)
            k += 1

    def search(k: int) -> None:
        for m in g.search(queries[k % 4], 5, pictures=5):
            assert m.picture is not None and m.picture.size[0] > 0

    jobs = [lambda k: g.add(crops(6, start=100 + 3 * k)), lambda k: g.clear() if k % 3 == 2 else None,
            search, search, lambda k: reid.gallery(g.path).search(queries[0], 3, pictures=3)]
    threads = [threading.Thread(target=loop, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check_whole(g, reid)


# --- uploads: every bad entry named, the others let in ------------------------------------------------------
def corrupt_member(data: bytes, name: str) -> bytes:
    """The zip with the named member's compressed bytes garbled (sizes and headers left as they were)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    out = bytearray(data)
    for k in range(start + 4, start + min(info.compress_size, 200) - 4):
        out[k] ^= 0x5A
    return bytes(out)


def encrypted(data: bytes, name: str) -> bytes:
    """Mark a member encrypted (general-purpose flag bit 0), as a password zip's members are."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    out[info.header_offset + 6] |= 1
    central = data.find(b"PK\x01\x02")
    while central != -1:
        n = int.from_bytes(data[central + 28:central + 30], "little")
        if data[central + 46:central + 46 + n] == name.encode():
            out[central + 8] |= 1
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def hostile_zip(path: Path) -> Path:
    good = crops(3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(good[0][0], good[0][1])
        zf.writestr(zipfile.ZipInfo("deflate.png"), png(person(7, 1, 0)), zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("lzma.png"), png(person(8, 1, 0)), zipfile.ZIP_LZMA)
        zf.writestr(zipfile.ZipInfo(""), good[1][1])
        zf.writestr("9" * 4400 + "_c1s1_000001_00.png", good[1][1])
        zf.writestr("secret.png", png(person(9, 1, 0)))
        zf.writestr(good[2][0], good[2][1])
    data = encrypted(corrupt_member(corrupt_member(buf.getvalue(), "deflate.png"), "lzma.png"), "secret.png")
    path.write_bytes(data)
    return path


def test_hostile_zip_members_are_named_and_the_rest_added(tmp_path: Path, reid: ReID) -> None:
    archive = hostile_zip(tmp_path / "people.zip")
    skipped: list[str] = []
    g = reid.gallery(tmp_path / "gallery.sqlite")
    report = g.add(iter_uploads([archive], skipped, Limits()))
    reasons = skipped + report.skipped
    assert report.added == 3, reasons  # two good crops and the one with a 4,400-digit "id" (no id, then)
    assert len(reasons) == 4 and all("\n" not in r and "ZipInfo" not in r for r in reasons), reasons
    assert any(r.startswith("people.zip/deflate.png: corrupt") for r in reasons), reasons
    assert any(r.startswith("people.zip/lzma.png: corrupt") for r in reasons), reasons
    assert "people.zip: entry #4 has an empty name, skipped" in reasons
    assert "people.zip/secret.png: password-protected (encrypted zips are not supported), skipped" in reasons
    long = [r for r in g.entries() if r["name"].startswith("9999")]
    assert len(long) == 1 and long[0]["pid"] is None


def test_extreme_strip_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2 x 19,000,000 PNG (under the pixel limit) is refused before any pixel is decoded, so its cost
    does not grow with its size (BENCHMARKS.md §10 times the complete 126 KB file: 0.08 ms)."""
    data = png_header(2, 19_000_000)

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(ImageError, match=r"^strip\.png: 2x19000000 is a strip, not a person crop \(sides over 10:1\)$"):
        read_image(data, "strip.png")
    with pytest.raises(ImageError, match="longest side may be 12,000 pixels"):
        read_image(png_header(13_000, 2_000), "big.png", Limits(max_aspect=100))


def test_formats_and_sizes_are_judged_alike_everywhere(tmp_path: Path, weights: Path) -> None:
    tga = tmp_path / "person.tga"
    person(1, 1, 0).save(tga)
    heic = tmp_path / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100))
    eps = tmp_path / "drawing.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    big = tmp_path / "big.png"
    big.write_bytes(png(person(1, 1, 0)) + bytes(2 * 2**20))
    expected = {tga: "person.tga: TGA images are not supported (use JPEG, PNG, WebP, BMP, GIF or TIFF)",
                heic: "photo.heic: HEIC images are not supported (use JPEG, PNG, WebP, BMP, GIF or TIFF)",
                eps: "drawing.eps: PostScript/EPS images are not supported (use JPEG, PNG, WebP, BMP, GIF or TIFF)",
                big: "big.png: 2.0 MiB, over the 1 MiB per-image limit"}
    limits = Limits(max_image_mb=1)
    handlers = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path, limits))
    example = ROOT / "examples" / "people" / "person-B_c1.png"
    status = handlers.search.add_to_gallery([str(p) for p in expected] + [str(example)])
    assert status.startswith("Added 1 image."), status
    for path, msg in expected.items():
        assert f"- skipped {msg}" in status, status  # Add names each one
        with pytest.raises(app.gr.Error) as e:  # and Compare refuses it with the same words
            handlers.compare.compare(str(path), str(example))
        assert str(e.value.message).startswith(msg), e.value.message


# --- does it look like a person? ------------------------------------------------------------------------------
def test_person_screen() -> None:
    rng = np.random.default_rng(0)
    for img in (Image.new("RGB", (64, 128), "white"), Image.new("RGB", (64, 128), "black"),
                Image.new("RGB", (300, 600), (120, 30, 200))):
        assert "nearly uniform" in person_warning(img)
    noise = Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    assert "noise-like" in person_warning(noise)
    big_noise = Image.fromarray(rng.integers(0, 256, (1024, 512, 3), dtype=np.uint8))  # averaged down: still noise
    assert "noise-like" in person_warning(big_noise)
    assert all(person_warning(person(pid, cam, 0)) is None for pid in range(1, 30) for cam in range(3))
    assert all(person_warning(load_image(p)) is None for p in (ROOT / "examples" / "people").glob("*.png"))


def test_compare_warns_on_non_person(tmp_path: Path, weights: Path) -> None:
    white = tmp_path / "white.png"
    Image.new("RGB", (64, 128), "white").save(white)
    handlers = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path))
    _, verdict, _, _ = handlers.compare.compare(str(white), str(ROOT / "examples/people/person-B_c1.png"))
    assert "Warning: Person A does not look like a person crop (nearly uniform" in verdict
    _, verdict, _, _ = handlers.compare.compare(str(ROOT / "examples/people/person-A_c1.png"),
                                        str(ROOT / "examples/people/person-B_c1.png"))
    assert "Warning" not in verdict


# --- the app: private by default, shared only when the operator asks -----------------------------------------
def test_browser_sessions_do_not_see_each_other(tmp_path: Path, weights: Path) -> None:
    people = []
    for name, data in crops(4):
        (tmp_path / name).write_bytes(data)
        people.append(tmp_path / name)
    with serve(app.Settings(weights, tmp_path / "store", tmp_path)) as (url, _):
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        assert alice.predict([handle_file(p) for p in people], api_name="/add_to_gallery").startswith("Added 4")
        _, table, summary = bob.predict(handle_file(people[0]), 3, api_name="/search")
        assert table["data"] == [] and "gallery is empty" in summary
        assert bob.predict([handle_file(people[0])], api_name="/add_to_gallery").startswith("Added 1 image.")
        bob.predict("", api_name="/clear_gallery")  # Bob's Clear empties Bob's gallery only
        _, table, _ = alice.predict(handle_file(people[0]), 10, api_name="/search")
        assert len(table["data"]) == 4
    assert sorted(p.suffix for p in (tmp_path / "store").iterdir() if p.is_file()) == [".sqlite", ".sqlite"]


def test_shared_gallery_needs_the_operator_to_clear(tmp_path: Path, weights: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    people = []
    for name, data in crops(6):
        (tmp_path / name).write_bytes(data)
        people.append(tmp_path / name)
    monkeypatch.setenv("REID_SHARED_GALLERY", "1")
    monkeypatch.setenv("REID_OPERATOR_TOKEN", "s3cret")
    settings = app.Settings.resolve(str(weights), str(tmp_path / "store"), str(tmp_path), concurrency=3)
    assert settings.shared_gallery and settings.operator_token == "s3cret"
    with serve(settings) as (url, _):
        clients = [Client(url, verbose=False) for _ in range(4)]
        clients[0].predict([handle_file(p) for p in people[:3]], api_name="/add_to_gallery")
        _, table, _ = clients[1].predict(handle_file(people[0]), 10, api_name="/search")  # another visitor sees it
        assert len(table["data"]) == 3
        with pytest.raises(Exception, match="Wrong operator token"):  # noqa: PT011 - gradio_client's AppError
            clients[1].predict("guess", api_name="/clear_gallery")
        errors: list[BaseException] = []

        def run(k: int) -> None:  # adding, searching and clearing at once, through the app
            for i in range(6):
                try:
                    if k == 0:
                        clients[0].predict([handle_file(p) for p in people[i % 2 * 3:][:3]],
                                           api_name="/add_to_gallery")
                    elif k == 3 and i % 2:
                        clients[3].predict("s3cret", api_name="/clear_gallery")
                    else:
                        clients[k].predict(handle_file(people[i % 6]), 5, api_name="/search")
                except BaseException as e:  # noqa: BLE001 - collected and asserted empty below
                    errors.append(e)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    monkeypatch.delenv("REID_OPERATOR_TOKEN")
    off = app.ReIDApp(app.Settings.resolve(str(weights), str(tmp_path / "store"), str(tmp_path)))
    with pytest.raises(app.gr.Error, match="Clearing the shared gallery is off"):
        off.search.clear_gallery("s3cret")
