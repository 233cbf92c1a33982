"""Record Roboflow `trackers`' ByteTrack on fixed detections, the reference tests/test_tracker.py holds ours to.

Run with a separate venv that has the library (it pulls GUI OpenCV, so never the project's venv):

    python3 -m venv /work/venvs/trackers-ref && /work/venvs/trackers-ref/bin/pip install trackers==2.6.1
    /work/venvs/trackers-ref/bin/python scripts/bytetrack_reference.py --mot ../shared/data/mot15 \
        --out tests/data/bytetrack

Detections: each MOT15 sequence's ground-truth boxes, made detector-like with a fixed seed: ~12 % dropped,
corners jittered (sigma 3 px), scores spread over 0.05-1 (so both matching stages and the activation threshold
all act), ~0.6 false boxes a frame at low to middling scores, rows shuffled within a frame. Written as
`<seq>_dets.csv` (frame, x1, y1, x2, y2, score; numbers only, no images). For each setting in SETTINGS,
`<seq>_<setting>.csv` holds, per frame, what `update` returned with an id (frame, det_row, track_id) and
`<seq>_<setting>_tracks.csv` the library's `tracked_objects` after the frame (frame, track_id, x1, y1, x2, y2:
every confirmed track kept, at its Kalman box).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")
SETTINGS = {  # name -> ByteTrackTracker keyword arguments (the library's own names)
    "default": {},
    "tuned": {"lost_track_buffer": 10, "frame_rate": 25.0, "track_activation_threshold": 0.5,
              "minimum_consecutive_frames": 1, "minimum_iou_threshold": 0.3, "high_conf_det_threshold": 0.5},
}


def noisy_detections(gt_path: Path, seed: int) -> list[tuple[int, float, float, float, float, float]]:
    """Detector-like boxes from MOTChallenge ground truth (frame, left, top, width, height columns)."""
    rng = np.random.default_rng(seed)
    gt = np.loadtxt(gt_path, delimiter=",", ndmin=2)
    gt = gt[gt[:, 6] == 1]
    rows = []
    for frame in range(1, int(gt[:, 0].max()) + 1):
        boxes = gt[gt[:, 0] == frame, 2:6]
        out = []
        for left, top, w, h in boxes:
            if rng.random() < 0.12:
                continue
            x1, y1, x2, y2 = np.array([left, top, left + w, top + h]) + rng.normal(0, 3, 4)
            out.append((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1), rng.uniform(0.05, 1.0)))
        for _ in range(rng.poisson(0.6)):
            w, h = boxes[rng.integers(len(boxes)), 2:4] if len(boxes) else (60.0, 150.0)
            x1, y1 = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            out.append((x1, y1, x1 + w, y1 + h, rng.uniform(0.05, 0.75)))
        for i in rng.permutation(len(out)):
            rows.append((frame, *(round(float(v), 2) for v in out[i])))
    return rows


def main() -> None:
    import supervision as sv
    from trackers import ByteTrackTracker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mot", type=Path, required=True, help="folder holding the MOT15 sequences")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed, seq in enumerate(SEQUENCES):
        dets = noisy_detections(args.mot / seq / "gt" / "gt.txt", seed)
        with open(args.out / f"{seq}_dets.csv", "w", newline="") as f:
            csv.writer(f).writerows([("frame", "x1", "y1", "x2", "y2", "score"), *dets])
        arr = np.array(dets, dtype=np.float64)
        for name, kwargs in SETTINGS.items():
            tracker, ms = ByteTrackTracker(**kwargs), []
            matched, kept = [("frame", "det_row", "track_id")], [("frame", "track_id", "x1", "y1", "x2", "y2")]
            for frame in range(1, int(arr[:, 0].max()) + 1):
                here = arr[arr[:, 0] == frame]
                d = sv.Detections(xyxy=here[:, 1:5], confidence=here[:, 5],  # float64, as ours reads the CSV
                                  data={"row": np.arange(len(here))})
                t0 = time.perf_counter()
                res = tracker.update(d)
                ms.append((time.perf_counter() - t0) * 1000)
                for row, tid in zip(res.data["row"] if len(res) else [], res.tracker_id, strict=True):
                    if tid != -1:
                        matched.append((frame, int(row), int(tid)))
                objs = tracker.tracked_objects
                for box, tid in zip(objs.xyxy, objs.tracker_id, strict=True):
                    kept.append((frame, int(tid), *(f"{v:.4f}" for v in box)))
            for suffix, table in (("", matched), ("_tracks", kept)):
                with open(args.out / f"{seq}_{name}{suffix}.csv", "w", newline="") as f:
                    csv.writer(f).writerows(table)
            print(seq, name, len(matched) - 1, "tracked boxes,", len({r[2] for r in matched[1:]}), "ids,",
                  f"update median {np.median(ms):.3f} ms")


if __name__ == "__main__":
    main()
