"""The gallery file (reid_core.search.gallery) measured: add and search latency, what an extreme strip costs, and the
person screen's statistics on real crops.

    python bench/gallery_store.py [--weights weights/model.safetensors] [--images 500] [--data MARKET_DIR]

Loads the weights (the engine of engines.py's rule, or $REID_ENGINE), then, with test-time flip off and
on (side by side: the app's default is on), times embedding one query and comparing two crops, adds `--images`
synthetic crops (one transaction), then times searches (the whole gallery ranked, 10 pictures read from the same
snapshot) and a clear. `--data`: the screen's grey-level spread and neighbour
correlation over Market's query + bounding_box_test crops, and how many it flags.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a fresh clone as written

from reid_core import ReID  # noqa: E402
from reid_core.data.images import ImageError  # noqa: E402
from reid_core.data.person_check import NOISE_CORR, UNIFORM_STD, grey_stats  # noqa: E402
from reid_core.data.uploads import read_image  # noqa: E402


def crop(k: int) -> bytes:
    rng = np.random.default_rng(k)
    img = np.repeat(rng.integers(0, 256, (4, 1, 3)), [26, 38, 32, 32], axis=0) * np.ones((1, 64, 1))
    img = (img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def strip_png(w: int, h: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * w) * h, 9))
            + chunk(b"IEND", b""))


def median_ms(call: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def app_calls(reid: ReID, uploads: list[tuple[str, bytes]], searches: int) -> None:
    """What a visitor waits for: one query, one comparison, an add of every upload, searches, a clear."""
    a, b = (Image.open(io.BytesIO(uploads[k][1])) for k in (0, 1))
    for what, call in (("embed one query", lambda: reid.embed(a)), ("compare two crops", lambda: reid.compare(a, b))):
        median_ms(call, searches)  # warm-up: the first calls of a new batch shape are slower on every engine
        print(f"{what}: median {median_ms(call, searches):.1f} ms of {searches} (after {searches})")
    with tempfile.TemporaryDirectory() as d:
        g = reid.gallery(Path(d) / "gallery.sqlite")
        t0 = time.perf_counter()
        report = g.add(uploads)
        add_s = time.perf_counter() - t0
        size = (Path(d) / "gallery.sqlite").stat().st_size
        q = reid.embed(Image.open(io.BytesIO(uploads[0][1])))
        lat = []
        for _ in range(searches):
            t0 = time.perf_counter()
            g.search(q, None, pictures=10)
            lat.append(time.perf_counter() - t0)
        reopen = time.perf_counter()
        n = len(reid.gallery(Path(d) / "gallery.sqlite").entries())
        reopen = time.perf_counter() - reopen
        t0 = time.perf_counter()
        g.clear()
        clear_s = time.perf_counter() - t0
    print(f"add {report.added} images in one transaction: {add_s:.1f} s ({report.added / add_s:.0f} img/s incl. "
          f"decode + embed); file {size / 2**20:.1f} MiB")
    print(f"search (rank all {n}, read 10 pictures): median {statistics.median(lat) * 1e3:.1f} ms; "
          f"reopen + list {reopen * 1e3:.0f} ms; clear {clear_s * 1e3:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--searches", type=int, default=20)
    ap.add_argument("--data", help="a Market-1501 folder, for the person screen's statistics")
    args = ap.parse_args()

    strip = strip_png(2, 19_000_000)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        try:
            read_image(strip, "strip.png")
        except ImageError as e:
            why = str(e)
        times.append(time.perf_counter() - t0)
    print(f"2 x 19,000,000 PNG ({len(strip) / 1024:.0f} KB): refused in median {statistics.median(times) * 1e3:.2f} ms"
          f" ({why})")

    t0 = time.perf_counter()
    reid = ReID.load(args.weights or os.environ.get("REID_WEIGHTS"), "cpu", engine=os.environ.get("REID_ENGINE"),
                     cache_dir=os.environ.get("REID_CACHE_DIR"))
    print(f"load {time.perf_counter() - t0:.1f} s; engine: {reid.engine}")
    uploads = [(f"p{k:05d}.png", crop(k)) for k in range(args.images)]
    for flip in (False, True):
        reid.flip = flip
        print(f"test-time flip {'on' if flip else 'off'}:")
        app_calls(reid, uploads, args.searches)

    if args.data:
        root = Path(args.data)
        files = sorted((root / "query").glob("*.jpg")) + sorted((root / "bounding_box_test").glob("*.jpg"))
        t0 = time.perf_counter()
        stats = np.array([grey_stats(Image.open(p)) for p in files])
        took = time.perf_counter() - t0
        flagged = int(((stats[:, 0] < UNIFORM_STD) | (stats[:, 1] < NOISE_CORR)).sum())
        pct = [0, 0.1, 1, 50]
        print(f"person screen on {len(files)} Market query + gallery crops ({took / len(files) * 1e3:.2f} ms each): "
              f"flagged {flagged} ({100 * flagged / len(files):.3f} %); grey std percentiles {pct}: "
              f"{np.percentile(stats[:, 0], pct).round(2).tolist()} (threshold {UNIFORM_STD}); neighbour "
              f"correlation: {np.percentile(stats[:, 1], pct).round(3).tolist()} (threshold {NOISE_CORR})")


if __name__ == "__main__":
    main()
