"""A process that forks gallery workers on demand, for the kill -9 test (test_gallery.py).

    python tests/gallery_worker.py WEIGHTS GALLERY IMAGES_DIR LOG

Importing torch and the model costs seconds, so this process does it once and forks a fresh worker for each
seed read from stdin (it prints the worker's pid). A worker opens the gallery, as a restarted app would, then
adds random batches of IMAGES_DIR's pictures and clears, forever, writing one JSON line to LOG before each
operation ({"op", "before", "after"}: the counts the gallery may show if killed during it) and one after
({"done": count}). The test kills workers with SIGKILL at random moments.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
from pathlib import Path

import torch

from reid_core import ReID


def log(fd: int, **line: object) -> None:
    os.write(fd, (json.dumps(line) + "\n").encode())  # O_APPEND: one whole line per write


def work(reid: ReID, gallery: Path, images: list[Path], log_path: str, seed: int) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    rng = random.Random(seed)
    g = reid.gallery(gallery)
    log(fd, opened=len(g))
    while True:
        n = len(g)
        if n and rng.random() < 0.3:
            log(fd, op="clear", before=n, after=0)
            g.clear()
        else:
            pick = rng.sample(images, rng.randint(8, 40))
            have = {e["id"] for e in g.entries()}
            new = {hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest() for p in pick} - have
            log(fd, op="add", before=n, after=n + len(new))
            g.add((p.name, p.read_bytes()) for p in pick)
        log(fd, done=len(g))


def main() -> None:
    weights, gallery, images_dir, log_path = sys.argv[1:5]
    torch.set_num_threads(1)  # no OpenMP pool exists before fork, so each child starts one cleanly
    reid = ReID.load(weights, "cpu")
    reid.batch_size = 8  # several batches per add: kills land between them too
    _ = reid.weights_id
    images = sorted(Path(images_dir).glob("*.png"))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed workers are reaped by the kernel
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                work(reid, Path(gallery), images, log_path, int(line))
            finally:
                os._exit(0)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
