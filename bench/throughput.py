"""Embedding throughput: the whole pipeline (decode, resize, normalise, model) vs the raw model forward on
already-prepared batches of the same size, in fp32 and in channels_last + bf16 autocast.

    python bench/throughput.py --weights weights/model.safetensors --images DIR [--n 1024] [--batch 64]

Prints images/s (median of --repeat runs) and the pipeline/raw ratio for each precision.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from reid_core.datasets import Record
from reid_core.evaluate import extract
from reid_core.model import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/model.safetensors")
    ap.add_argument("--images", required=True, help="a folder of jpg crops (e.g. Market-1501 query/)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.weights).to(memory_format=torch.channels_last)
    cfg = model.cfg
    files = sorted(Path(args.images).glob("*.jpg"))[: args.n]
    records = [Record(str(p), 0, 0) for p in files]
    x = torch.randn(args.batch, 3, cfg.height, cfg.width).contiguous(memory_format=torch.channels_last)
    print(f"{cfg.backbone} {cfg.height}x{cfg.width}, {len(records)} images, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    for name, amp in (("fp32", False), ("bf16+channels_last", True)):
        raw, pipe = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                for _ in range(max(1, len(records) // args.batch)):
                    model.embed(x)
            raw.append(max(1, len(records) // args.batch) * args.batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                extract(model, records, args.batch, args.workers, amp=False, progress=False)
            pipe.append(len(records) / (time.perf_counter() - t0))
        r, p = statistics.median(raw), statistics.median(pipe)
        print(f"{name:20s} raw forward {r:7.1f} img/s   pipeline {p:7.1f} img/s   pipeline/raw {100 * p / r:5.1f}%")


if __name__ == "__main__":
    main()
