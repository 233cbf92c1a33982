"""The offline person detector against MOTChallenge ground truth: precision and recall at IoU 0.5, whole frame vs
2x2 tiles + whole frame, and frames per second (ONNX Runtime, `--threads` intra-op threads).

    python bench/detector.py [--data ../shared/data/mot15] [--threads 2] [--scales 1 0.4]

Every frame of TUD-Campus (71) and TUD-Stadtmitte (179), 640x480. `--scales 0.4` also shrinks each frame by 0.4
onto a grey 640x480 canvas (ground truth shrunk alike), so the same people stand 50-125 px tall instead of
120-310: the small people a wider camera sees. A detection matches a ground-truth box at IoU >= 0.5, one to one
(Hungarian on IoU per frame); recall = matched / ground truth, precision = matched / detections, at each
`--min-scores` threshold of one run. Speed: the median wall time of one detector call (resize, ONNX Runtime, NMS),
and its median CPU time (all threads; this process's), which a busy machine inflates far less than the wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")


def read(seq_dir: Path, scale: float) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """RGB frames, scaled onto a same-size canvas, and ground truth x1, y1, x2, y2 per frame index (from 0)."""
    import cv2

    cap, frames = cv2.VideoCapture(str(seq_dir / f"{seq_dir.name}.mp4")), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        if scale != 1:
            h, w = rgb.shape[:2]
            small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            rgb = np.full_like(rgb, 114)
            y0, x0 = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
            rgb[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        frames.append(rgb)
    cap.release()
    gt = np.loadtxt(seq_dir / "gt" / "gt.txt", delimiter=",", ndmin=2)
    h, w = frames[0].shape[:2]
    boxes: dict[int, np.ndarray] = {}
    for f in np.unique(gt[:, 0]).astype(int):
        g = gt[(gt[:, 0] == f) & (gt[:, 6] != 0)]
        b = np.stack([g[:, 2], g[:, 3], g[:, 2] + g[:, 4], g[:, 3] + g[:, 5]], 1)
        if scale != 1:
            b = b * scale + np.array([(w - round(w * scale)) // 2, (h - round(h * scale)) // 2] * 2)
        boxes[f - 1] = b
    return frames, boxes


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), -1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def matched(dets: np.ndarray, gt: np.ndarray, thr: float = 0.5) -> int:
    """One-to-one matches at IoU >= thr (Hungarian on IoU)."""
    from scipy.optimize import linear_sum_assignment

    if len(dets) == 0 or len(gt) == 0:
        return 0
    m = iou(dets[:, :4], gt)
    r, c = linear_sum_assignment(-np.where(m >= thr, m, 0))
    return int((m[r, c] >= thr).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mot15"), help="MOT15 folder")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.4], help="frame scales onto the canvas")
    p.add_argument("--min-scores", type=float, nargs="+", default=[0.3, 0.5], help="score thresholds reported")
    p.add_argument("--cache-dir", default="", help="ONNX export cache (default: a temporary folder)")
    args = p.parse_args()

    from reid_core.video.detector import SSDLiteDetector

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        detectors = {"whole frame": SSDLiteDetector(tiles=0, min_score=min(args.min_scores), cache_dir=cache,
                                                    threads=args.threads),
                     "2x2 tiles + whole": SSDLiteDetector(tiles=2, min_score=min(args.min_scores), cache_dir=cache,
                                                          threads=args.threads)}
        print("| people tall (px) | detector | score >= | TUD-Campus recall / precision | TUD-Stadtmitte recall / "
              "precision | both | wall ms / frame | frames/s | CPU ms / frame |")
        print("|---|---|---|---|---|---|---|---|---|")
        for scale in args.scales:
            data = [read(Path(args.data) / s, scale) for s in SEQUENCES]
            heights = np.concatenate([b[:, 3] - b[:, 1] for _, gt in data for b in gt.values()])
            for name, det in detectors.items():
                det(data[0][0][0])  # warm up
                times, cpu, runs = [], [], []
                for frames, gt in data:
                    runs.append([])
                    for i, rgb in enumerate(frames):
                        t0, c0 = time.perf_counter(), time.process_time()
                        d = det(rgb)
                        times.append(time.perf_counter() - t0)
                        cpu.append(time.process_time() - c0)
                        runs[-1].append((d, gt.get(i, np.zeros((0, 4)))))
                ms = 1000 * float(np.median(times))
                for s in args.min_scores:
                    cells = [recall_precision(r, s) for r in (*runs, [x for r in runs for x in r])]
                    print(f"| {np.percentile(heights, 5):.0f}-{np.percentile(heights, 95):.0f} (scale {scale:g}) | "
                          f"{name} | {s:g} | " + " | ".join(f"{r:.3f} / {p:.3f}" for r, p in cells) +
                          f" | {ms:.1f} | {1000 / ms:.0f} | {1000 * float(np.median(cpu)):.1f} |")


def recall_precision(runs: list[tuple[np.ndarray, np.ndarray]], min_score: float) -> tuple[float, float]:
    hits = sum(matched(d[d[:, 4] >= min_score], g) for d, g in runs)
    n_gt, n_det = sum(len(g) for _, g in runs), sum(int((d[:, 4] >= min_score).sum()) for d, _ in runs)
    return hits / max(n_gt, 1), hits / max(n_det, 1)


if __name__ == "__main__":
    main()
