"""The CLI's `video` verb: `python -m reid_core video index|search|people ...` over video.footage.Footage.

    python -m reid_core video index cam1.mp4 cam2.mp4 --gallery cams.sqlite   # progress per stage
    python -m reid_core video search crop.jpg --gallery cams.sqlite --k 5    # camera, time span, thumbnail, score
    python -m reid_core video people --gallery cams.sqlite --annotate out.mp4
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

ACTIONS = {"index": "detect, track and index videos (each one a camera) into a gallery file",
           "search": "where and when the person in a crop appears: the most alike tracklets",
           "people": "group every tracklet into people across cameras; --annotate draws them on the video"}


def add_args(p: argparse.ArgumentParser, model_flags: Callable[[argparse.ArgumentParser], None],
             setting_flags: Callable[..., None]) -> None:
    """The `video` verb's actions and flags (model_flags and setting_flags: the CLI's own, passed in)."""
    from .config import FootageConfig

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do")
    acts = {name: sub.add_parser(name, help=text, description=text) for name, text in ACTIONS.items()}
    for a in acts.values():
        a.add_argument("--gallery", required=True, help="the gallery file (index creates it)")
        model_flags(a)
    i = acts["index"]
    i.add_argument("videos", nargs="+", help="video files (.mp4, .avi, ...) or folders of frames, one per camera")
    i.add_argument("--camera", action="append", help="a camera name per video, in order (default: file names)")
    i.add_argument("--detector", help="a person detector .onnx (YOLOX / YOLOv8 style; default: the offline SSDLite)")
    setting_flags(i, FootageConfig)
    s = acts["search"]
    s.add_argument("crop", help="an image of the person (a crop)")
    s.add_argument("--k", type=int, default=10, help="how many tracklets, best first (1..50; default 10)")
    s.add_argument("--thumbnails", help="folder for the hits' thumbnails (default: <gallery>.thumbs/)")
    q = acts["people"]
    setting_flags(q, FootageConfig, ("people",))
    q.add_argument("--annotate", help="write the video with boxes and global ids here (.mp4; with several cameras a "
                                      "folder, one <camera>.mp4 each)")


def run(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> int:
    from tqdm import tqdm

    from ..data.limits import Limits
    from ..search.gallery import GalleryError
    from .config import FootageConfig
    from .footage import Footage
    from .frames import VideoLimits

    path = Path(args.gallery)
    if args.action != "index" and not path.is_file():
        raise GalleryError(f"{path}: no gallery file (make one with `video index`)")
    if args.action == "search" and not 1 <= args.k <= 50:
        raise ValueError(f"--k {args.k}: a whole number from 1 to 50")
    cfg = FootageConfig(**{f.name: getattr(args, f.name) for f in fields(FootageConfig) if hasattr(args, f.name)})
    footage = Footage(load(args), path, getattr(args, "detector", None), cfg, VideoLimits(),
                      limits=Limits.from_env(os.environ))
    if args.action == "index":
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None or done < bar.n:
                if bar is not None:
                    bar.close()
                bar = bars[stage] = tqdm(total=total, desc=stage, unit="frame" if stage != "embed" else "tracklet")
            bar.update(done - bar.n)

        reports = footage.index(args.videos, args.camera, progress)
        for bar in bars.values():
            bar.close()
        for r in reports:
            print(r.line())
        print(f"{path}: {footage.gallery.tracklet_count()} tracklets in all")
        return 0
    if args.action == "search":
        hits = footage.search(args.crop, args.k, pictures=args.k)
        if not hits:
            raise GalleryError(f"{path}: the gallery holds no tracklets")
        folder = Path(args.thumbnails or f"{path}.thumbs")
        folder.mkdir(parents=True, exist_ok=True)
        for rank, h in enumerate(hits, start=1):
            thumb = folder / f"{h.camera}_t{h.track}_{h.id}.png"
            h.thumbnail.save(thumb)
            who = "" if h.person is None else f"  person {h.person}"
            print(f"{rank:3d}  {h.score:.4f}  {h.camera}  {h.start_s:7.2f}-{h.end_s:7.2f} s  {thumb}{who}")
        return 0
    people = footage.people()
    if not people:
        raise GalleryError(f"{path}: the gallery holds no tracklets")
    for p in people:
        spans = ", ".join(f"{t.camera} {t.start_s:.1f}-{t.end_s:.1f} s" for t in p.tracklets)
        print(f"person {p.label}: {len(p.cameras)} camera(s), {len(p.tracklets)} tracklet(s): {spans}")
    if args.annotate:
        annotate_people(footage, Path(args.annotate), sorted({t.camera for q in people for t in q.tracklets}))
    return 0


def annotate_people(footage: Any, out: Path, cameras: list[str]) -> None:
    from .annotate import annotate

    if len(cameras) > 1 and out.suffix:
        raise ValueError(f"--annotate {out}: the gallery has {len(cameras)} cameras; name a folder")
    for cam in cameras:
        video, tracks = footage.gallery.boxes(cam)
        target = out if len(cameras) == 1 and out.suffix else out / f"{cam}.mp4"
        n = annotate(video, tracks, target)
        print(f"wrote {target} ({n} frames)")
