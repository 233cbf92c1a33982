"""The shipped copy of the offline person detector (weights/ssdlite.safetensors, convolutions in fp16) against the
installed package's graph (fp32): the same frames through both `SSDLiteDetector`s (each its own ONNX export).

    python bench/detector_shipped.py [--data ../shared/data/mot15] [--every 1]

Frames: every `--every`-th frame of TUD-Campus and TUD-Stadtmitte (640x480), plus `parity_images` (seeded blobs).
Raw: every anchor's decoded box (units of the image side) and person score on the 300x300 input. Detections (whole
frame, min_score 0.1, the graph's NMS): each side's detections at or above a threshold paired with the other side's
most overlapping detection (any score >= 0.1, so a score that crosses the threshold still pairs); a pair at
IoU >= 0.9 is a twin, and its largest corner difference (pixels) and score difference are reported. A detection
without a twin is one NMS (IoU 0.6) kept on one side and dropped on the other.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")


def read_frames(data: Path, every: int) -> list[np.ndarray]:
    import cv2

    out = []
    for seq in SEQUENCES:
        cap, i = cv2.VideoCapture(str(data / seq / f"{seq}.mp4")), 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                out.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            i += 1
        cap.release()
    return out


def overlaps(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod((rb - lt).clip(0), -1)
    return inter / (np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], -1) - inter)


def twins(a: list[np.ndarray], b: list[np.ndarray], threshold: float) -> tuple[int, int, int, float, float]:
    """(detections of a, of b, without a twin, max corner px, max score diff) over all frames, both directions."""
    counts, lost, px, score = [0, 0], 0, 0.0, 0.0
    for da, db in zip(a, b, strict=True):
        for side, (x, y) in enumerate(((da, db), (db, da))):
            for det in x[x[:, 4] >= threshold]:
                counts[side] += 1
                iou = overlaps(det[:4], y[:, :4]) if len(y) else np.zeros(1)
                if iou.max() < 0.9:
                    lost += 1
                    continue
                twin = y[iou.argmax()]
                px, score = max(px, float(np.abs(twin[:4] - det[:4]).max())), max(score, float(abs(twin[4] - det[4])))
    return counts[0], counts[1], lost, px, score


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mot15")
    p.add_argument("--every", type=int, default=1, help="take every n-th frame (default: all 250)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5])
    args = p.parse_args()
    import cv2

    from reid_core.video import detector as D
    from reid_core.video import ssdlite as S

    frames = read_frames(args.data, args.every)
    with tempfile.TemporaryDirectory() as cache:
        ref = D.SSDLiteDetector(min_score=0.1, cache_dir=cache, graph=S.graph_file())
        ours = D.SSDLiteDetector(min_score=0.1, cache_dir=cache, graph=S.SHIPPED)
        images = np.concatenate([S.parity_images(300).numpy(), *[cv2.resize(f, (300, 300))[None] for f in frames]])
        raw = [[d.session.run(None, {"images": images[i:i + 16]}) for i in range(0, len(images), 16)]
               for d in (ref, ours)]
        (box_r, score_r), (box_o, score_o) = ([np.concatenate(part) for part in zip(*r, strict=True)] for r in raw)
        dets_r, dets_o = [ref(f) for f in frames], [ours(f) for f in frames]
    box, score = np.abs(box_o - box_r), np.abs(score_o - score_r)
    live = np.maximum(score_r, score_o) >= 0.1
    print(f"{len(frames)} MOT15 frames + 4 seeded images; shipped {S.SHIPPED.stat().st_size / 1e6:.2f} MB")
    print(f"raw, all {box.shape[1]} anchors: max box diff {box.max():.2e} (of the side), max score diff "
          f"{score.max():.2e}; anchors scoring >= 0.1 ({live.sum()}): box {box[live].max():.2e}, score "
          f"{score[live].max():.2e}")
    print("| score >= | detections package / shipped | without a twin | max corner diff, twins (px) | max score diff |")
    print("|---|---|---|---|---|")
    for t in args.thresholds:
        n_ref, n_ours, lost, px, sc = twins(dets_r, dets_o, t)
        print(f"| {t} | {n_ref} / {n_ours} | {lost} | {px:.3f} | {sc:.4f} |")


if __name__ == "__main__":
    main()
