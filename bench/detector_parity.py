"""Parity of the offline person detector with TensorFlow: the same frozen graph run by TensorFlow, by our torch
rebuild (reid_core/video/ssdlite.py) and by its ONNX export, on real frames.

    python bench/detector_parity.py --tf-python /work/venvs/tf/bin/python --frames 8 \\
        [--write-reference tests/data/ssdlite_reference.json]

TensorFlow is not a dependency: it runs in a venv of its own (`python3 -m venv /work/venvs/tf &&
/work/venvs/tf/bin/pip install tensorflow-cpu`), which this script calls on itself (`--reference`). Frames are
taken evenly from TUD-Campus and TUD-Stadtmitte (../shared/data/mot15), resized to 300x300 here with OpenCV, and
the same uint8 pixels go to all three, so the figures compare the network, not two resizers. Compared: the raw
outputs for all 1917 anchors (decoded boxes, person scores) and the final detections (TensorFlow's NMS, clipping
and top 100 against `ssdlite_detections`, the same post-processing in numpy). `--write-reference` keeps
TensorFlow's detections (numbers only, never pixels) for tests/test_detector.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")


def frames(data: Path, per_sequence: int) -> tuple[np.ndarray, list[str]]:
    """(n, 300, 300, 3) uint8 RGB frames, evenly spaced in each sequence, and their names."""
    import cv2

    images, names = [], []
    for seq in SEQUENCES:
        cap = cv2.VideoCapture(str(data / seq / f"{seq}.mp4"))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, total - 1, per_sequence).round().astype(int).tolist())
        for i in range(total):
            ok, bgr = cap.read()
            if not ok:
                break
            if i in wanted:
                images.append(cv2.resize(bgr, (300, 300), interpolation=cv2.INTER_AREA)[:, :, ::-1])
                names.append(f"{seq}#{i + 1}")  # MOTChallenge frames count from 1
        cap.release()
    return np.ascontiguousarray(np.stack(images)), names


def tensorflow_run(images: Path, out: Path, graph_file: Path) -> None:
    """Under the TensorFlow venv: the graph's raw and final outputs for each image, into `out` (.npz)."""
    import tensorflow as tf

    x = np.load(images)["images"]
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(graph_file.read_bytes())
    names = {"raw_boxes": "Postprocessor/Reshape_2:0", "raw_scores": "Postprocessor/convert_scores:0",
             "boxes": "detection_boxes:0", "scores": "detection_scores:0", "count": "num_detections:0"}
    with tf.Graph().as_default() as g:
        tf.import_graph_def(graph, name="")
        with tf.compat.v1.Session(graph=g) as s:
            fetch = {k: g.get_tensor_by_name(v) for k, v in names.items()}
            runs = [s.run(fetch, {"image_tensor:0": x[i:i + 1]}) for i in range(len(x))]
    np.savez(out, **{k: np.concatenate([r[k] for r in runs]) for k in names}, tf=np.array(tf.__version__))


def match(ref_boxes: np.ndarray, ref_scores: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
          min_score: float) -> tuple[int, int, float, float]:
    """Detections >= min_score of one image, each matched to the other run's nearest box: (count here, count
    there, largest box difference, largest score difference), in normalised coordinates."""
    a, b = ref_scores >= min_score, scores >= min_score
    if not a.any() or not b.any():
        return int(a.sum()), int(b.sum()), 0.0, 0.0
    d = np.abs(ref_boxes[a][:, None] - boxes[b][None]).max(-1)
    j = d.argmin(1)
    return int(a.sum()), int(b.sum()), float(d.min(1).max()), float(np.abs(ref_scores[a] - scores[b][j]).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mot15"), help="MOT15 folder")
    p.add_argument("--tf-python", default="/work/venvs/tf/bin/python", help="a Python that imports tensorflow")
    p.add_argument("--frames", type=int, default=8, help="frames per sequence")
    p.add_argument("--min-score", type=float, default=0.3, help="detections compared from this score")
    p.add_argument("--write-reference", default="", help="keep TensorFlow's detections here (JSON, numbers only)")
    p.add_argument("--reference", nargs=3, metavar=("IMAGES", "OUT", "GRAPH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference:
        tensorflow_run(*(Path(a) for a in args.reference))
        return

    import onnxruntime as ort
    import torch

    sys.path.insert(0, str(ROOT))
    from reid_core.video.ssdlite import build_ssdlite, export_onnx, graph_file, ssdlite_detections

    x, names = frames(Path(args.data), args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", images=x)
        subprocess.run([args.tf_python, __file__, "--reference", str(Path(tmp) / "in.npz"),
                        str(Path(tmp) / "tf.npz"), str(graph_file())], check=True, stderr=subprocess.DEVNULL)
        ref = dict(np.load(Path(tmp) / "tf.npz"))
        model = build_ssdlite()
        export_onnx(model, Path(tmp) / "ssdlite.onnx")
        session = ort.InferenceSession(str(Path(tmp) / "ssdlite.onnx"), providers=["CPUExecutionProvider"])
        onnx_boxes, onnx_scores = session.run(None, {"images": x})
    with torch.no_grad():
        torch_boxes, torch_scores = (t.numpy() for t in model(torch.from_numpy(x)))
    tf_raw = ref["raw_boxes"][..., [1, 0, 3, 2]]  # TensorFlow's ymin, xmin, ymax, xmax -> x1, y1, x2, y2
    tf_raw_scores = ref["raw_scores"][..., 1]
    print(f"{len(x)} frames ({', '.join(names)}); TensorFlow {ref['tf']}, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}")
    print("| run | max box diff (all 1917 anchors) | max score diff | detections >= "
          f"{args.min_score} (TF / this) | max box diff (matched) | max score diff (matched) |")
    print("|---|---|---|---|---|---|")
    reference = []
    for name, boxes, scores in (("torch", torch_boxes, torch_scores), ("ONNX Runtime", onnx_boxes, onnx_scores)):
        rows = []
        for i in range(len(x)):
            dets = ssdlite_detections(boxes[i], scores[i], model.cfg)
            n = int(ref["count"][i])
            tf_boxes, tf_scores = ref["boxes"][i, :n][:, [1, 0, 3, 2]], ref["scores"][i, :n]
            rows.append(match(tf_boxes, tf_scores, dets[:, :4], dets[:, 4], args.min_score))
            if name == "torch":
                keep = tf_scores >= 0.1
                reference.append({"frame": names[i], "boxes": np.round(tf_boxes[keep], 6).tolist(),
                                  "scores": np.round(tf_scores[keep], 6).tolist()})
        counts_tf, counts = sum(r[0] for r in rows), sum(r[1] for r in rows)
        print(f"| {name} | {np.abs(boxes - tf_raw).max():.2e} | {np.abs(scores - tf_raw_scores).max():.2e} | "
              f"{counts_tf} / {counts} | {max(r[2] for r in rows):.2e} | {max(r[3] for r in rows):.2e} |")
    if args.write_reference:  # one frame a line
        head = {"what": "TensorFlow's detections (score >= 0.1; x1, y1, x2, y2 in [0, 1]) of the pedestrian-detection-"
                        "ssdlite 0.2 graph on MOT15 frames resized to 300x300 (cv2.INTER_AREA); made by "
                        "bench/detector_parity.py --write-reference", "tensorflow": str(ref["tf"])}
        lines = ",\n".join(json.dumps(f) for f in reference)
        Path(args.write_reference).write_text(json.dumps(head)[:-1] + ', "frames": [\n' + lines + "\n]}\n")

if __name__ == "__main__":
    main()
