"""Evaluation on each engine, back to back in one run: wall, user and system CPU time, page faults, and the
Market figures (which must agree to 0.1 point).

    python bench/eval_engines.py --data ../shared/data/market1501 [--engines fp32 bf16 auto] [--max-ids 0]

Each engine runs `python -m reid_core evaluate --engine E --json ...` in its own process, so the CPU times and
faults are that process's alone (getrusage of the finished child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(engine: str, data: str, max_ids: int, out: Path) -> dict[str, float | str]:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--engines", nargs="+", default=["fp32", "bf16", "auto"])
    ap.add_argument("--max-ids", type=int, default=0, help="test identities (0: the full split)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            rows.append(run(engine, args.data, args.max_ids, Path(tmp) / f"{engine}.json"))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| --engine | what ran | evaluation wall s | embedding s (img/s) | user s | sys s | minor faults "
          "| Rank-1 | mAP | mINP | pair AUC |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for e, r in zip(args.engines, rows, strict=True):
        print(f"| {e} | {r['engine']} | {r['wall']:.0f} | {r['embed']:.0f} "
              f"({r['n'] / r['embed']:.0f}) | {r['user']:.0f} | {r['sys']:.0f} | {r['faults'] / 1e6:.2f} M "
              f"| {r['rank1']:.2f} | {r['mAP']:.2f} | {r['mINP']:.2f} | {r['pair_auc']:.2f} |")


if __name__ == "__main__":
    main()
