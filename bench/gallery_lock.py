"""How long a big add holds a gallery's write lock (issue #23): embedding happens before the lock (ingest.py),
so the lock covers the insert only. A probe writer (an empty remove, every 50 ms, through another handle as
another process would) records how long it waited; the gallery records its longest write transaction.

    .venv/bin/python bench/gallery_lock.py --images ../shared/data/market1501/bounding_box_train --n 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reid_core import ReID, resolve_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="a folder of crops (its first N .jpg/.png are added)")
    ap.add_argument("--n", type=int, default=5000, help="images in the one add")
    ap.add_argument("--weights", default=None, help="default: the shipped weights")
    ap.add_argument("--fake-embed", action="store_true",
                    help="embed with a seeded random 1280-d vector instead of the model: the lock does not wait for "
                         "the model any more, so this measures the same hold in a fraction of the time")
    args = ap.parse_args()
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".png"))[:args.n]
    reid = ReID.load(resolve_weights(args.weights))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gallery.sqlite"
        gallery, probe = reid.gallery(path), reid.gallery(path)
        if args.fake_embed:
            gallery.embed = lambda imgs: np.random.default_rng(len(imgs)).normal(size=(len(imgs), 1280))
        waits: list[float] = []
        stop = threading.Event()

        def probing() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                probe.remove([])
                waits.append(time.perf_counter() - t0)
                time.sleep(0.05)

        t = threading.Thread(target=probing)
        t.start()
        t0 = time.perf_counter()
        report = gallery.add_files(files)
        seconds = time.perf_counter() - t0
        stop.set()
        t.join()
        out = {"images": len(files), "added": report.added, "add_s": round(seconds, 1), "engine": str(reid.engine),
               "longest_write_lock_s": round(gallery.longest_write, 3), "probe_writes": len(waits),
               "probe_longest_wait_s": round(max(waits), 3), "file_mb": round(path.stat().st_size / 2**20, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
