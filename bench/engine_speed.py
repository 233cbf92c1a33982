"""How fast each engine embeds, from the forward pass to a user's command: one script, three questions
(BENCHMARKS.md §3, §13 and §17).

    python bench/engine_speed.py throughput --weights weights/model.safetensors --images DIR [--n 2048] [--batch 64]
    python bench/engine_speed.py evaluate --data ../shared/data/market1501 [--engines fp32 bf16 auto] [--max-ids 0]
    python bench/engine_speed.py cli-start [--weights weights/model.safetensors] [--runs 5]

- throughput: the whole pipeline (decode, resize, normalise, model: reid_core.embed.embed_records, what
  `python -m reid_core embed` and evaluation run) vs the raw forward on already-prepared batches of the same size,
  for torch fp32, torch channels_last + bf16 autocast (forced, even where emulated) and ONNX Runtime. The raw
  forward is timed both ways a CPU can run it: one batch at a time on all threads, and `--workers` batches side by
  side on a share of the threads each (how the pipeline runs); the ratio is taken against the faster of the two.
  Prints images/s (median of --repeat passes, all interleaved) for each backend, in one run.
- evaluate: evaluation on each engine, back to back in one run: wall, user and system CPU time, page faults, and
  the Market figures (which must agree to 0.1 point). Each engine runs `python -m reid_core evaluate --engine E
  --json ...` in its own process, so the CPU times and faults are that process's alone (getrusage of the child).
- cli-start: what the engine choice adds to a CLI verb's start: `gallery info` and `compare` with the default
  engine (auto: engines.py's rule) side by side with `--engine fp32` (nothing exported or checked), on a warm ONNX
  cache. Each run is its own process, the two engines alternating, so both see the same machine load; the table
  gives the median wall time of each and the difference. The first `auto` load of the weights (the export and its
  parity check, once per weights hash) is timed apart, in a fresh cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from questions import Question, ask  # bench/ is the script's folder: on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable from a fresh clone as written

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


def throughput_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--weights", default="weights/model.safetensors")
    ap.add_argument("--images", required=True, help="a folder of jpg crops (e.g. Market-1501 query/)")
    ap.add_argument("--n", type=int, default=2048, help="images per timed pass")
    ap.add_argument("--n-torch", type=int, default=512, help="images per pass for torch fp32")
    ap.add_argument("--n-bf16", type=int, default=128, help="images per pass for emulated bf16 (10x slower here)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=3)


def throughput(args: argparse.Namespace) -> None:
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


def run_evaluate(engine: str, data: str, max_ids: int, out: Path) -> dict[str, float | str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reid_core", "evaluate", "--data", data, "--engine", engine,
                    "--max-ids", str(max_ids), "--json", str(out)], check=True, cwd=ROOT,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = json.loads(out.read_text())
    return {"engine": m["engine_name"], "wall": wall, "embed": m["embed_seconds"],
            "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt, "rank1": 100 * m["rank1"], "mAP": 100 * m["mAP"],
            "mINP": 100 * m["mINP"], "pair_auc": 100 * m["pair_auc"], "n": m["num_query"] + m["num_gallery"]}


def evaluate_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", required=True)
    ap.add_argument("--engines", nargs="+", default=["fp32", "bf16", "auto"])
    ap.add_argument("--max-ids", type=int, default=0, help="test identities (0: the full split)")


def evaluate(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            rows.append(run_evaluate(engine, args.data, args.max_ids, Path(tmp) / f"{engine}.json"))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| --engine | what ran | evaluation wall s | embedding s (img/s) | user s | sys s | minor faults "
          "| Rank-1 | mAP | mINP | pair AUC |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for e, r in zip(args.engines, rows, strict=True):
        print(f"| {e} | {r['engine']} | {r['wall']:.0f} | {r['embed']:.0f} "
              f"({r['n'] / r['embed']:.0f}) | {r['user']:.0f} | {r['sys']:.0f} | {r['faults'] / 1e6:.2f} M "
              f"| {r['rank1']:.2f} | {r['mAP']:.2f} | {r['mINP']:.2f} | {r['pair_auc']:.2f} |")


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


def cli_start_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--weights", default=str(ROOT / "weights" / "model.safetensors"))
    ap.add_argument("--runs", type=int, default=5, help="runs of each verb on each engine (default: 5)")


def cli_start(args: argparse.Namespace) -> None:
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


QUESTIONS: dict[str, Question] = {
    "throughput": (throughput_flags, throughput, "images/s of the pipeline vs the raw forward, per engine"),
    "evaluate": (evaluate_flags, evaluate, "a full evaluation on each engine: time, CPU, faults, figures"),
    "cli-start": (cli_start_flags, cli_start, "what the engine choice adds to a CLI verb's start"),
}


def main() -> None:
    ask(__doc__, QUESTIONS)


if __name__ == "__main__":
    main()
