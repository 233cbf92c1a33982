"""ByteTracker against the reference library's recorded output (Roboflow trackers 2.6.1 ByteTrack, run by
scripts/bytetrack_reference.py on the same noisy MOT15-ground-truth detections), and on cases built by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from reid_core.video.tracker import ByteTrackConfig, ByteTracker, box_iou

DATA = Path(__file__).parent / "data" / "bytetrack"
SETTINGS = {"default": ByteTrackConfig(),  # scripts/bytetrack_reference.py's SETTINGS, in our names
            "tuned": ByteTrackConfig(lost_track_buffer=10, frame_rate=25.0, track_activation_threshold=0.5,
                                     minimum_consecutive_frames=1, minimum_iou_threshold=0.3,
                                     high_conf_det_threshold=0.5)}


def table(path: Path) -> np.ndarray:
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def run(dets: np.ndarray, config: ByteTrackConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Our tracker over a dets table (frame, x1, y1, x2, y2, score): per frame, update's rows and confirmed()."""
    tracker, outs, kept = ByteTracker(config), [], []
    for frame in range(1, int(dets[:, 0].max()) + 1):
        outs.append(tracker.update(dets[dets[:, 0] == frame, 1:]))
        kept.append(tracker.confirmed())
    return outs, kept


@pytest.mark.parametrize("seq", ["TUD-Campus", "TUD-Stadtmitte"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_same_ids_and_kalman_boxes_as_the_reference_library(seq: str, setting: str) -> None:
    dets = table(DATA / f"{seq}_dets.csv")
    ref = table(DATA / f"{seq}_{setting}.csv").astype(np.int64)
    ref_kept = table(DATA / f"{seq}_{setting}_tracks.csv")
    outs, kept = run(dets, SETTINGS[setting])
    assert len(ref) > 200 and len(np.unique(ref[:, 2])) >= 8  # the reference did track people
    for frame, out in enumerate(outs, start=1):
        here = dets[dets[:, 0] == frame, 1:5]
        want = {(int(r), int(t)) for _, r, t in ref[ref[:, 0] == frame]}
        assert {(int(r), int(t)) for r, t in out[:, 5:3:-1]} == want, frame  # (det row, id): the same ids
        np.testing.assert_array_equal(out[:, :4], here[out[:, 5].astype(int)])  # a detection's own box
        assert list(out[:, 4]) == sorted(out[:, 4])
        theirs = ref_kept[ref_kept[:, 0] == frame]
        mine = kept[frame - 1]
        assert sorted(mine[:, 4]) == sorted(theirs[:, 1]), frame  # the same tracks kept, lost ones too
        order_mine, order_theirs = np.argsort(mine[:, 4]), np.argsort(theirs[:, 1])
        np.testing.assert_allclose(mine[order_mine, :4], theirs[order_theirs, 2:], atol=2e-3)  # Kalman boxes


def test_reference_exercises_both_stages_and_lost_tracks() -> None:
    """The recorded case is not trivial: low-score boxes carry tracks, and kept-but-lost tracks exist."""
    dets = table(DATA / "TUD-Stadtmitte_dets.csv")
    ref = table(DATA / "TUD-Stadtmitte_default.csv").astype(np.int64)
    scores = np.array([dets[dets[:, 0] == f][r, 5] for f, r, _ in ref])
    assert (scores < 0.6).sum() > 50  # matched in the second stage
    kept = table(DATA / "TUD-Stadtmitte_default_tracks.csv")
    assert len(kept) > len(ref) + 50  # confirmed tracks coasting through frames where they were missed


def walker(t: int, x0: float, vx: float, y: float = 100.0) -> list[float]:
    return [x0 + vx * t, y, x0 + vx * t + 40, y + 100]


def test_two_walkers_keep_their_ids_through_a_gap_and_low_scores() -> None:
    tracker = ByteTracker(ByteTrackConfig(frame_rate=25.0))
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for t in range(40):
        dets, who = [walker(t, 0, 5) + [0.9], walker(t, 400, -3) + [0.9]], [0, 1]
        if 10 <= t < 15:
            dets, who = dets[1:], who[1:]  # walker 0 missed for five frames
        if 20 <= t < 25:
            dets[0][4] = 0.3  # a weak box: only the second stage may match it
        out = tracker.update(np.array(dets))
        for row in out:
            seen[who[int(row[5])]].add(int(row[4]))
        assert len(out) == (0 if t == 0 else len(dets))
    assert seen == {0: {0}, 1: {1}}


def test_a_track_needs_two_frames_then_an_id_and_a_lost_one_ends() -> None:
    tracker = ByteTracker(ByteTrackConfig(lost_track_buffer=3, frame_rate=30.0))
    box = np.array([[10, 10, 50, 110, 0.9]])
    assert len(tracker.update(box)) == 0  # seen once: no id yet
    out = tracker.update(box)
    assert out.tolist() == [[10, 10, 50, 110, 0, 0]]
    for _ in range(3):
        assert len(tracker.update(np.zeros((0, 5)))) == 0
        assert len(tracker) == 1 and len(tracker.confirmed()) == 1  # kept while lost
    tracker.update(np.zeros((0, 5)))
    assert len(tracker) == 0  # over the buffer: gone, and a box there now starts a new track
    tracker.update(box)
    assert tracker.update(box)[:, 4].tolist() == [1]


def test_low_score_boxes_never_start_a_track_and_include_lost_reports_predictions() -> None:
    tracker = ByteTracker(include_lost=True)
    for _ in range(5):
        assert len(tracker.update(np.array([[0, 0, 10, 20, 0.5]]))) == 0
    moving = [np.array([[10.0 * t, 0, 10.0 * t + 40, 100, 0.95]]) for t in range(4)]
    for d in moving:
        tracker.update(d)
    out = tracker.update(np.zeros((0, 5)))
    assert out[:, 4:].tolist() == [[0, -1]]
    assert out[0, 0] > 30  # predicted ahead by the velocity it learnt, not left at the last box


def test_bad_detections_and_settings_are_one_line_errors() -> None:
    tracker = ByteTracker()
    for bad, words in [(np.zeros((2, 4)), "(N, 5)"), (np.array([[0, 0, np.nan, 1, 1]]), "NaN"),
                       (np.array([[5, 0, 1, 1, 1.0]]), "inverted")]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            tracker.update(bad)
    for kwargs in [{"frame_rate": 0}, {"lost_track_buffer": -1}, {"minimum_iou_threshold": 2.0},
                   {"minimum_consecutive_frames": 0}]:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            ByteTrackConfig(**kwargs)
    assert ByteTrackConfig(frame_rate=25.0).max_frames_lost == 25
    assert ByteTrackConfig(lost_track_buffer=0).max_frames_lost == 0


def test_box_iou_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [[25 / 175, 1, 0], [0, 0, 0]], rtol=1e-6)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)
