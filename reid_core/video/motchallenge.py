"""MOTChallenge files and scores: ground truth and tracker rows as arrays, MOTA / IDF1 by `motmetrics`.

A MOTChallenge text file has one box a line: frame (from 1), id, left, top, width, height, confidence, then
columns 2-D sequences leave at -1. Scores come from `motmetrics` (the field's evaluator; a development
requirement, imported on use), matched at IoU >= 0.5 as MOTChallenge does; tests/test_motchallenge.py checks
this wrapper against the library's own published results on its bundled TUD files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("frame", "id", "left", "top", "width", "height", "conf")


def read_mot(path: str | Path, min_conf: float | None = None) -> np.ndarray:
    """(N, 7) float rows of a MOTChallenge file (frame, id, left, top, width, height, conf); with `min_conf`,
    only rows whose conf reaches it (ground truth: 1 = counted, 0 = ignored)."""
    rows = _rows(np.loadtxt(path, delimiter=",", ndmin=2, usecols=range(7)) if Path(path).stat().st_size else [])
    return rows if min_conf is None else rows[rows[:, 6] >= min_conf]


def write_mot(path: str | Path, rows: np.ndarray) -> None:
    """Tracker rows (frame, id, left, top, width, height[, conf]) as a MOTChallenge result file."""
    with open(path, "w") as f:
        for r in _rows(rows):
            conf = r[6] if len(r) > 6 else 1.0
            f.write(f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{conf:.4g},-1,-1,-1\n")


def detections_by_frame(rows: np.ndarray, frames: int) -> list[np.ndarray]:
    """Per frame 1..frames, the (N, 5) x1, y1, x2, y2, score detections a tracker takes, from MOT rows (their
    conf column as the score; ground truth's 1 makes every box a confident one)."""
    out = []
    for frame in range(1, frames + 1):
        r = rows[rows[:, 0] == frame]
        out.append(np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5], r[:, 6]]))
    return out


def track_rows(frame: int, tracks: np.ndarray) -> np.ndarray:
    """One frame's ByteTracker.update output (x1, y1, x2, y2, track_id, det_index) as MOT rows, ids from 1."""
    t = np.asarray(tracks, dtype=np.float64).reshape(-1, 6)
    return np.column_stack([np.full(len(t), frame), t[:, 4] + 1, t[:, 0], t[:, 1], t[:, 2] - t[:, 0],
                            t[:, 3] - t[:, 1], np.ones(len(t))])


@dataclass(frozen=True)
class MOTScores:
    """motmetrics' MOTChallenge summary for one sequence (ratios in 0..1, counts as integers)."""

    mota: float
    idf1: float
    motp: float  # mean 1 - IoU of the matches (lower is tighter)
    precision: float
    recall: float
    idp: float
    idr: float
    id_switches: int
    false_positives: int
    misses: int
    fragmentations: int
    gt_ids: int
    mostly_tracked: int
    partially_tracked: int
    mostly_lost: int


_NAMES = {"mota": "mota", "idf1": "idf1", "motp": "motp", "precision": "precision", "recall": "recall",
          "idp": "idp", "idr": "idr", "id_switches": "num_switches", "false_positives": "num_false_positives",
          "misses": "num_misses", "fragmentations": "num_fragmentations", "gt_ids": "num_unique_objects",
          "mostly_tracked": "mostly_tracked", "partially_tracked": "partially_tracked", "mostly_lost": "mostly_lost"}


def _rows(a: np.ndarray) -> np.ndarray:
    """MOT rows as a 2-D float array, also when there are none."""
    arr = np.asarray(a, dtype=np.float64)
    return arr if arr.size else np.zeros((0, 7))


def _accumulate(gt: np.ndarray, hyp: np.ndarray, iou: float):
    """motmetrics' `utils.compare_to_groundtruth(gt, hyp, "iou", distth=1 - iou)`, frame by frame, with its own
    `distances.boxiou`: its `iou_matrix` calls `np.asfarray`, gone in NumPy 2 (motmetrics 1.4.0 is the latest)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator()
    frames = np.union1d(gt[:, 0], hyp[:, 0]).astype(int)
    for fid in frames:
        g, h = gt[gt[:, 0] == fid], hyp[hyp[:, 0] == fid]
        dists = np.empty((0, 0))
        if len(g) and len(h):
            dists = 1 - mm.distances.boxiou(g[:, None, 2:6], h[None, :, 2:6])
            dists = np.where(dists > 1 - iou, np.nan, dists)
        acc.update(g[:, 1].astype(int), h[:, 1].astype(int), dists, frameid=int(fid))
    return acc


def mot_scores(gt: np.ndarray, hyp: np.ndarray, iou: float = 0.5) -> MOTScores:
    """MOTA, IDF1 and the rest for one sequence: ground-truth rows against tracker rows (MOT columns), boxes
    matched when their IoU reaches `iou`."""
    try:
        import motmetrics as mm
    except ImportError:
        raise ImportError("MOT scores need motmetrics: pip install motmetrics (requirements-dev.txt)") from None
    acc = _accumulate(_rows(gt), _rows(hyp), iou)
    summary = mm.metrics.create().compute(acc, metrics=list(_NAMES.values()), return_dataframe=False)
    return MOTScores(**{ours: (int(summary[theirs]) if MOTScores.__annotations__[ours] == "int"
                               else float(summary[theirs])) for ours, theirs in _NAMES.items()})
