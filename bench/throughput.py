"""Embedding throughput: the whole pipeline (decode, resize, normalise, model: reid_core.embed.embed_records,
what `python -m reid_core embed` and evaluation run) vs the raw forward on already-prepared batches of the same
size, for torch fp32, torch channels_last + bf16 autocast (forced, even where emulated) and ONNX Runtime.

    python bench/throughput.py --weights weights/model.safetensors --images DIR [--n 2048] [--batch 64]

The raw forward is timed both ways a CPU can run it: one batch at a time on all threads, and `--workers`
batches side by side on a share of the threads each (how the pipeline runs); the ratio is taken against the
faster of the two. Prints images/s (median of --repeat passes, all interleaved) for each backend, in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core.data.datasets import Record  # noqa: E402
from reid_core.embed import Embedder, TorchEmbedder, embed_records, thread_pool  # noqa: E402
from reid_core.export import OnnxEmbedder, export_onnx  # noqa: E402
from reid_core.model.network import load_model  # noqa: E402
from reid_core.model.precision import cpu_has_bf16  # noqa: E402


class ForcedBf16(TorchEmbedder):
    """bf16 autocast even where the CPU only emulates it (TorchEmbedder turns it on only where native)."""

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().__call__(x)


def rates(embedder: Embedder, records: list[Record], x: torch.Tensor, args: argparse.Namespace,
          ) -> tuple[float, float, float]:
    """Median images/s of: raw forward one batch at a time, raw forward batches side by side, pipeline."""
    steps = max(1, len(records) // len(x))
    x = x.contiguous(memory_format=torch.channels_last) if embedder.channels_last else x  # the model's layout
    with thread_pool(args.workers) as pool:
        embedder(x)  # one-time kernel and session set-up, not throughput
        list(pool.map(lambda _: embedder(x), range(args.workers)))

        def one_at_a_time() -> None:
            for _ in range(steps):
                embedder(x)

        def side_by_side() -> None:
            list(pool.map(lambda _: embedder(x), range(steps)))

        def pipeline() -> None:
            embed_records(embedder, records[: steps * len(x)], len(x), args.workers, progress=False)

        runs = {f: [] for f in (one_at_a_time, side_by_side, pipeline)}
        for _ in range(args.repeat):
            for f, got in runs.items():
                t0 = time.perf_counter()
                f()
                got.append(steps * len(x) / (time.perf_counter() - t0))
    return tuple(statistics.median(v) for v in runs.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/model.safetensors")
    ap.add_argument("--images", required=True, help="a folder of jpg crops (e.g. Market-1501 query/)")
    ap.add_argument("--n", type=int, default=2048, help="images per timed pass")
    ap.add_argument("--n-torch", type=int, default=512, help="images per pass for torch fp32")
    ap.add_argument("--n-bf16", type=int, default=128, help="images per pass for emulated bf16 (10x slower here)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.weights).to(memory_format=torch.channels_last)
    cfg = model.cfg
    files = sorted(Path(args.images).glob("*.jpg"))[: args.n]
    records = [Record(str(p), 0, 0) for p in files]
    x = torch.randint(0, 256, (args.batch, 3, cfg.height, cfg.width), dtype=torch.uint8)  # raw pixels
    print(f"{cfg.backbone} {cfg.height}x{cfg.width}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{args.workers} pipeline workers, native bf16: {cpu_has_bf16()}")
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp) / "model.onnx")
        runs = [("torch fp32", TorchEmbedder(model, amp=False), records[: args.n_torch]),
                ("torch bf16+channels_last", ForcedBf16(model), records[: args.n_bf16]),
                ("onnxruntime fp32", OnnxEmbedder(Path(tmp) / "model.onnx"), records)]
        print("| backend | images | raw, one batch on all threads (img/s) | raw, batches side by side (img/s) "
              "| pipeline (img/s) | pipeline / faster raw |")
        print("|---|---|---|---|---|---|")
        for name, embedder, recs in runs:
            one, side, pipe = rates(embedder, recs, x, args)
            ratio = 100 * pipe / max(one, side)
            print(f"| {name} | {len(recs)} | {one:.1f} | {side:.1f} | {pipe:.1f} | {ratio:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
