"""Memory of many visitors' galleries (issue #22): N sessions, each with a gallery of R rows of D-d embeddings
(the shipped Lite0's 1280), each searched once, with and without the one memory budget (`ServerLimits.memory_mb`)
that holds every session's index cache and adapted model. Process RSS is read after each run, side by side.

    .venv/bin/python bench/session_memory.py --sessions 200 --rows 1000 --dim 1280 --budget-mb 256
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reid_core import Gallery, ServerLimits  # noqa: E402
from space.sessions import Sessions  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(n: int, rows: int, dim: int, budget_mb: int) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        sessions = Sessions(d, lambda path: Gallery(path, lambda imgs: None, "bench"),
                            ServerLimits(max_sessions=n, client_sessions=n, memory_mb=budget_mb, disk_mb=10**6))
        before, peak = rss_mb(), 0.0
        for s in range(n):
            with sessions.use(f"s{s}", f"10.0.{s // 250}.{s % 250}", create=True) as g:
                emb = rng.normal(size=(rows, dim)).astype(np.float32)
                g.add_paths([f"/nowhere/{s}_{r}.jpg" for r in range(rows)], emb)
                g.search(emb[0], 10)  # builds its index cache
            peak = max(peak, rss_mb())
        out = {"budget_mb": budget_mb, "accounted_mb": round(sessions.memory_bytes() / 2**20),
               "rss_growth_mb": round(rss_mb() - before), "rss_peak_growth_mb": round(peak - before)}
        del sessions
        gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=200, help="visitors, each with its own gallery")
    ap.add_argument("--rows", type=int, default=1000, help="images in each gallery")
    ap.add_argument("--dim", type=int, default=1280, help="embedding width")
    ap.add_argument("--budget-mb", type=int, default=256, help="ServerLimits.memory_mb for the bounded run")
    args = ap.parse_args()
    caches_mb = args.sessions * args.rows * args.dim * 4 / 2**20
    print(json.dumps({"sessions": args.sessions, "rows": args.rows, "dim": args.dim,
                      "all_caches_mb": round(caches_mb),
                      "bounded": run(args.sessions, args.rows, args.dim, args.budget_mb),
                      "unbounded": run(args.sessions, args.rows, args.dim, 10**6)}, indent=1))


if __name__ == "__main__":
    main()
