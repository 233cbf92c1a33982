"""Load test: N concurrent gradio_client users doing compare and search against a fresh `python app.py`,
bounded in time and on loopback only.

    python bench/load_test.py [--users 20] [--seconds 60] [--concurrency 1] [--queue-size 64]

Starts the app on 127.0.0.1 (a free port, a temporary shared gallery of examples/people/*.png, the default weights
unless --weights), then each user (a thread with its own Client) alternates /compare on two random example
people and /search (top 5) with a random example query until the time is up. Prints requests served,
errors, p50/p95 latency per endpoint and overall, and the server's peak resident memory (VmHWM) next to
its memory before the load. Synthetic example people only; no dataset images.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from app_process import ROOT, start_app  # bench/ is the script's folder: on sys.path

PEOPLE = sorted((ROOT / "examples" / "people").glob("*.png"))


def memory_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak so far) of a process, in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def launch(args: argparse.Namespace, data_dir: Path) -> tuple[subprocess.Popen, str]:
    flags = ["--data-dir", str(data_dir / "store"), "--runs-dir", str(data_dir / "runs"), "--concurrency",
             str(args.concurrency), "--queue-size", str(args.queue_size), "--shared-gallery"]
    proc, url, _ = start_app(flags + (["--weights", args.weights] if args.weights else []))
    return proc, url


def user(url: str, seed: int, deadline: float, log: list[tuple[str, float, str]]) -> None:
    """One user: its own client, compare and search in turn until the deadline."""
    from gradio_client import Client, handle_file

    rng = random.Random(seed)
    client = Client(url, verbose=False)
    n = 0
    while time.time() < deadline:
        kind = "compare" if n % 2 == 0 else "search"
        t0 = time.perf_counter()
        try:
            if kind == "compare":
                a, b = rng.sample(PEOPLE, 2)
                client.predict(handle_file(a), handle_file(b), api_name="/compare")
            else:
                client.predict(handle_file(rng.choice(PEOPLE)), 5, api_name="/search")
            error = ""
        except Exception as e:  # noqa: BLE001 - every failure is counted, the run goes on
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        log.append((kind, time.perf_counter() - t0, error))
        n += 1


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else (xs or [float("nan")])[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=1, help="the app's --concurrency (model calls at once)")
    ap.add_argument("--queue-size", type=int, default=64, help="the app's --queue-size")
    ap.add_argument("--weights", help="default: the app's default weights")
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = launch(args, Path(tmp))
        try:
            warm = Client(url, verbose=False)
            status = warm.predict([handle_file(p) for p in PEOPLE], api_name="/add_to_gallery")
            warm.predict(handle_file(PEOPLE[0]), handle_file(PEOPLE[1]), api_name="/compare")
            rss_before = memory_mib(proc.pid, "VmRSS")
            log: list[tuple[str, float, str]] = []
            deadline = time.time() + args.seconds
            threads = [threading.Thread(target=user, args=(url, i, deadline, log), daemon=True)
                       for i in range(args.users)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 600)
            wall = time.time() - t0
            peak = memory_mib(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ok = [lat for _, lat, err in log if not err]
    errors = Counter(err for _, _, err in log if err)
    print(f"{status.splitlines()[0]}")
    print(f"{args.users} users, {args.seconds:.0f} s, concurrency {args.concurrency}, queue size {args.queue_size}: "
          f"{len(ok)} requests served in {wall:.0f} s ({len(ok) / wall:.2f}/s), {sum(errors.values())} errors")
    for kind in ("compare", "search"):
        lat = [x for k, x, err in log if k == kind and not err]
        print(f"  {kind:8s} n={len(lat):4d}  p50 {pct(lat, 50):6.2f} s  p95 {pct(lat, 95):6.2f} s")
    print(f"  all      n={len(ok):4d}  p50 {pct(ok, 50):6.2f} s  p95 {pct(ok, 95):6.2f} s")
    print(f"server memory: {rss_before:.0f} MiB before the load, peak (VmHWM) {peak:.0f} MiB")
    for err, n in errors.most_common(5):
        print(f"  error x{n}: {err}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
