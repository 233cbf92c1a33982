"""A hostile visitor against a running app (issue #22's six findings), each replayed with small bounds so the
suite stays quick: lock-out by a session flood, memory (huge logs, index caches, adapted models) and disk,
CPU (a pixel bomb of an add, a queue filled by one client), unchecked parameters, markup in user strings, and
the direct calls' session key chosen by a remote client. Figures at full size: bench/attacks.py, BENCHMARKS.md."""

from __future__ import annotations

import io
import math
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_tiny_weights, person, serve, write_people
from gradio_client import Client, handle_file
from PIL import Image

import app
from reid_core import Gallery, GalleryError, ServerLimits
from reid_core.data.images import load_image
from reid_core.data.limits import Limits
from reid_core.figures import plots
from space.fair import Busy, FairLane
from space.params import ParamError, text
from space.sessions import Sessions

SERVER = ServerLimits(max_sessions=12, client_sessions=3, session_jobs=2, client_jobs=4, workers=8)
LIMITS = Limits(max_log_rows=1000, max_request_pixels=20_000_000)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attacks")
    make_tiny_weights(root / "weights" / "model.safetensors")
    write_people(root / "people", pids=range(1, 7))
    return root


@pytest.fixture(scope="module")
def running(workdir: Path) -> Iterator[tuple[str, app.ReIDApp]]:
    settings = app.Settings(workdir / "weights" / "model.safetensors", workdir / "store", workdir / "runs",
                            LIMITS, SERVER, behind_proxy=True)
    with serve(settings) as (url, demo):
        yield url, demo.reid_app


def visitor(url: str, address: str) -> Client:
    """A client as the proxy reports it (the app trusts the proxy's last X-Forwarded-For entry)."""
    return Client(url, verbose=False, headers={"X-Forwarded-For": f"10.9.9.9, {address}"})


def request(session: str, address: str = "198.51.100.1") -> Any:
    return type("Request", (), {"session_hash": session, "headers": {"x-forwarded-for": address},
                                "client": None})()


def people(workdir: Path) -> list[Path]:
    return sorted((workdir / "people").glob("*.png"))


def sessions_of(handlers: app.ReIDApp, address: str) -> int:
    return sum(e.client == address for e in handlers.host.sessions._open.values())


# --- 1. lock-out --------------------------------------------------------------------------------------------------
def test_a_session_flood_cannot_lock_out_a_new_visitor(running: tuple[str, app.ReIDApp], workdir: Path) -> None:
    url, handlers = running
    for i in range(50):  # page loads and searches of fresh sessions create nothing
        handlers.search.gallery_summary(request(f"loader-{i}"))
    assert len(handlers.host.sessions._open) == 0
    attacker = visitor(url, "203.0.113.9")
    first = attacker.session_hash
    for _ in range(2 * SERVER.max_sessions):  # one client, a fresh session per call
        attacker.predict([handle_file(people(workdir)[0])], api_name="/add_to_gallery")
        attacker.reset_session()
    assert sessions_of(handlers, "203.0.113.9") == SERVER.client_sessions
    for a in range(SERVER.max_sessions):  # and from many addresses: the server is full
        visitor(url, f"203.0.114.{a}").predict([handle_file(people(workdir)[1])], api_name="/add_to_gallery")
    assert len(handlers.host.sessions._open) == SERVER.max_sessions
    newcomer = visitor(url, "198.51.100.77")
    said = newcomer.predict([handle_file(p) for p in people(workdir)], api_name="/add_to_gallery")
    assert said.startswith(f"Added {len(people(workdir))} images")
    _, table, _ = newcomer.predict(handle_file(people(workdir)[3]), 5, api_name="/search")
    assert table["data"][0][1] == people(workdir)[3].name
    # the flood's first gallery went, and it is said
    told = handlers.search.gallery_summary(request(first, "203.0.113.9"))
    assert "Your gallery was removed" in told and "Your private gallery: **0** images" in told


# --- 2. memory and disk -------------------------------------------------------------------------------------------
def test_huge_log_is_cut_and_thinned(running: tuple[str, app.ReIDApp], tmp_path: Path) -> None:
    url, _ = running
    log = tmp_path / "log.csv"
    n = 50_000
    rows = np.column_stack([np.arange(1, n + 1), np.linspace(5, 1, n), np.full(n, 3.5e-4)])
    np.savetxt(log, rows, delimiter=",", header="epoch,loss,lr", comments="", fmt="%.6g")
    *figs, status = visitor(url, "198.51.100.5").predict([], handle_file(log), api_name="/log_curves")
    assert f"only its first {LIMITS.max_log_rows:,} rows are plotted" in status
    loss = plots.read_log(log, LIMITS.max_log_rows)
    assert len(loss) == LIMITS.max_log_rows and loss.attrs["cut"]
    many = plots.line_figure(plots.read_log(log).assign(run="r"), ["loss"], "t")
    assert len(many.data[0].x) == plots.MAX_POINTS and many.data[0].x[-1] == n  # thinned, the last kept


def fake_gallery(dim: int) -> Any:
    """A Gallery factory whose model is a seeded random projection: cheap, deterministic, `dim` wide."""
    def embed(imgs: list[Image.Image]) -> np.ndarray:
        return np.stack([np.random.default_rng(int(np.asarray(i).sum())).normal(size=dim) for i in imgs])
    return lambda path: Gallery(path, embed, "fake")


def uploads(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    out = []
    for k in range(start, start + n):
        buf = io.BytesIO()
        person(k % 97 + 1, k % 3, k).save(buf, "PNG")
        out.append((f"{k:04d}_c1s1_{k:06d}_00.png", buf.getvalue()))
    return out


def test_index_caches_and_adapted_models_stay_within_one_memory_budget(tmp_path: Path) -> None:
    sessions = Sessions(tmp_path, fake_gallery(4096), ServerLimits(memory_mb=4))  # 16 KiB a row
    for s in range(4):
        with sessions.use(f"s{s}", create=True) as g:
            g.add(uploads(150, 150 * s))
            assert g.search(g.embeddings()[7], 1)[0].name == g.entries()[7]["name"]  # a cache of ~2.5 MB
        assert sessions.memory_bytes() <= 4 * 2**20
    with sessions.use("s0") as g:  # its cache was dropped for the others: rebuilt from the file, same answer
        assert len(g) == 150 and g.search(g.embeddings()[3], 1)[0].name == g.entries()[3]["name"]
    sessions.reopen("s1", fake_gallery(4096), model_bytes=3 * 2**20)  # an adapted model each
    sessions.reopen("s2", fake_gallery(4096), model_bytes=3 * 2**20)
    assert sessions.memory_bytes() <= 4 * 2**20 and sessions.adapted() == 1
    assert "memory for adapted models" in sessions.notice("s1")


def test_one_address_cannot_hold_every_adapted_model(tmp_path: Path) -> None:
    """Issue #29: one address filled all 8 adapted-model places with 8 small galleries; now it holds at most
    client_adapted of them (refused before any work, and again when the place is taken), and others still adapt."""
    sessions = Sessions(tmp_path, fake_gallery(8), ServerLimits(max_adapted=3, client_adapted=2))
    for s, client in (("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C")):
        with sessions.use(s, client, create=True) as g:
            g.add(uploads(3))
    for s in ("a1", "a2"):
        assert sessions.adapt_refusal(s) == ""
        sessions.reopen(s, fake_gallery(8), model_bytes=1000)
    assert "already holds 2 adapted models" in sessions.adapt_refusal("a3")
    with pytest.raises(GalleryError, match="already holds 2 adapted models"):
        sessions.reopen("a3", fake_gallery(8), model_bytes=1000)
    sessions.reopen("b1", fake_gallery(8), model_bytes=1000)  # another address is served
    assert sessions.adapted("A") == 2 and sessions.adapted() == 3
    assert "3 visitors hold adapted models" in sessions.adapt_refusal("c1")
    sessions.reopen("a1", fake_gallery(8))  # an undo frees the place
    assert sessions.adapt_refusal("a3") == "" and sessions.adapted("A") == 1
    with pytest.raises(GalleryError, match="re-embedding failed"):  # a failed re-embedding gives its place back
        sessions.reopen("a3", lambda path: (_ for _ in ()).throw(GalleryError("re-embedding failed")), 1000)
    assert sessions.adapted("A") == 1


class TurnLog:
    """A fair-lane stand-in that records each unit of work: whether model work ran inside a turn, and how many."""

    def __init__(self) -> None:
        self.turns, self.inside, self.outside = 0, 0, 0
        self.holding = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        assert not self.holding  # one unit at a time: never a turn inside a turn
        self.turns, self.holding = self.turns + 1, True
        try:
            yield
        finally:
            self.holding = False

    def work(self, n: int = 1) -> None:
        if self.holding:
            self.inside += n
        else:
            self.outside += n


def test_adapting_and_undoing_take_turns_a_batch_at_a_time(tmp_path: Path, workdir: Path) -> None:
    """Issue #29: "Adapt to this gallery" and "Undo adaptation" re-embedded a whole gallery inside one turn of
    the model lane (another visitor's Compare waited 30 s for 2,000 crops); now the BatchNorm pass and the
    re-embedding take a turn per batch, as adds do, so another visitor waits one batch."""
    from reid_core import ReID

    log = TurnLog()

    def embed(imgs: list[Image.Image]) -> np.ndarray:
        log.work(len(imgs))
        return np.random.default_rng(len(imgs)).normal(size=(len(imgs), 8))

    path = tmp_path / "g.sqlite"
    Gallery(path, embed, "source").add(uploads(20))
    log.inside = log.outside = 0
    reopened = Gallery(path, embed, "adapted", batch_size=8, turn=log)  # other weights: re-embedded
    assert len(reopened) == 20 and log.turns == 3 and log.inside == 20 and log.outside == 0
    reid = ReID.load(workdir / "weights" / "model.safetensors", engine="fp32", flip=False)
    reid.batch_size = 4
    bn_log = TurnLog()
    reid.bn_adapted(people(workdir)[:10], turn=bn_log)
    assert bn_log.turns == 3  # 10 crops, 4 a batch


def test_disk_budget_makes_room_from_idle_galleries_then_refuses(tmp_path: Path) -> None:
    sessions = Sessions(tmp_path, fake_gallery(8), ServerLimits(disk_mb=1))
    for s in range(3):
        sessions.make_room_on_disk(f"s{s}")
        with sessions.use(f"s{s}", create=True) as g:
            g.add(uploads(120, 120 * s))  # ~0.6 MB each
    assert sessions.disk_bytes() < 2 * 2**20 and "disk for galleries" in sessions.notice("s0")
    with sessions.use("s2") as g:
        g.add(uploads(200, 1000))
    with pytest.raises(GalleryError, match="disk for galleries .* is full"):
        sessions.make_room_on_disk("s2")


# --- 3. CPU -------------------------------------------------------------------------------------------------------
def test_a_pixel_bomb_of_an_add_stops_at_the_request_budget(running: tuple[str, app.ReIDApp], tmp_path: Path,
                                                            workdir: Path) -> None:
    url, _ = running
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # 4 x 12.5 MP of flat PNG: 200 KB that decodes to 50 M pixels
        for k in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (2500, 5000), (k * 40, 90, 160)).save(buf, "PNG")
            zf.writestr(f"big{k}.png", buf.getvalue())
    said = visitor(url, "198.51.100.9").predict([handle_file(archive)], api_name="/add_to_gallery")
    assert said.startswith("Added 1 image."), said  # 12.5 M of the 20 M budget; the second is refused undecoded
    assert "big1.png: 12,500,000 pixels to decode, over what is left of this request's pixel budget (7,500,000)" in said
    assert "any later files: this request decoded its pixel budget" in said and "big2.png" not in said


def test_jpegs_are_decoded_reduced(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (120, 80, 40)).save(photo, quality=90)
    assert load_image(photo).size == (4000, 3000)
    assert load_image(photo, reduce=(256, 512)).size == (1000, 750)  # 1/4 scale: 16x fewer pixels decoded


def test_fair_lane_serves_clients_in_turn() -> None:
    lane, order, hold = FairLane(slots=1, per_session=4, per_client=4), [], threading.Event()

    def unit(client: str, session: str, tag: str) -> None:
        with lane.request(client, session) as turn, turn():
            order.append(tag)
            if tag == "a1":
                hold.wait(10)

    def start(client: str, session: str, tag: str, waiting: int) -> threading.Thread:
        t = threading.Thread(target=unit, args=(client, session, tag))
        t.start()
        while sum(map(len, lane._waiting.values())) < waiting and tag != "a1":  # queued before the next one
            time.sleep(0.01)
        return t

    threads = [start("A", "a", "a1", 0)]
    while order != ["a1"]:
        time.sleep(0.01)
    threads += [start("A", "a", f"a{k}", k - 1) for k in (2, 3, 4)]  # the hostile client's backlog first...
    threads.append(start("B", "b", "b1", 4))  # ...then another visitor
    hold.set()
    for t in threads:
        t.join()
    assert order == ["a1", "b1", "a2", "a3", "a4"]  # B waits for one unit, not for A's backlog
    with lane.request("C", "c"), lane.request("C", "c"), pytest.raises(Busy, match="already have 4"):
        with lane.request("C", "c"), lane.request("C", "c"), lane.request("C", "c"):
            pass


def test_another_visitor_is_served_during_a_hostile_add(running: tuple[str, app.ReIDApp], tmp_path: Path,
                                                        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile add is held after its first batch (between two turns of the fair lane) until the other
    visitor's compare has been answered: answered during the add, or the test times out waiting. No sleeps."""
    import reid_core.search.gallery as gallery_module

    url, _ = running
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in uploads(400, 5000):
            zf.writestr(name, data)
    started, release, real = threading.Event(), threading.Event(), gallery_module.ingest

    def held(uploads: Any, have: Any, room: Any, embed: Any, limits: Any, stage: Any, *rest: Any) -> Any:
        def first_stage(*args: Any) -> None:
            stage(*args)
            if not started.is_set():  # the first batch is in: the add is under way, and holds no turn now
                started.set()
                release.wait(300)
        return real(uploads, have, room, embed, limits, first_stage, *rest)

    monkeypatch.setattr(gallery_module, "ingest", held)
    done: list[str] = []
    hostile = threading.Thread(target=lambda: done.append(visitor(url, "203.0.113.50").predict(
        [handle_file(archive)], api_name="/add_to_gallery")))
    hostile.start()
    assert started.wait(300), "the hostile add never began"
    try:
        prob, *_ = visitor(url, "198.51.100.60").predict(handle_file(people(workdir)[0]),
                                                         handle_file(people(workdir)[1]), api_name="/compare")
        still_adding = not release.is_set() and hostile.is_alive()
    finally:
        release.set()
    hostile.join()
    assert 0 <= prob <= 1 and still_adding and done[0].startswith("Added 400 images")


# --- 4. parameters ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", ["5", None, [3], -1, 0, 51, 1e9, 2.5, True])
def test_search_k_is_checked(running: tuple[str, app.ReIDApp], workdir: Path, k: Any) -> None:
    url, handlers = running
    with pytest.raises(Exception, match="k must be a whole number from 1 to 50"):  # noqa: PT011 - AppError
        visitor(url, "198.51.100.70").predict(handle_file(people(workdir)[0]), k, api_name="/search")


@pytest.mark.parametrize("k", [math.nan, math.inf, -math.inf])
def test_search_k_is_finite(running: tuple[str, app.ReIDApp], workdir: Path, k: float) -> None:
    """gradio_client will not send NaN, but the server's JSON parser takes it from a raw request."""
    with pytest.raises(app.gr.Error, match="k must be a whole number from 1 to 50"):
        running[1].search.search(str(people(workdir)[0]), k)


@pytest.mark.parametrize(("call", "message"), [
    (lambda h: h.search.search(None, 5, "yes"), "rerank must be true or false"),
    (lambda h: h.search.clear_gallery("x" * 10_000), "token must be a text of at most 256"),
    (lambda h: h.search.clear_gallery(["list"]), "token must be a text"),
    (lambda h: h.search.add_to_gallery("not a list"), "files must be a list of at most"),
    (lambda h: h.search.add_to_gallery([{"path": 3}]), "an upload must be a file"),
    (lambda h: h.search.add_to_gallery([7]), "an upload must be a file, not int"),
    (lambda h: h.curves.curves(["run"] * 1000, None), "runs must be a list of at most 16"),
    (lambda h: h.curves.curves([{"x": 1}], None), "runs must be a list"),
    (lambda h: h.compare.compare(3, None), "an upload must be a file, not int"),
])
def test_every_parameter_is_checked_in_one_line(running: tuple[str, app.ReIDApp], call: Any, message: str) -> None:
    """The handlers behind hidden endpoints too (the page calls them by number, so anyone can)."""
    with pytest.raises(app.gr.Error, match=message) as e:
        call(running[1])
    assert "\n" not in str(e.value)


def test_checks_refuse_what_json_can_smuggle() -> None:
    from space import params

    assert params.whole(10.0, "k", 1, 50) == 10
    for bad in (math.nan, "10", None, True, 10.5):
        with pytest.raises(ParamError):
            params.whole(bad, "k", 1, 50)


# --- 5. markup ----------------------------------------------------------------------------------------------------
def test_user_strings_are_shown_as_text(running: tuple[str, app.ReIDApp], workdir: Path, tmp_path: Path) -> None:
    url, _ = running
    name = "<img src=x onerror=alert(1)>_*bold*_[link](http:x).png"  # an API call names its upload freely
    (tmp_path / "upload.png").write_bytes(b"not an image")
    said = running[1].search.add_to_gallery([{"path": str(tmp_path / "upload.png"), "orig_name": name}])
    assert "<img" not in said and "&lt;img src=x onerror=alert(1)&gt;\\_\\*bold\\*\\_\\[link\\](http:x).png" in said
    log = tmp_path / "log.csv"
    log.write_text("<script>alert(1)</script>,**x**\n1,2\n")
    *_, status = visitor(url, "198.51.100.80").predict([], handle_file(log), api_name="/log_curves")
    assert "<script>" not in status and "&lt;script&gt;alert(1)&lt;/script&gt;" in status and "\\*\\*x\\*\\*" in status
    assert text("0001_c1s1_000001_00.png") == "0001_c1s1_000001_00.png"  # ordinary names read as they are


# --- 6. the direct calls' session ----------------------------------------------------------------------------------
def test_a_remote_client_cannot_choose_the_local_session(running: tuple[str, app.ReIDApp], workdir: Path) -> None:
    url, handlers = running
    handlers.search.add_to_gallery([str(p) for p in people(workdir)])  # a direct call: the 'local' session
    assert len(handlers.search.own_gallery()) == len(people(workdir))
    remote = visitor(url, "198.51.100.90")
    remote.session_hash = "local"
    items, table, summary = remote.predict(handle_file(people(workdir)[0]), 5, api_name="/search")
    assert items == [] and table["data"] in ([], [[None] * 4], [["", "", "", ""]]) and "gallery is empty" in summary


def test_opening_a_gallery_does_not_hold_every_session(tmp_path: Path) -> None:
    """Opening may re-embed a whole gallery for new weights: other sessions go on meanwhile (Galleries.get did it
    under the lock every session needs)."""
    slow, opened = threading.Event(), []
    sessions = Sessions(tmp_path, lambda path: fake_gallery(8)(path), ServerLimits())
    slow_file = sessions._file(sessions.key("s-slow"))

    def open_gallery(path: Path) -> Gallery:
        opened.append(path)
        if path == slow_file:
            slow.wait(10)  # a long re-embedding
        return fake_gallery(8)(path)

    sessions.open_gallery = open_gallery
    first = threading.Thread(target=lambda: sessions.use("s-slow", create=True).__enter__())
    first.start()
    while not opened:
        time.sleep(0.01)
    with sessions.use("s-fast", create=True) as g:  # served while the first is still opening
        assert g is not None and first.is_alive()
    slow.set()
    first.join()
