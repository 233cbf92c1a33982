"""What the engine choice adds to a CLI verb's start: `gallery info` and `compare` with the default engine (auto:
engines.py's rule) side by side with `--engine fp32` (nothing exported or checked), on a warm ONNX cache.

    python bench/cli_start.py [--weights weights/model.safetensors] [--runs 5]

Each run is its own process (`python -m reid_core ...`), the two engines alternating, so both see the same machine
load; the table gives the median wall time of each and the difference. The first `auto` load of the weights (the
export and its parity check, once per weights hash) is timed apart, in a fresh cache folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def crop(seed: int) -> Image.Image:
    """A person-sized crop of three colour bands with noise (what is compared does not matter here)."""
    rng = np.random.default_rng(seed)
    img = np.repeat(rng.integers(0, 256, (3, 1, 3)), [40, 50, 70], axis=0).repeat(64, axis=1).astype(float)
    return Image.fromarray((img + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8))


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reid_core", *cmd], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(ROOT / "weights" / "model.safetensors"))
    ap.add_argument("--runs", type=int, default=5, help="runs of each verb on each engine (default: 5)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "REID_CACHE_DIR": str(Path(tmp) / "cache"),
               "PYTHONPATH": str(ROOT)}
        env.pop("REID_ENGINE", None)
        pictures = [Path(tmp) / f"p{k}.png" for k in range(4)]
        for k, p in enumerate(pictures):
            crop(k).save(p)
        gallery = str(Path(tmp) / "g.sqlite")
        weights = ["--weights", args.weights]
        wall(["gallery", "add", "--gallery", gallery, *weights, "--engine", "fp32", *map(str, pictures)], env)
        verbs = {"gallery info": ["gallery", "info", "--gallery", gallery, *weights],
                 "compare": ["compare", str(pictures[0]), str(pictures[1]), *weights]}
        cold = wall(verbs["compare"], env)  # the first auto load: export + parity check, recorded in the cache
        print(f"first auto load (export + parity check, then compare): {cold:.1f} s", flush=True)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):
            for verb, cmd in verbs.items():
                for engine in ("fp32", "auto"):
                    times.setdefault((verb, engine), []).append(wall([*cmd, "--engine", engine], env))
        print(f"\n| verb | --engine fp32 median s | default (auto) median s | difference s |  ({args.runs} runs each)\n"
              "|---|---|---|---|")
        for verb in verbs:
            fp32, auto = (statistics.median(times[verb, e]) for e in ("fp32", "auto"))
            print(f"| `{verb}` | {fp32:.2f} | {auto:.2f} | {auto - fp32:+.2f} |")


if __name__ == "__main__":
    main()
