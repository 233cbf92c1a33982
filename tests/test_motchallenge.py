"""The MOTChallenge wrapper reproduces motmetrics' published results on the files it ships, and round-trips rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reid_core.video.motchallenge import MOTScores, detections_by_frame, mot_scores, read_mot, track_rows, write_mot
from reid_core.video.tracker import ByteTrackConfig, ByteTracker

mm = pytest.importorskip("motmetrics")
BUNDLED = Path(mm.__file__).parent / "data"
MOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mot15"

# motmetrics 1.4.0, tests/test_metrics.py::test_motchallenge_files: its expected summary for the fixed tracker
# output it ships (data/<seq>/test.txt), columns idf1, idp, idr, recall, precision, GT, MT, PT, ML, FP, FN, IDs,
# FM, MOTA, MOTP
PUBLISHED = {
    "TUD-Campus": [0.557659, 0.729730, 0.451253, 0.582173, 0.941441, 8, 1, 6, 1, 13, 150, 7, 7, 0.526462, 0.277201],
    "TUD-Stadtmitte": [0.644619, 0.819760, 0.531142, 0.608997, 0.939920, 10, 5, 4, 1, 45, 452, 7, 6, 0.564014,
                       0.345904],
}
ORDER = ["idf1", "idp", "idr", "recall", "precision", "gt_ids", "mostly_tracked", "partially_tracked",
         "mostly_lost", "false_positives", "misses", "id_switches", "fragmentations", "mota", "motp"]


@pytest.mark.parametrize("seq", sorted(PUBLISHED))
def test_reproduces_motmetrics_published_tud_results(seq: str) -> None:
    scores = mot_scores(read_mot(BUNDLED / seq / "gt.txt"), read_mot(BUNDLED / seq / "test.txt"))
    np.testing.assert_allclose([getattr(scores, k) for k in ORDER], PUBLISHED[seq], atol=1e-5)


def test_perfect_and_empty_tracks_score_as_they_should(tmp_path: Path) -> None:
    gt = read_mot(BUNDLED / "TUD-Campus" / "gt.txt")
    perfect = mot_scores(gt, gt)
    assert (perfect.mota, perfect.idf1, perfect.id_switches, perfect.misses) == (1.0, 1.0, 0, 0)
    swapped = gt.copy()
    late = swapped[:, 0] > 35
    swapped[late, 1] = swapped[late, 1] + 100  # every person gets a new id half way: switches, IDF1 falls
    s = mot_scores(gt, swapped)
    assert s.mota < 1 and s.id_switches == len(np.unique(gt[(gt[:, 0] == 35) & np.isin(gt[:, 1], gt[late, 1]), 1]))
    assert 0.4 < s.idf1 < 0.8
    nothing = mot_scores(gt, np.zeros((0, 7)))
    assert nothing.recall == 0 and nothing.misses == len(gt)
    write_mot(tmp_path / "out.txt", gt[:, :6])
    back = read_mot(tmp_path / "out.txt")
    np.testing.assert_allclose(back[:, :6], gt[:, :6], atol=0.01)
    assert isinstance(s, MOTScores)


def test_rows_convert_between_tracker_and_mot() -> None:
    rows = np.array([[1, 5, 10, 20, 30, 60, 1.0], [2, 5, 12, 20, 30, 60, 0.4]])
    dets = detections_by_frame(rows, 3)
    np.testing.assert_array_equal(dets[0], [[10, 20, 40, 80, 1.0]])
    assert dets[1][0, 4] == 0.4 and dets[2].shape == (0, 5)
    back = track_rows(7, np.array([[10, 20, 40, 80, 0, 3]]))
    np.testing.assert_array_equal(back, [[7, 1, 10, 20, 30, 60, 1]])


@pytest.mark.skipif(not MOT.is_dir(), reason="needs ../shared/data/mot15")
def test_ground_truth_boxes_through_our_tracker_score_near_perfect() -> None:
    """The tracker alone (boxes given): only each track's first frame (no id yet) is missed."""
    for seq, fps in [("TUD-Campus", 25.0), ("TUD-Stadtmitte", 25.0)]:
        gt = read_mot(MOT / seq / "gt" / "gt.txt", min_conf=1)
        tracker = ByteTracker(ByteTrackConfig(frame_rate=fps))
        frames = detections_by_frame(gt, int(gt[:, 0].max()))
        hyp = np.concatenate([track_rows(f, tracker.update(d)) for f, d in enumerate(frames, start=1)])
        s = mot_scores(gt, hyp)
        assert s.mota > 0.95 and s.idf1 > 0.95 and s.false_positives == 0, (seq, s)
