"""The Videos tab's *Self-train on my videos* on real footage, through the tab's own handlers (BENCHMARKS.md §24.6):
index the clips (each one a camera) with the offline detector, self-train on their tracklets in the background job,
then group the people again with the model it made.

    python bench/videos_self_train.py ../shared/data/mot15/TUD-Campus/TUD-Campus.mp4 \\
        ../shared/data/mot15/TUD-Stadtmitte/TUD-Stadtmitte.mp4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app  # noqa: E402
from reid_core import ServerLimits, resolve_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+", help="video files, each one a camera")
    ap.add_argument("--weights", help="default: the shipped weights")
    ap.add_argument("--images", type=int, default=2000, help="self_train_images: crops the job reads")
    args = ap.parse_args()
    store = Path(tempfile.mkdtemp(prefix="reid-videos-self-train-"))
    os.environ.setdefault("REID_CACHE_DIR", str(store / "cache"))
    limits = ServerLimits(self_train_jobs=1, self_train_images=args.images)
    h = app.ReIDApp(app.Settings(resolve_weights(args.weights), store / "store", store / "runs", server=limits))
    request = type("Request", (), {"session_hash": "bench", "headers": {}, "client": None})()
    t0 = time.time()
    _, summary, _ = h.videos.find_people(args.clips, request, progress=lambda *a, **k: None)
    print(f"indexed in {time.time() - t0:.0f} s: " + summary.replace("\n\n", " | "), flush=True)
    t0 = time.time()
    print(h.videos.self_training.start(request), flush=True)
    job = h.videos.self_training.training.job(h.videos.source, "remote:bench")
    while job.thread.is_alive():
        job.seen = time.monotonic()  # as the page's timer would
        job.thread.join(timeout=5)
    print(f"job {job.state} in {time.time() - t0:.0f} s: {job.message}", flush=True)
    summary = h.videos.self_training.tick(request)[3]  # (status, timer, people, summary, ...)
    print("people after: " + summary.replace("\n\n", " | "))


if __name__ == "__main__":
    main()
