"""ONNX export of the embedding path (image batch -> L2-normalised embedding) and an onnxruntime embedder.

    python -m reid_core export --weights weights/model.safetensors --out model.onnx

The graph takes raw RGB pixels, uint8 (B, 3, H, W) at the model's input size, and normalises them itself
(the mean/std are the model's own buffers); it has a dynamic batch axis, and the model config travels inside
the file as metadata, so `OnnxEmbedder(path)` needs nothing else. `export_onnx` checks the graph against torch
fp32 on the seeded parity batch before the file appears: every embedding must match to cosine >= PARITY_COSINE,
else ParityError and no file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base.files import atomic_write
from .embed import CONFIG_KEY, OnnxEmbedder, row_cosine
from .model.errors import WeightsError
from .model.network import ModelConfig, SiameseReID

PARITY_COSINE = 0.999
PARITY_IMAGES = 8  # the seeded batch every parity check embeds
OPSET = 17  # the ONNX opset written unless asked otherwise (the cached exports' too)


class ParityError(WeightsError):
    """An engine whose embeddings differ from torch fp32's by more than PARITY_COSINE allows."""

    def __init__(self, what: str, cosine: float):
        super().__init__(f"{what} differs from torch fp32 (cosine {cosine:.6f} < {PARITY_COSINE} on "
                         f"{PARITY_IMAGES} seeded images)")
        self.cosine = cosine


class _EmbedPath(nn.Module):
    def __init__(self, model: SiameseReID):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def export_onnx(model: SiameseReID, path: str | Path, opset: int = OPSET) -> float:
    """Write `path` atomically: input `images` (B, 3, H, W) uint8 RGB, output `embeddings` (B, D). Returns the
    least cosine with torch fp32 over the parity batch; ParityError (and no file) when it is below
    PARITY_COSINE."""
    import onnx

    cfg = model.cfg
    model = model.float().eval()
    x = torch.zeros(2, 3, cfg.height, cfg.width, dtype=torch.uint8)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed, deprecated but exact
            warnings.simplefilter("ignore", DeprecationWarning)
            # the wrapper in eval mode too: the exporter restores the mode it found, and a wrapper left in
            # training mode would switch the model's BatchNorm to batch statistics after the export
            torch.onnx.export(_EmbedPath(model).eval(), (x,), str(tmp), input_names=["images"],
                              output_names=["embeddings"], opset_version=opset, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})
        proto = onnx.load(str(tmp))
        proto.metadata_props.add(key=CONFIG_KEY, value=json.dumps(asdict(cfg)))
        onnx.save(proto, str(tmp))
        cosine[0] = float(parity(model, OnnxEmbedder(tmp), parity_batch(cfg)).min())
        if cosine[0] < PARITY_COSINE:  # raised inside the write: the temp file goes, nothing appears at `path`
            raise ParityError("the ONNX export", cosine[0])

    cosine = [float("nan")]
    atomic_write(path, write)
    return cosine[0]


def parity_batch(cfg: ModelConfig, n: int = PARITY_IMAGES) -> torch.Tensor:
    """The seeded random uint8 images every parity check embeds (the export's, and the engine choice's)."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, cfg.height, cfg.width), dtype=np.uint8))


def parity(model: SiameseReID, embedder: OnnxEmbedder, x: torch.Tensor) -> np.ndarray:
    """Per-image cosine between the torch (fp32) and the ONNX embeddings of the same uint8 batch."""
    with torch.no_grad():
        want = model.float().eval().embed(x).numpy()
    return row_cosine(want, embedder(x))
