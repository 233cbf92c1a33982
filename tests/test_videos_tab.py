"""The Videos tab's handlers called directly, on tiny synthetic clips (one person walking across a grey floor)
with a detector that boxes what is off the floor, so they run in seconds; /find_people and /search_videos through
gradio_client; and once, slow, on real footage (MOT15's TUD-Campus) with the offline detector."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from conftest import box_detector, make_clip, make_tiny_weights, person, serve
from gradio_client import Client, handle_file

import app
from space import videos as videos_module
from space.host import Host
from space.videos import MAX_VIDEOS, Videos

MOT = Path(os.environ.get("REID_MOT15", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mot15"))
CAMPUS = MOT / "TUD-Campus" / "TUD-Campus.mp4"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("videos") / "weights" / "model.safetensors")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {"camA": make_clip(root / "camA.mp4"), "camB": make_clip(root / "camB.mp4")}


def videos_tab(weights: Path, store: Path, **kw: Any) -> Videos:
    return Videos(Host(app.Settings(weights, store, store / "runs")), detector=box_detector, **kw)


def click(index: int) -> Any:
    """The select event of a click on the index-th tile."""
    return type("Select", (), {"index": index})()


def test_people_are_found_across_clips_and_where_they_appear(weights: Path, clips: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """One synthetic person in two clips: one tile, seen in both cameras; a click lists both appearances with their
    times; a crop of them finds them; the progress bar names each stage."""
    tab = videos_tab(weights, tmp_path / "store")
    said: list[str] = []
    tiles, summary, labels = tab.find_people([str(clips["camA"]), str(clips["camB"])],
                                             progress=lambda value, desc="", unit="": said.append(desc))
    assert {"Finding and following people", "Describing each person"} <= set(said)
    assert "**camA**: 16 frames, 1 person tracked" in summary and "**camB**: 16 frames, 1 person tracked" in summary
    assert summary.startswith("**1** person found, **1** of them in more than one camera")
    assert len(tiles) == len(labels) == 1 and re.fullmatch(rf"P{labels[0]} · camA, camB · 0\.\d–1\.5 s", tiles[0][1])
    assert Path(tiles[0][0]).is_file()

    seen, where = tab.person(labels, click(0))
    assert len(seen) == 2 and sorted(c.split(" · ")[0] for _, c in seen) == ["camA", "camB"]
    assert re.fullmatch(rf"\*\*P{labels[0]}\*\* appears 2 time\(s\): camA 0\.\d–1\.5 s; camB 0\.\d–1\.5 s", where)

    crop = tmp_path / "crop.png"
    person(1, 1, 0).save(crop)
    found, best = tab.search(str(crop))
    assert len(found) == 2 and found[0][1].startswith("#1 ") and best.startswith("Best match: **cam")

    again, summary, _ = tab.find_people([str(clips["camA"])])  # the same clip again: nothing new, nothing lost
    assert len(again) == 1 and "**1** person found" in summary


def test_bad_videos_are_one_line_and_nothing_is_written(weights: Path, clips: dict[str, Path], tmp_path: Path,
                                                        ) -> None:
    """Not a video: one line naming the visitor's file (never the server's temporary path), before any clip is
    decoded, so the good clip beside it is not indexed and no gallery file is made."""
    tab = videos_tab(weights, tmp_path / "store")
    bogus = tmp_path / "upload-7f3a.bin"
    bogus.write_text("not a video at all")
    payload = {"path": str(bogus), "orig_name": "holiday.mp4"}
    with pytest.raises(gr.Error) as e:
        tab.find_people([str(clips["camA"]), payload])
    assert e.value.message.startswith("holiday.mp4: not a video (text)")
    assert "\n" not in e.value.message and str(tmp_path) not in e.value.message
    assert list((tmp_path / "store" / "videos").glob("*.sqlite*")) == []
    seen, where = tab.search(str(clips["camA"]).replace(".mp4", ".png"))  # nothing indexed: said, not an error
    assert seen == [] and where == "No videos indexed yet: add some first."


@pytest.mark.parametrize(("call", "message"), [
    (lambda t: t.find_people("clip.mp4"), "files must be a list of at most 4"),
    (lambda t: t.find_people([7]), "an upload must be a file, not int"),
    (lambda t: t.find_people([{"path": 3}]), "an upload must be a file"),
    (lambda t: t.find_people(None), f"Choose one to {MAX_VIDEOS} short videos"),
    (lambda t: t.find_people(["a.mp4"] * (MAX_VIDEOS + 1)), "files must be a list of at most 4"),
    (lambda t: t.person("1", click(0)), "no people listed"),
    (lambda t: t.person([1, 2], click(5)), "that person is no longer listed"),
    (lambda t: t.person([1], click("0")), "that person is no longer listed"),
    (lambda t: t.search(3), "an upload must be a file, not int"),
])
def test_every_parameter_is_checked_in_one_line(weights: Path, tmp_path: Path, call: Any, message: str) -> None:
    with pytest.raises(gr.Error, match=message) as e:
        call(videos_tab(weights, tmp_path / "store"))
    assert "\n" not in str(e.value)


def test_the_detector_is_loaded_once_and_only_when_needed(weights: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Any] = []
    monkeypatch.setattr(videos_module, "load_detector", lambda spec, cache_dir=None: loads.append(spec) or box_detector)
    tab = Videos(Host(app.Settings(weights, tmp_path / "store", tmp_path)))
    assert loads == []  # building the tab loads nothing
    assert tab.detector() is tab.detector() is box_detector and loads == [None]


@pytest.fixture(scope="module")
def client(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    store = tmp_path_factory.mktemp("served")
    with serve(app.Settings(weights, store, store / "runs")) as (url, demo):
        demo.reid_app.videos._detector = box_detector
        yield Client(url, verbose=False)


def test_find_people_and_search_videos_endpoints(client: Client, clips: dict[str, Path], tmp_path: Path) -> None:
    tiles, summary = client.predict([handle_file(clips["camA"])], api_name="/find_people")
    assert len(tiles) == 1 and "**camA**: 16 frames, 1 person tracked" in summary
    crop = tmp_path / "crop.png"
    person(1, 1, 0).save(crop)
    found, best = client.predict(handle_file(crop), api_name="/search_videos")
    assert len(found) == 1 and best.startswith("Best match: **camA**")


@pytest.mark.slow
@pytest.mark.skipif(not CAMPUS.exists(), reason="needs ../shared/data/mot15")
def test_real_footage_with_the_offline_detector(tmp_path: Path) -> None:
    """TUD-Campus (71 frames, 8 people in the ground truth) with the shipped weights and the offline detector."""
    tab = Videos(Host(app.Settings(app.ROOT / "weights" / "model.safetensors", tmp_path / "store", tmp_path)))
    tiles, summary, labels = tab.find_people([str(CAMPUS)])
    assert "**TUD-Campus**: 71 frames" in summary
    assert 3 <= len(tiles) == len(labels) <= 16
    seen, where = tab.person(labels, click(0))
    assert seen and where.startswith(f"**P{labels[0]}** appears {len(seen)} time(s): TUD-Campus ")


def test_the_videos_tab_has_a_budget_of_its_own():
    from reid_core import ServerLimits

    server = ServerLimits(max_sessions=9, client_sessions=4, memory_mb=100, disk_mb=200, video_sessions=3,
                          video_client_sessions=1, video_memory_mb=10, video_disk_mb=20)
    v = server.for_videos()
    assert (v.max_sessions, v.client_sessions, v.memory_mb, v.disk_mb) == (3, 1, 10, 20)
    assert (v.session_jobs, v.client_jobs, v.session_minutes) == (server.session_jobs, server.client_jobs,
                                                                  server.session_minutes)
