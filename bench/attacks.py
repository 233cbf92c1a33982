"""A hostile visitor against `python app.py` on the shipped weights, from outside (issue #22): is a new visitor
served during a session flood, does the app's memory stay within its budget under many sessions and huge-log
draws, how long does another visitor's Compare take while a hostile add runs (ratio to idle, side by side),
and what does each fuzzed parameter get back.

    .venv/bin/python bench/attacks.py [--sessions 1000] [--log-rows 7000000] [--draws 10] [--out attacks.json]

The app runs as on a Space (SPACE_ID set: clients are told apart by the proxy's X-Forwarded-For).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_process import start_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "people").glob("*.png"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client(url: str, address: str) -> Client:
    return Client(url, verbose=False, headers={"X-Forwarded-For": address})


def compare_times(c: Client, n: int) -> list[float]:
    out = []
    for k in range(n):
        t0 = time.perf_counter()
        c.predict(handle_file(EXAMPLES[k % len(EXAMPLES)]), handle_file(EXAMPLES[(k + 1) % len(EXAMPLES)]),
                  api_name="/compare")
        out.append(time.perf_counter() - t0)
    return out


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def pixel_bomb(path: Path, n: int = 20, side: int = 6300) -> Path:
    """n different side x side gradient PNGs in a zip: a few MB that decode to n * side^2 pixels."""
    ramp = np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
    with zipfile.ZipFile(path, "w") as zf:
        for k in range(n):
            ramp[0, :k + 1] = 7  # each one its own bytes: none is skipped as a duplicate
            buf = io.BytesIO()
            Image.fromarray(ramp).convert("RGB").save(buf, "PNG")
            zf.writestr(f"bomb{k}.png", buf.getvalue())
    return path


def huge_log(path: Path, rows: int) -> Path:
    with open(path, "w") as f:
        f.write("epoch,loss,lr\n")
        block = 500_000
        for s in range(0, rows, block):
            e = np.arange(s + 1, min(rows, s + block) + 1)
            np.savetxt(f, np.column_stack([e, 5 / e, np.full(len(e), 3.5e-4)]), delimiter=",", fmt="%.6g")
    return path


def timed_during(victim: Client, work: threading.Thread, head_start: float = 0.0) -> list[float]:
    """The victim's Compare times while `work` runs (at least one), from `head_start` seconds after it starts."""
    work.start()
    time.sleep(head_start)
    attacked: list[float] = []
    while work.is_alive() or not attacked:
        attacked += compare_times(victim, 1)
    work.join()
    return attacked


def hostile_add(url: str, work: Path, compares: int) -> dict:
    """Another visitor's Compare, idle and while a pixel bomb is added (side by side, one run)."""
    victim = client(url, "198.51.100.1")
    compare_times(victim, 3)  # warm
    idle = compare_times(victim, compares)
    bomb = pixel_bomb(work / "bomb.zip")
    said: list[str] = []
    t0 = time.perf_counter()
    hostile = threading.Thread(target=lambda: said.append(client(url, "203.0.113.1").predict(
        [handle_file(bomb)], api_name="/add_to_gallery")))
    attacked = timed_during(victim, hostile, head_start=0.5)
    return {"compare_idle_p50_s": round(statistics.median(idle), 3), "compare_idle_p95_s": round(p95(idle), 3),
            "compare_attacked_p50_s": round(statistics.median(attacked), 3),
            "compare_attacked_p95_s": round(p95(attacked), 3), "compares_during_attack": len(attacked),
            "p95_ratio": round(p95(attacked) / p95(idle), 2), "hostile_add_s": round(time.perf_counter() - t0, 1),
            "hostile_add_said": said[0].split("\n")[0][:160], "bomb_zip_mb": round(bomb.stat().st_size / 2**20, 1)}


def crops_zip(path: Path, n: int) -> Path:
    """n different crops (the example people, shifted, scaled and tinted at random) in one zip."""
    rng = np.random.default_rng(0)
    people = [Image.open(p).convert("RGB") for p in EXAMPLES]
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            img = people[i % len(people)]
            w, h = img.size
            dx, dy = rng.integers(0, w // 8), rng.integers(0, h // 8)
            crop = img.crop((dx, dy, w - w // 8 + dx, h - h // 8 + dy)).resize((64, 128))
            arr = np.clip(np.asarray(crop, np.float32) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "PNG")
            z.writestr(f"{i // len(people):04d}_c{i % 6 + 1}s1_{i:06d}_00.png", buf.getvalue())
    return path


def adapting(url: str, work: Path, compares: int, crops: int, train_seconds: float) -> dict:
    """Another visitor's Compare, idle and while one visitor adapts a gallery of `crops` crops, undoes it, and
    self-trains it in the background (timed for `train_seconds`, then cancelled): each re-embeds or trains a
    unit per turn of the fair lane (issue #29)."""
    victim, hostile = client(url, "198.51.100.1"), client(url, "203.0.113.2")
    compare_times(victim, 3)  # warm
    idle = compare_times(victim, compares)
    fig = {"compare_idle_p50_s": round(statistics.median(idle), 3), "compare_idle_p95_s": round(p95(idle), 3)}
    t0 = time.perf_counter()
    hostile.predict([handle_file(crops_zip(work / "crops.zip", crops))], api_name="/add_to_gallery")
    fig["gallery_crops"], fig["gallery_add_s"] = crops, round(time.perf_counter() - t0, 1)
    for name, api in (("adapt", "/adapt_gallery"), ("undo", "/undo_adapt")):
        t0 = time.perf_counter()
        during = timed_during(victim, threading.Thread(target=lambda api=api: hostile.predict(api_name=api)))
        fig |= {f"{name}_s": round(time.perf_counter() - t0, 1), f"compares_during_{name}": len(during),
                f"compare_during_{name}_p50_s": round(statistics.median(during), 3),
                f"compare_during_{name}_p95_s": round(p95(during), 3),
                f"{name}_p95_ratio": round(p95(during) / p95(idle), 2)}
    fig["self_train_started"] = hostile.predict(api_name="/self_train")[:120]
    training = threading.Thread(target=time.sleep, args=(train_seconds,))
    during = timed_during(victim, training)
    fig |= {"self_train_status": hostile.predict(api_name="/self_train_status")[:200],
            "compares_during_self_train": len(during),
            "compare_during_self_train_p50_s": round(statistics.median(during), 3),
            "compare_during_self_train_p95_s": round(p95(during), 3),
            "self_train_p95_ratio": round(p95(during) / p95(idle), 2),
            "self_train_cancel": hostile.predict(api_name="/cancel_self_train")[:120]}
    return fig


def flood(url: str, pid: int, sessions: int) -> dict:
    """One address opens `sessions` fresh sessions, each adding an image; then a newcomer adds and searches."""
    attacker = client(url, "203.0.113.9")
    t0 = time.perf_counter()
    for _ in range(sessions):
        attacker.predict([handle_file(EXAMPLES[0])], api_name="/add_to_gallery")
        attacker.reset_session()
    out = {"flood_sessions": sessions, "flood_s": round(time.perf_counter() - t0, 1),
           "rss_after_flood_mb": round(rss_mb(pid))}
    newcomer = client(url, "198.51.100.2")
    t0 = time.perf_counter()
    added = newcomer.predict([handle_file(p) for p in EXAMPLES], api_name="/add_to_gallery").split("\n")[0]
    _, table, _ = newcomer.predict(handle_file(EXAMPLES[0]), 5, api_name="/search")
    return out | {"newcomer_served": added.startswith(f"Added {len(EXAMPLES)} images") and bool(table["data"]),
                  "newcomer_add_and_search_s": round(time.perf_counter() - t0, 2)}


def huge_draws(url: str, pid: int, work: Path, rows: int, draws: int) -> dict:
    log = huge_log(work / "log.csv", rows)
    drawer, times, rss = client(url, "198.51.100.3"), [], []
    for _ in range(draws):
        t0 = time.perf_counter()
        *_, status = drawer.predict([], handle_file(log), api_name="/log_curves")
        times.append(time.perf_counter() - t0)
        rss.append(round(rss_mb(pid)))
    return {"log_rows": rows, "log_mb": round(log.stat().st_size / 2**20), "draw_median_s":
            round(statistics.median(times), 2), "draw_max_s": round(max(times), 2),
            "draw_status": status.split("\n\n")[-1][:120], "rss_after_each_draw_mb": rss}


def fuzz(url: str) -> dict:
    c, out = client(url, "198.51.100.4"), {}
    for k in ("5", None, [3], -1, 0, 51, 1e9, 2.5, True):
        try:
            c.predict(handle_file(EXAMPLES[0]), k, api_name="/search")
            out[repr(k)] = "accepted"
        except Exception as e:  # noqa: BLE001 - the app's one line, as a client sees it
            out[repr(k)] = str(e).splitlines()[0][:100]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000, help="fresh sessions the flood opens from one address")
    ap.add_argument("--log-rows", type=int, default=6_000_000,
                    help="rows of the huge log.csv drawn (7,000,000 is over the 200 MB upload limit: refused at once)")
    ap.add_argument("--draws", type=int, default=10, help="huge-log draws")
    ap.add_argument("--compares", type=int, default=20, help="Compare calls timed idle and under attack")
    ap.add_argument("--crops", type=int, default=2000, help="the adapting visitor's gallery (adapt phase)")
    ap.add_argument("--train-seconds", type=float, default=90, help="self-training timed before its cancel (adapt)")
    ap.add_argument("--phases", default="add,flood,log,fuzz",
                    help="which attacks, comma-separated: add (Compare during a hostile add), flood, log, fuzz, adapt "
                         "(Compare while another visitor adapts, undoes and self-trains a gallery)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    work = Path(tempfile.mkdtemp(prefix="reid-attacks-"))
    proc, url, started = start_app(["--data-dir", str(work / "store"), "--runs-dir", str(work / "runs")],
                                   env={"SPACE_ID": "bench/attacks", "GRADIO_TEMP_DIR": str(work / "gradio"),
                                        "REID_SELF_TRAIN_JOBS": "1"})
    fig: dict = {"start_s": round(started, 1), "rss_start_mb": round(rss_mb(proc.pid))}
    try:
        if "add" in phases:
            fig |= hostile_add(url, work, args.compares)
        if "flood" in phases:
            fig |= flood(url, proc.pid, args.sessions)
        if "log" in phases:
            fig |= huge_draws(url, proc.pid, work, args.log_rows, args.draws)
        if "adapt" in phases:
            fig |= adapting(url, work, args.compares, args.crops, args.train_seconds)
        if "fuzz" in phases:
            fig["fuzz_search_k"] = fuzz(url)
    finally:
        fig["rss_end_mb"] = round(rss_mb(proc.pid))
        proc.kill()
        proc.wait()
    print(json.dumps(fig, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
