"""The target crops: a folder's (cameras from names or camera folders, labels never read) or crops in memory,
sampled, balanced across cameras and read a batch at a time."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base.progress import progress_bar
from ..data.datasets import DatasetError, Record, detect_layout, load_dataset
from ..data.images import read_pixels
from ..embed import list_images

CAMERA_FOLDER = re.compile(r"^cam(?:era)?(?:[-_ ]?(\d+)|[-_ ]([a-z0-9]+))$", re.I)  # cam1/, cam_a/, Camera-2/


def target_records(folder: str | Path, layout: str = "auto") -> list[Record]:
    """The unlabeled crops of a target folder: a dataset's training images (their pids dropped: -1; cameras
    kept), or every image below any other folder: cameras from Market-style `_cN` names, or, when no name
    carries one, from camera folders (`cam_a/...`, `cam1/...`: camera_folder), else -1 (unknown).
    DatasetError / ValueError (one line) for a missing or image-less folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of target crops")
    try:
        kind = detect_layout(folder) if layout == "auto" else layout
    except DatasetError:
        kind = "plain"
    if kind not in ("plain", "folders"):
        recs = load_dataset(folder, kind).train
        if not recs:
            raise DatasetError(f"{folder}: no training images to adapt on")
        return [Record(r.path, -1, r.camid) for r in recs]
    from ..data.datasets import parse_market_name

    paths = list_images(folder)
    names = [parse_market_name(p.name) for p in paths]
    if any(names):  # cameras in the file names (Market / Duke style): as before, those that parse
        return [Record(str(p), -1, n[1] - 1 if n else -1) for p, n in zip(paths, names, strict=True)]
    folders = [camera_folder(p.relative_to(folder)) for p in paths]
    ids = {name: i for i, name in enumerate(sorted({f for f in folders if f is not None}))}
    return [Record(str(p), -1, ids[f] if f is not None else -1) for p, f in zip(paths, folders, strict=True)]


def image_records(images: Sequence[Any], cameras: Sequence[int] | None = None,
                  tracks: Sequence[int] | None = None) -> list[Record]:
    """Crops already in memory (any ImageLike: the app's gallery pictures, a video's tracklet crops) as unlabeled
    target records, with each one's camera and tracklet (-1: unknown): read_pixels reads a record's `path` with
    load_image, which takes an image as well as a file."""
    cams = [-1] * len(images) if cameras is None else [int(c) for c in cameras]
    tids = [-1] * len(images) if tracks is None else [int(t) for t in tracks]
    if not len(cams) == len(tids) == len(images):
        raise ValueError(f"{len(images)} crops but {len(cams)} cameras and {len(tids)} tracklets")
    return [Record(img, -1, cam, t) for img, cam, t in zip(images, cams, tids, strict=True)]


def camera_folder(relative: Path) -> str | None:
    """The camera a crop's folders name (`cam_a/...`, `cam1/...`, the innermost such folder), or None."""
    for part in reversed(relative.parts[:-1]):
        if m := CAMERA_FOLDER.match(part):
            return (m.group(1) or m.group(2)).lower()
    return None


def sample(records: Sequence[Record], n: int, seed: int = 0) -> list[Record]:
    """A seeded sample of n records (all of them, in a seeded order, when n is 0 or too large)."""
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order[: n or None]]


def camera_balanced(records: Sequence[Record]) -> list[Record]:
    """The records reordered so that cameras take turns (every batch holds each camera about equally often),
    as many as the least-seen camera allows; unchanged when fewer than two cameras are known."""
    by_cam: dict[int, list[Record]] = {}
    for r in records:
        by_cam.setdefault(r.camid, []).append(r)
    if len(by_cam) < 2 or -1 in by_cam:
        return list(records)
    return [r for turn in zip(*by_cam.values(), strict=False) for r in turn]


def pixel_batches(records: Sequence[Record], size: tuple[int, int], batch_size: int = 64,
                  desc: str = "read", progress: bool = True, kept: list[int] | None = None) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches in order; the next batch decodes in a thread while the caller computes.
    Unreadable crops are skipped (a user's folder of crops may hold a few); `kept` collects the positions of
    the crops that were read."""
    starts = range(0, len(records), batch_size)
    with ThreadPoolExecutor(1) as pool:
        jobs = [pool.submit(read_pixels, records[s:s + batch_size], size, True) for s in starts[:2]]
        for i in progress_bar(range(len(starts)), desc=desc, disable=not progress, unit="batch"):
            pixels, positions, _ = jobs[i].result()
            if kept is not None:
                kept += (positions + starts[i]).tolist()
            if i + 2 < len(starts):
                s = starts[i + 2]
                jobs.append(pool.submit(read_pixels, records[s:s + batch_size], size, True))
            if pixels is not None:
                yield pixels
