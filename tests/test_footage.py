"""Footage end to end on real video (MOT15's TUD-Campus, 71 frames): index, search, people, annotate, CLI."""

import os
from pathlib import Path

import numpy as np
import pytest

from reid_core import ReID
from reid_core.cli import main as cli
from reid_core.video.footage import Footage, FootageConfig
from reid_core.video.frames import VideoError, probe, read_frames

MOT = Path(os.environ.get("REID_MOT15", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mot15"))
CAMPUS = MOT / "TUD-Campus" / "TUD-Campus.mp4"
pytestmark = pytest.mark.skipif(not CAMPUS.exists(), reason="needs ../shared/data/mot15")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    reid = ReID.load(engine="fp32")
    path = tmp_path_factory.mktemp("footage") / "cams.sqlite"
    footage = Footage(reid, path)
    stages: list[str] = []
    reports = footage.index([CAMPUS], ["campus"], lambda stage, done, total: stages.append(stage))
    return footage, reports, stages


@pytest.mark.slow
def test_a_real_video_becomes_tracklets_of_its_people(indexed):
    footage, (report,), stages = indexed
    gt = np.loadtxt(MOT / "TUD-Campus" / "gt" / "gt.txt", delimiter=",")
    people_in_truth = len(set(gt[:, 1]))
    assert report.frames == 71 and report.camera == "campus"
    assert 3 <= report.tracklets <= 2 * people_in_truth  # the 8 people, give or take fragments and misses
    assert report.added == report.tracklets == footage.gallery.tracklet_count()
    assert {"detect and track", "embed"} <= set(stages)
    # every stored tracklet's boxes lie inside the frame, in time order, within the video's span
    for t in footage.gallery.tracklets():
        assert 0 <= t.start_s <= t.end_s <= 71 / 25
    # the same video again adds nothing
    assert footage.index([CAMPUS], ["campus"])[0].added == 0


@pytest.mark.slow
def test_a_tracklets_own_crop_finds_it_first(indexed):
    footage, _, _ = indexed
    first = footage.gallery.tracklets()[0]
    crop = footage.gallery.picture(first.id)
    hits = footage.search(crop, k=3)
    assert hits[0].id == first.id and hits[0].score > hits[-1].score


@pytest.mark.slow
def test_cli_index_search_people_and_annotate(tmp_path, capsys):
    gallery = tmp_path / "g.sqlite"
    index = ["video", "index", str(CAMPUS), "--gallery", str(gallery), "--camera", "campus", "--engine", "fp32"]
    assert cli(index) == 0
    out = capsys.readouterr().out
    assert "camera campus, 71 frames" in out
    frame = next(iter(read_frames(CAMPUS)))
    crop = tmp_path / "crop.png"
    from PIL import Image

    Image.fromarray(frame.rgb[180:410, 400:520]).save(crop)  # the first person of the ground truth, frame 1
    assert cli(["video", "search", str(crop), "--gallery", str(gallery), "--k", "2", "--engine", "fp32",
                "--thumbnails", str(tmp_path / "thumbs")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "campus" in lines[0] and Path(lines[0].split()[-1]).exists()
    out_video = tmp_path / "annotated.mp4"
    assert cli(["video", "people", "--gallery", str(gallery), "--annotate", str(out_video), "--engine", "fp32"]) == 0
    assert "person 0" in capsys.readouterr().out
    info = probe(out_video)
    assert info.frame_count == 71 and (info.width, info.height) == (640, 480)


def test_bad_videos_are_refused_in_one_line_before_any_work(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    footage = Footage(ReID.load(engine="fp32"), tmp_path / "g.sqlite", detector=lambda rgb: np.zeros((0, 5)),
                      cfg=FootageConfig())
    with pytest.raises(VideoError, match="notes.mp4"):
        footage.index([CAMPUS, bad])
    assert footage.gallery.tracklet_count() == 0  # the good one was not indexed either: checked first
