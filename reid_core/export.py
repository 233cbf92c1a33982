"""ONNX export of the embedding path (image batch -> L2-normalised embedding) and an onnxruntime embedder.

    python -m reid_core.export --weights weights/model.safetensors --out model.onnx

The graph takes raw RGB pixels, uint8 (B, 3, H, W) at the model's input size, and normalises them itself
(the mean/std are the model's own buffers); it has a dynamic batch axis, and the model config travels inside
the file as metadata, so `OnnxEmbedder(path)` needs nothing else. The export is checked against torch on random input
before it is kept: every embedding must match to cosine >= PARITY_COSINE.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .embed import CONFIG_KEY, OnnxEmbedder
from .files import atomic_write
from .model import WEIGHTS_HELP, SiameseReID, WeightsError, load_model, resolve_weights

PARITY_COSINE = 0.999


class _EmbedPath(nn.Module):
    def __init__(self, model: SiameseReID):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def export_onnx(model: SiameseReID, path: str | Path, opset: int = 17) -> None:
    """Write `path` atomically: input `images` (B, 3, H, W) uint8 RGB, output `embeddings` (B, D)."""
    import onnx

    cfg = model.cfg
    model = model.float().eval()
    x = torch.zeros(2, 3, cfg.height, cfg.width, dtype=torch.uint8)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed, deprecated but exact
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(_EmbedPath(model), (x,), str(tmp), input_names=["images"], output_names=["embeddings"],
                              dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
                              opset_version=opset, dynamo=False)
        proto = onnx.load(str(tmp))
        proto.metadata_props.add(key=CONFIG_KEY, value=json.dumps(asdict(cfg)))
        onnx.save(proto, str(tmp))

    atomic_write(path, write)


def parity(model: SiameseReID, embedder: OnnxEmbedder, x: torch.Tensor) -> np.ndarray:
    """Per-image cosine between the torch (fp32) and the ONNX embeddings of the same uint8 batch."""
    with torch.no_grad():
        want = model.float().eval().embed(x).numpy()
    got = embedder(x)
    return (want * got).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1)).clip(1e-12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help=WEIGHTS_HELP)
    ap.add_argument("--out", required=True, help="output .onnx file")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    args.weights = resolve_weights(args.weights)
    try:
        model = load_model(args.weights, "cpu")
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    export_onnx(model, args.out, args.opset)
    cfg = model.cfg
    x = torch.randint(0, 256, (8, 3, cfg.height, cfg.width), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    cos = parity(model, OnnxEmbedder(args.out), x)
    print(f"{args.out}: {cfg.backbone} {cfg.height}x{cfg.width} -> {model.embed_dim}-d, dynamic batch; "
          f"parity with torch on 8 random images: min cosine {cos.min():.6f}")
    if cos.min() < PARITY_COSINE:
        Path(args.out).unlink(missing_ok=True)
        print(f"error: ONNX embeddings differ from torch (cosine {cos.min():.4f} < {PARITY_COSINE}); removed "
              f"{args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
