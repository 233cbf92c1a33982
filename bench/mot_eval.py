"""MOTA and IDF1 (motmetrics) of our ByteTrack on MOT15's TUD-Campus and TUD-Stadtmitte (issue #28):

  gt        the ground-truth boxes as detections (score 1): the tracker alone, no detector error;
  gt+noise  the recorded detector-like boxes of tests/data/bytetrack (ground truth with ~12 % dropped, 3 px
            jitter, scores 0.05-1, ~0.6 false boxes a frame), the input tests/test_tracker.py compares with the
            reference library on;
  detector  with --detector: the video decoded (reid_core.video.frames) and each frame's people found by
            reid_core.video.detector.load_detector (skipped, with a line, where that module is not there).

    .venv/bin/python bench/mot_eval.py --mot ../shared/data/mot15
    .venv/bin/python bench/mot_eval.py --mot ../shared/data/mot15 --detector
    .venv/bin/python bench/mot_eval.py --check-motmetrics

--check-motmetrics scores the fixed tracker output motmetrics ships (motmetrics/data/TUD-*/test.txt) through our
wrapper, to set beside the results the library's own test expects.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from reid_core.video.motchallenge import MOTScores, detections_by_frame, mot_scores, read_mot, track_rows, write_mot  # noqa: E402
from reid_core.video.tracker import ByteTrackConfig, ByteTracker  # noqa: E402

SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")
NOISY = ROOT / "tests" / "data" / "bytetrack"


def track(per_frame: list[np.ndarray], config: ByteTrackConfig) -> tuple[np.ndarray, float]:
    """MOT rows of the tracker over per-frame detections, and its median milliseconds a frame."""
    tracker, rows, ms = ByteTracker(config), [], []
    for frame, dets in enumerate(per_frame, start=1):
        t0 = time.perf_counter()
        out = tracker.update(dets)
        ms.append((time.perf_counter() - t0) * 1000)
        rows.append(track_rows(frame, out))
    return np.concatenate(rows), float(np.median(ms))


def detect(video: Path, spec: str | None) -> tuple[list[np.ndarray], dict]:
    """Per-frame detections of the video by the detector, with decode and detect milliseconds a frame."""
    from reid_core.video.detector import load_detector
    from reid_core.video.frames import read_frames

    detector = load_detector(spec)
    out, decode_ms, detect_ms = [], [], []
    t0 = time.perf_counter()
    for frame in read_frames(video):
        t1 = time.perf_counter()
        decode_ms.append((t1 - t0) * 1000)
        out.append(np.asarray(detector(frame.rgb), dtype=np.float64).reshape(-1, 5))
        t0 = time.perf_counter()
        detect_ms.append((t0 - t1) * 1000)
    return out, {"decode_ms": round(float(np.median(decode_ms)), 2),
                 "detect_ms": round(float(np.median(detect_ms)), 1)}


def decode_speed(video: Path) -> dict:
    """Median milliseconds to decode one frame to RGB (reid_core.video.frames: OpenCV's FFmpeg)."""
    from reid_core.video.frames import probe, read_frames

    info, ms = probe(video), []
    t0 = time.perf_counter()
    for _ in read_frames(video):
        t1 = time.perf_counter()
        ms.append((t1 - t0) * 1000)
        t0 = t1
    return {"video": video.name, "size": f"{info.width}x{info.height}", "frames": len(ms),
            "decode_ms": round(float(np.median(ms)), 2), "decode_fps": round(1000 / float(np.median(ms)))}


def row(seq: str, mode: str, s: MOTScores, extra: dict) -> dict:
    keep = ("mota", "idf1", "precision", "recall", "id_switches", "false_positives", "misses", "gt_ids",
            "mostly_tracked", "mostly_lost")
    return {"sequence": seq, "input": mode, **{k: round(v, 4) if isinstance(v, float) else v
                                                for k, v in asdict(s).items() if k in keep}, **extra}


def check_motmetrics() -> list[dict]:
    import motmetrics as mm

    data, out = Path(mm.__file__).parent / "data", []
    for seq in SEQUENCES:
        s = mot_scores(read_mot(data / seq / "gt.txt"), read_mot(data / seq / "test.txt"))
        out.append(row(seq, "motmetrics test.txt", s, {k: round(getattr(s, k), 6) for k in ("idp", "idr", "motp")}
                       | {"fragmentations": s.fragmentations, "partially_tracked": s.partially_tracked}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mot", type=Path, default=ROOT.parent / "shared" / "data" / "mot15",
                    help="folder holding the MOT15 sequences (each with gt/gt.txt and <name>.mp4)")
    ap.add_argument("--detector", nargs="?", const="", default=None, metavar="SPEC",
                    help="also track the detector's boxes: alone, the offline default; or a spec/ONNX file for "
                         "reid_core.video.detector.load_detector")
    ap.add_argument("--out", type=Path, default=None, help="write each run's tracks as MOTChallenge files here")
    ap.add_argument("--check-motmetrics", action="store_true",
                    help="only score motmetrics' bundled TUD tracker output through our wrapper")
    for f in fields(ByteTrackConfig):
        if f.name != "frame_rate":  # the video's own
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                            help=f"{f.metadata['help']} (default {f.default})")
    args = ap.parse_args()
    if args.check_motmetrics:
        print(json.dumps(check_motmetrics(), indent=1))
        return
    if args.detector is not None and importlib.util.find_spec("reid_core.video.detector") is None:
        print("detector: skipped (reid_core.video.detector is not in this checkout yet)", file=sys.stderr)
        args.detector = None
    results, decoding = [], []
    for seq in SEQUENCES:
        decoding.append(decode_speed(args.mot / seq / f"{seq}.mp4"))
        gt = read_mot(args.mot / seq / "gt" / "gt.txt", min_conf=1)
        n = int(gt[:, 0].max())
        fps = float(next(line.split("=")[1] for line in (args.mot / seq / "seqinfo.ini").read_text().splitlines()
                         if line.startswith("frameRate")))
        config = ByteTrackConfig(frame_rate=fps, **{f.name: getattr(args, f.name) for f in fields(ByteTrackConfig)
                                                   if f.name != "frame_rate"})
        inputs = {"gt": (detections_by_frame(gt, n), {}), "gt+noise": (detections_by_frame(_noisy(seq), n), {})}
        if args.detector is not None:
            inputs["detector"] = detect(args.mot / seq / f"{seq}.mp4", args.detector or None)
        for mode, (per_frame, extra) in inputs.items():
            hyp, ms = track(per_frame, config)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                write_mot(args.out / f"{seq}_{mode.replace('+', '_')}.txt", hyp)
            results.append(row(seq, mode, mot_scores(gt, hyp), {"track_ms": round(ms, 3), **extra}))
    print(json.dumps({"tracking": results, "decoding": decoding}, indent=1))


def _noisy(seq: str) -> np.ndarray:
    """The recorded noisy detections (frame, x1, y1, x2, y2, score) as MOT rows (frame, -1, left, top, w, h,
    score)."""
    d = np.loadtxt(NOISY / f"{seq}_dets.csv", delimiter=",", skiprows=1, ndmin=2)
    return np.column_stack([d[:, 0], np.full(len(d), -1), d[:, 1], d[:, 2], d[:, 3] - d[:, 1], d[:, 4] - d[:, 2],
                            d[:, 5]])


if __name__ == "__main__":
    main()
