"""Footage end to end on real video (BENCHMARKS §25): frames/s per stage and in all, and what joining fragments
does to the tracks' identities (MOTA / IDF1 by motmetrics against MOTChallenge ground truth).

    python bench/footage.py --mot ../shared/data/mot15 [--detector FILE] [--detect-every N] [--no-flip]

Each sequence is indexed as `video index` does it (decode -> detect -> track -> crops -> embed -> join), timed by
stage; the tracklets' boxes, before and after joining, are scored as a tracker's output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_core import ReID  # noqa: E402
from reid_core.video.detector import load_detector  # noqa: E402
from reid_core.video.footage import FootageConfig, track_video  # noqa: E402
from reid_core.video.motchallenge import mot_scores, read_mot  # noqa: E402
from reid_core.video.tracklets import Tracklet, embed_tracklets, join_fragments  # noqa: E402

SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")


def rows(tracklets: list[Tracklet]) -> np.ndarray:
    """Tracklets as MOTChallenge rows (frame from 1, id, left, top, width, height, conf)."""
    out = [[b[0] + 1, k + 1, b[1], b[2], b[3] - b[1], b[4] - b[2], 1.0]
           for k, t in enumerate(tracklets) for b in t.boxes]
    return np.array(out, np.float64).reshape(-1, 7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mot", required=True)
    ap.add_argument("--detector")
    ap.add_argument("--detect-every", type=int, default=1)
    ap.add_argument("--no-flip", dest="flip", action="store_false")
    args = ap.parse_args()
    reid = ReID.load(flip=args.flip)
    detector = load_detector(args.detector)
    cfg = FootageConfig(detect_every=args.detect_every)
    print(f"engine {reid.engine}; flip {'on' if args.flip else 'off'}; detect every {cfg.detect_every} frame(s)")
    print("| sequence | frames | decode | detect | track | crops | embed + join | end to end (frames/s) | tracks -> "
          "tracklets -> joined | MOTA / IDF1 tracklets | MOTA / IDF1 joined |")
    print("|---" * 11 + "|")
    for seq in SEQUENCES:
        video = Path(args.mot) / seq / f"{seq}.mp4"
        t0 = time.perf_counter()
        tracklets, frames, tracks, spent = track_video(video, seq, detector, cfg)
        t1 = time.perf_counter()
        embed_tracklets(tracklets, reid.embed)
        joined = join_fragments(tracklets, cfg.join_threshold, cfg.crops)
        t2 = time.perf_counter()
        gt = read_mot(Path(args.mot) / seq / "gt" / "gt.txt", min_conf=1)
        before, after = mot_scores(gt, rows(tracklets)), mot_scores(gt, rows(joined))
        fps = {k: frames / v if v else float("inf") for k, v in spent.items()}
        print(f"| {seq} | {frames} | {fps['decode']:.0f} | {fps['detect']:.0f} | {fps['track']:.0f} | "
              f"{fps['crops']:.0f} | {t2 - t1:.1f} s | **{frames / (t2 - t0):.1f}** | {tracks} -> {len(tracklets)} -> "
              f"{len(joined)} | {before.mota:.3f} / {before.idf1:.3f} | {after.mota:.3f} / {after.idf1:.3f} |")


if __name__ == "__main__":
    main()
