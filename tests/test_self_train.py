"""Search's background self-training (issue #29, point 5): it runs beside the visitor's searches with its progress
on the page, every unit of its work taking a turn in the fair lane; Cancel stops it and changes nothing; the
server bounds it (jobs in all, one a client, crops a job; off on a public Space unless asked for); its result is
a private model like Adapt's. And the library's side: `reid_core.listening` reports (and stops) any long job."""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from conftest import make_tiny_weights, person, write_people

import app
from reid_core import AdaptConfig, GalleryError, ReID, ServerLimits, listening
from reid_core.adapt import self_training
from reid_core.adapt.clustering import tracklet_labels
from reid_core.base.progress import progress_bar
from reid_core.video.tracklets import Tracklet, embed_tracklets
from space.fair import FairLane
from space.self_train import OFF, SelfTraining
from space.videos import tracklet_crops

CFG = AdaptConfig(rounds=1, epochs=1, bn_images=64, p=4, k=2, min_samples=2)


class CountingLane(FairLane):
    """The fair lane, counting each client's turns (and calling `on_turn(client, count)` inside each); while
    `gate` is closed, a job's turn, once granted, waits for it (as if its unit were long)."""

    def __init__(self) -> None:
        super().__init__(slots=1)
        self.turns: dict[str, int] = {}
        self.on_turn: Callable[[str, int], None] = lambda client, n: None
        self.gate: threading.Event | None = None

    @contextmanager
    def turn(self, client: str) -> Iterator[None]:
        with super().turn(client):
            self.turns[client] = self.turns.get(client, 0) + 1
            self.on_turn(client, self.turns[client])
            if self.gate is not None and threading.current_thread().name == "reid-self-train":
                self.gate.wait()
            yield


@contextmanager
def held(lane: CountingLane) -> Iterator[None]:
    """Inside the block a started job holds its first turn and does nothing: what it did is what it did before."""
    gate = lane.gate = threading.Event()
    try:
        yield
    finally:
        gate.set()
        lane.gate = None


def request(session: str, address: str) -> Any:
    return type("Request", (), {"session_hash": session, "headers": {"x-forwarded-for": address}, "client": None})()


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """120 synthetic crops: 30 people x 4 cameras."""
    return sorted(map(str, write_people(tmp_path_factory.mktemp("crops"), pids=range(1, 31), cams=range(1, 5))))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("w") / "m.safetensors", 16, backbone="test_resnet")


def handlers(tmp_path: Path, weights: Path, clock: Callable[[], float] = time.monotonic, **server: int) -> app.ReIDApp:
    limits = ServerLimits(**{"self_train_jobs": 1, "self_train_images": 100, **server})
    handlers = app.ReIDApp(app.Settings(weights, tmp_path / "store", tmp_path, server=limits, behind_proxy=True))
    handlers.host.lane = CountingLane()
    handlers.search.training = SelfTraining(handlers.host, CFG, clock)  # one for both tabs, as the app's
    handlers.search.self_training.training = handlers.videos.self_training.training = handlers.search.training
    return handlers


def ended(job: Any) -> Any:
    job.thread.join(timeout=600)
    assert not job.thread.is_alive()
    return job


def add(h: app.ReIDApp, crops: list[str], session: str, address: str) -> None:
    h.search.add_to_gallery(crops, request(session, address), lambda *a, **k: None)


def test_listening_reports_every_bar_and_stops_the_work() -> None:
    seen: list[tuple[str, int, int | None]] = []
    with listening(lambda desc, done, total: seen.append((desc, done, total))):
        for _ in progress_bar(range(3), desc="read", disable=True):  # reported even where not shown
            pass
        bar = progress_bar(total=4, desc="train")
        bar.update(3)
        bar.close()
    assert seen == [("read", 1, 3), ("read", 2, 3), ("read", 3, 3), ("train", 3, 4)]
    assert list(progress_bar(range(2), disable=True)) == [0, 1]  # outside the block: a plain bar again

    def stop(desc: str, done: int, total: int | None) -> None:
        if done == 2:
            raise KeyboardInterrupt

    ran = []
    with pytest.raises(KeyboardInterrupt), listening(stop):
        for i in progress_bar(range(5)):
            ran.append(i)
    assert ran == [0, 1]


def test_self_training_runs_beside_others_in_turns_and_becomes_the_private_model(
        tmp_path: Path, weights: Path, crops: list[str]) -> None:
    h = handlers(tmp_path, weights)
    search, lane = h.search, h.host.lane
    add(h, crops, "s1", "A")
    add(h, crops[:10], "s2", "A")
    add(h, crops[:10], "s3", "C")
    turns = lane.turns["A"]  # the adds'
    with held(lane):
        status = search.self_training.start(request("s1", "A"))
        assert status.startswith("Self-training on 100 of your crops: **waiting for its first turn**")
        with pytest.raises(Exception, match="Your network address has a self-training running already"):
            search.self_training.start(request("s2", "A"))
        with pytest.raises(Exception, match="1 self-training job is running, the most this server runs at once"):
            search.self_training.start(request("s3", "C"))
        with pytest.raises(Exception, match="wait for it, or cancel it first"):
            search.self_training.start(request("s1", "A"))
    job = ended(search.training.job(search.source, "remote:s1"))
    assert job.state == "done", job.message
    assert job.message.startswith("Search uses a model self-trained on 100 of your crops, private to you: ")
    assert re.search(r"; kept (bn|round 1) \(", job.message), job.message
    # every unit took a turn of its own: the BatchNorm pass, 4 trunk-map batches of 32, the embedding, each
    # training step, the gallery's re-embedding; and the lane is free again
    assert lane.turns["A"] - turns > 10 and lane._running == 0
    with search.gallery(request("s1", "A")) as g:
        assert g.weights_id != search.require_model().embedding_id and len(g) == 120
    assert h.host.sessions.adapted("A") == 1
    out = search.self_training.tick(request("s1", "A"))  # the page: the end once, with the gallery's new status
    assert out[0] == job.message and "**120** images" in out[2] and out[3] == [] and out[5] == ""
    again = search.self_training.tick(request("s1", "A"))  # and then the status alone
    assert again[0] == job.message and again[2] == gr.skip() and again[3] == gr.skip()
    assert search.self_training.status(request("s1", "A")) == job.message
    results, _, _ = search.search(str(crops[0]), 5, False, request("s1", "A"))
    assert len(results) == 5  # the private model searches


def test_cancel_stops_the_job_and_changes_nothing(tmp_path: Path, weights: Path, crops: list[str]) -> None:
    h = handlers(tmp_path, weights)
    search, lane = h.search, h.host.lane
    add(h, crops, "s1", "A")
    before = search.own_gallery(request("s1", "A")).weights_id
    with held(lane):
        search.self_training.start(request("s1", "A"))
        turns = lane.turns["A"]  # the add's and the start's (its crops read a batch a turn)
        assert search.self_training.cancel(request("s1", "A")).startswith("Cancelling self-training")
    job = ended(search.training.job(search.source, "remote:s1"))
    assert job.state == "cancelled" and job.message == "Self-training cancelled: nothing changed."
    assert job.stage == "waiting for its first turn" and lane.turns["A"] <= turns + 1  # stopped before any unit
    assert search.own_gallery(request("s1", "A")).weights_id == before and h.host.sessions.adapted() == 0
    assert search.self_training.cancel(request("s1", "A")) == "No self-training is running."
    # cancelled in the middle (at its 6th unit), it stops at the next one, hands its turn back, changes nothing
    turns = lane.turns["A"]
    lane.on_turn = lambda client, n: search.self_training.cancel(request("s1", "A")) if n == turns + 6 else None
    search.self_training.start(request("s1", "A"))  # the place is free again
    job = ended(search.training.job(search.source, "remote:s1"))
    assert job.state == "cancelled" and job.stage != "waiting for its first turn" and lane.turns["A"] == turns + 6
    assert lane._running == 0 and search.own_gallery(request("s1", "A")).weights_id == before
    assert h.host.sessions.adapted() == 0


def test_clearing_the_gallery_or_leaving_the_page_stops_the_job(tmp_path: Path, weights: Path,
                                                                 crops: list[str]) -> None:
    now = [0.0]
    h = handlers(tmp_path, weights, clock=lambda: now[0])
    search, lane = h.search, h.host.lane
    add(h, crops, "s1", "A")
    with held(lane):
        search.self_training.start(request("s1", "A"))
        search.clear_gallery(None, request("s1", "A"))
    job = ended(search.training.job(search.source, "remote:s1"))
    assert job.state == "cancelled" and search.own_gallery(request("s1", "A")) is not None
    add(h, crops, "s1", "A")
    with held(lane):
        search.self_training.start(request("s1", "A"))
        now[0] += 100
        assert search.self_training.status(request("s1", "A")).startswith("Self-training on 100")  # its page asks
        now[0] += 100  # 100 s since: still followed
        assert search.training.stopped(search.training.job(search.source, "remote:s1")) is False
        now[0] += 30  # 130 s without a question: its page was closed
    job = ended(search.training.job(search.source, "remote:s1"))
    assert job.state == "cancelled" and "did not ask about it for 2 min" in job.message
    assert job.stage == "waiting for its first turn"


def test_too_few_crops_and_a_full_adapted_place_refuse_before_any_work(tmp_path: Path, weights: Path,
                                                                      crops: list[str]) -> None:
    h = handlers(tmp_path, weights, max_adapted=1, client_adapted=1)
    search = h.search
    add(h, crops[:50], "s1", "A")
    with pytest.raises(Exception, match="needs at least 100 crops \\(the gallery has 50\\)"):
        search.self_training.start(request("s1", "A"))
    add(h, crops[50:], "s1", "A")
    add(h, crops, "s2", "B")
    with held(h.host.lane):  # a job holds the one adapted-model place from its start: nobody takes it meanwhile
        search.self_training.start(request("s1", "A"))
        assert h.host.sessions.adapt_refusal("remote:s2").startswith("1 visitors hold adapted models")
        search.self_training.cancel(request("s1", "A"))
    assert ended(search.training.job(search.source, "remote:s1")).state == "cancelled"
    assert h.host.sessions.adapt_refusal("remote:s2") == ""  # given back
    search.adapt_gallery(request("s2", "B"), lambda *a, **k: None)  # takes the one adapted-model place
    with pytest.raises(Exception, match="1 visitors hold adapted models"):
        search.self_training.start(request("s1", "A"))
    assert search.training.job(search.source, "remote:s1").state == "cancelled"  # the old one: none started


def test_off_on_a_space_unless_asked_for(tmp_path: Path, weights: Path, crops: list[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_WEIGHTS", str(weights))
    assert app.Settings.resolve().server.self_train_jobs == 1  # a local run: one job
    monkeypatch.setenv("SPACE_ID", "someone/reid")
    assert app.Settings.resolve().server.self_train_jobs == 0
    assert app.Settings.resolve(self_train_jobs=2).server.self_train_jobs == 2
    monkeypatch.setenv("REID_SELF_TRAIN_JOBS", "1")
    assert app.Settings.resolve().server.self_train_jobs == 1
    h = handlers(tmp_path, weights, self_train_jobs=0)
    add(h, crops, "s1", "A")
    with pytest.raises(Exception, match="Self-training is off on this server"):
        h.search.self_training.start(request("s1", "A"))
    assert h.search.self_training.view(request("s1", "A"))[0] == f"⚠️ {OFF}"
    demo = app.build_demo(app.Settings(weights, tmp_path / "store2", tmp_path, server=ServerLimits(self_train_jobs=0)))
    helps = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "self-train-help"]
    assert len(helps) == 1 and helps[0].visible is False

def test_self_trained_reads_crops_in_memory_with_their_cameras(weights: Path) -> None:
    reid = ReID.load(weights, engine="fp32", flip=False)
    images = [person(pid, cam, 0) for pid in range(1, 31) for cam in range(4)]
    seen: list[str] = []
    with listening(lambda desc, done, total: seen.append(desc)):
        adapted, report = reid.self_trained(images, [c for _ in range(1, 31) for c in range(4)], CFG)
    assert report.images == 120 and report.cameras == 4 and report.kept
    assert {"BatchNorm statistics", "trunk maps"} <= set(seen)
    assert adapted.embedding_id != reid.embedding_id
    with pytest.raises(ValueError, match="120 crops but 3 cameras"):
        reid.self_trained(images, [0, 1, 2], CFG)


def index_tracklets(h: app.ReIDApp, session: str, address: str, people: int = 16, crops: int = 4) -> None:
    """As if the visitor's Find people had tracked each of `people` synthetic people once in clip camA and once
    in camB (`crops` crops a tracklet), without decoding video."""
    with h.videos._use(request(session, address), create=True) as gallery:
        for cam in ("camA", "camB"):
            tracklets = [Tracklet(cam, pid, np.array([[k, 0, 0, 32, 64, k / 5] for k in range(crops)], float),
                                  [person(pid, 1 + (cam == "camB"), k) for k in range(crops)], np.ones(crops))
                         for pid in range(1, people + 1)]
            embed_tracklets(tracklets, gallery.embed)
            gallery.add_tracklets(tracklets, f"{cam}.mp4", cam)


def test_videos_self_train_on_whole_tracklets_and_go_back(tmp_path: Path, weights: Path, crops: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Videos' Self-train reads whole tracklets (a crop's tracklet and clip go with it), shares the server's bound
    with Search, makes the visitor's private model (people regrouped at its end), and *Use the shared model* goes
    back. And the library keeps a tracklet under one pseudo-label."""
    h = handlers(tmp_path, weights, self_train_images=102)
    videos = h.videos
    with pytest.raises(Exception, match="Find people in your videos first"):
        videos.self_training.start(request("v1", "A"))
    index_tracklets(h, "v1", "A", people=8)  # 64 crops: too few
    with pytest.raises(Exception, match=r"needs at least 100 crops \(your videos' 16 tracklets give 64\)"):
        videos.self_training.start(request("v1", "A"))
    index_tracklets(h, "v1", "A", people=16)
    with videos._use(request("v1", "A")) as gallery:
        pictures, cams, tracks = tracklet_crops(gallery, 102, nullcontext)
    assert len(pictures) == 100 == len(cams) == len(tracks)  # whole tracklets of 4 within 102
    assert sorted(collections.Counter(tracks).values()) == [4] * 25 and set(cams) == {0, 1}
    assert all(len({c for c, t in zip(cams, tracks, strict=True) if t == k}) == 1 for k in set(tracks))
    add(h, crops, "s1", "A")  # a gallery in Search too, which may not self-train beside it
    clustered: list[np.ndarray] = []  # the tracklets the library's clustering was given
    real = self_training.tracklet_labels
    monkeypatch.setattr(self_training, "tracklet_labels",
                        lambda labels, t: clustered.append(t.copy()) or real(labels, t))
    with held(h.host.lane):
        assert videos.self_training.start(request("v1", "A")).startswith("Self-training on 100 of your crops")
        with pytest.raises(Exception, match="Your network address has a self-training running already"):
            h.search.self_training.start(request("s1", "A"))
    job = ended(h.search.training.job(videos.source, "remote:v1"))
    assert job.state == "done", job.message
    assert job.message.startswith("Your videos use a model self-trained on 100 of your crops, private to you")
    assert job.message.endswith("*Use the shared model* goes back.")
    assert clustered and sorted(collections.Counter(clustered[0].tolist()).values()) == [4] * 25
    assert videos.sessions.adapted("A") == 1 and h.host.sessions.adapted() == 0
    with videos._use(request("v1", "A")) as gallery:
        assert gallery.weights_id != videos.host.reid.embedding_id and gallery.tracklet_count() == 32
    status, timer, tiles, summary, labels, seen, where = videos.self_training.tick(request("v1", "A"))
    assert status == job.message and timer.active is False and seen == [] and where == ""
    assert len(tiles) == len(labels) >= 1 and "people found" in summary  # grouped again by the new model
    assert videos.self_training.tick(request("v1", "A"))[2:] == (gr.skip(),) * 5  # once
    tiles, summary, labels, seen, where = videos.shared_model(request("v1", "A"))
    with videos._use(request("v1", "A")) as gallery:
        assert gallery.weights_id == videos.host.reid.embedding_id
    assert videos.sessions.adapted() == 0 and len(tiles) == len(labels) >= 1


def test_a_tracklet_keeps_one_pseudo_label() -> None:
    labels = np.array([0, 0, -1, 1, 1, 0, -1, -1, 2, -1])
    tracks = np.array([5, 5, 5, 5, -1, 7, 7, 9, -1, -1])
    # track 5: labels 0, 0, -, 1 -> all 0; track 7: 0, - -> both 0; track 9: no clustered crop -> stays out;
    # crops of no track keep theirs
    assert tracklet_labels(labels, tracks).tolist() == [0, 0, 0, 0, 1, 0, 0, -1, 2, -1]
    assert tracklet_labels(labels, np.full(10, -1)).tolist() == labels.tolist()
    # every crop of cluster 1 went to its tracks' majorities: no empty cluster is left (its centroid would be NaN)
    assert tracklet_labels(np.array([0, 0, 1, 1, 2, 2]), np.array([5, 5, 5, 7, 7, 7])).tolist() == [0, 0, 0, 1, 1, 1]


def test_a_second_start_while_the_first_reads_is_refused_and_keeps_its_place(tmp_path: Path, weights: Path,
                                                                             crops: list[str]) -> None:
    """A job is registered, with its adapted-model place, before it reads a crop: a second start of the same
    session meanwhile (two clicks, or the button and the API) is refused at once and cannot give the first one's
    place back; a reading that fails leaves nothing behind."""
    h = handlers(tmp_path, weights, max_adapted=1)
    search = h.search
    add(h, crops, "s1", "A")
    add(h, crops, "s2", "B")
    inner: list[str] = []
    real = search.source.read

    def read(gallery: Any, n: int, turn: Any) -> Any:
        with pytest.raises(Exception) as refused:
            search.self_training.start(request("s1", "A"))
        inner.append(refused.value.message)
        inner.append(h.host.sessions.adapt_refusal("remote:s2"))  # the place is this job's
        return real(gallery, n, turn)

    search.source = search.self_training.source = dataclasses.replace(search.source, read=read)
    search.self_training.start(request("s1", "A"))
    job = ended(search.training.job(search.source, "remote:s1"))
    assert inner[0].startswith("Self-training is running already") and inner[1].startswith("1 visitors hold")
    assert job.state == "done" and h.host.sessions.adapted() == 1
    search.undo_adapt(request("s1", "A"))  # the place is free again

    def broken(gallery: Any, n: int, turn: Any) -> Any:
        raise GalleryError("unreadable")

    search.source = search.self_training.source = dataclasses.replace(search.source, read=broken)
    with pytest.raises(Exception, match="unreadable"):
        search.self_training.start(request("s2", "B"))
    assert search.training.running() == 0 and search.training.job(search.source, "remote:s2") is None
    assert h.host.sessions.adapt_refusal("remote:s2") == ""  # its place given back


def test_two_reopens_of_one_gallery_never_overlap(tmp_path: Path, weights: Path, crops: list[str]) -> None:
    """A session's file opened again with another model (a job's end, Undo, *Use the shared model*) while it is
    being opened again already is refused in one line: whichever ended last would otherwise win, its model's
    place uncounted."""
    h = handlers(tmp_path, weights)
    add(h, crops[:10], "s1", "A")
    sessions, reid = h.host.sessions, h.search.require_model()
    said: list[str] = []

    def open_again(path: Path) -> Any:
        with pytest.raises(GalleryError) as e:
            sessions.reopen("remote:s1", lambda p: reid.gallery(p), 1)
        said.append(str(e.value))
        return reid.gallery(path)

    sessions.reopen("remote:s1", open_again)
    assert said == ["your gallery is being re-embedded with another model; try again when it is done"]
    assert sessions.adapted() == 0 and len(h.search.own_gallery(request("s1", "A"))) == 10
