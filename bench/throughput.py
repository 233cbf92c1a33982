"""Embedding throughput: the whole pipeline (decode, resize, normalise, model: reid_core.embed's batched
DataLoader, what `python -m reid_core.embed` runs) vs the raw forward on already-prepared batches of the same
size, for torch fp32, torch channels_last + bf16 autocast (forced, even where emulated) and ONNX Runtime.

    python bench/throughput.py --weights weights/model.safetensors --images DIR [--n 2048] [--batch 64]

Prints images/s (median of --repeat runs) and the pipeline/raw ratio for each backend, all in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from reid_core.datasets import Record
from reid_core.embed import TorchEmbedder, embed_records
from reid_core.export import OnnxEmbedder, export_onnx
from reid_core.model import load_model
from reid_core.precision import cpu_has_bf16


def rates(embedder: Callable, records: list[Record], x: torch.Tensor, args: argparse.Namespace,
          context: Callable[[], contextlib.AbstractContextManager], repeat: int) -> tuple[float, float]:
    """Median images/s of the raw forward and of the pipeline over the same number of images."""
    steps = max(1, len(records) // len(x))
    x = x if isinstance(embedder, TorchEmbedder) else x.contiguous()  # ONNX Runtime takes plain NCHW
    raw, pipe = [], []
    with context():
        embedder(x)  # one-time kernel set-up, not throughput
    for _ in range(repeat):
        t0 = time.perf_counter()
        with context():
            for _ in range(steps):
                embedder(x)
        raw.append(steps * len(x) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        with context():
            embed_records(embedder, records[: steps * len(x)], len(x), args.workers, progress=False)
        pipe.append(steps * len(x) / (time.perf_counter() - t0))
    return statistics.median(raw), statistics.median(pipe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/model.safetensors")
    ap.add_argument("--images", required=True, help="a folder of jpg crops (e.g. Market-1501 query/)")
    ap.add_argument("--n", type=int, default=2048, help="images per timed pass")
    ap.add_argument("--n-bf16", type=int, default=512, help="images per pass for emulated bf16 (13x slower here)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.weights).to(memory_format=torch.channels_last)
    cfg = model.cfg
    files = sorted(Path(args.images).glob("*.jpg"))[: args.n]
    records = [Record(str(p), 0, 0) for p in files]
    x = torch.randn(args.batch, 3, cfg.height, cfg.width).contiguous(memory_format=torch.channels_last)
    print(f"{cfg.backbone} {cfg.height}x{cfg.width}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{args.workers} loader workers, native bf16: {cpu_has_bf16()}")
    fp32 = TorchEmbedder(model, amp=False)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp) / "model.onnx")
        onnx = OnnxEmbedder(Path(tmp) / "model.onnx")
        runs = [("torch fp32", fp32, records, contextlib.nullcontext),
                ("torch bf16+channels_last", fp32, records[: args.n_bf16],
                 lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
                ("onnxruntime fp32", onnx, records, contextlib.nullcontext)]
        print("| backend | images | raw forward (img/s) | pipeline (img/s) | pipeline / raw |")
        print("|---|---|---|---|---|")
        for name, embedder, recs, context in runs:
            r, p = rates(embedder, recs, x, args, context, args.repeat)
            print(f"| {name} | {len(recs)} | {r:.1f} | {p:.1f} | {100 * p / r:.1f} % |")


if __name__ == "__main__":
    main()
