"""A camera's video drawn over with its people: each tracked box with its global identity (P3), or its track
(t7) before `people` has grouped the tracklets. The same colour for one person in every camera."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .frames import probe, read_frames


def colour(label: int) -> tuple[int, int, int]:
    """A stable, distinct colour (BGR) per label: golden-ratio hues."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def annotate(video: str | Path, tracks: Sequence[tuple[int | None, int, np.ndarray]], out: str | Path,
             progress: Callable[[int], None] | None = None) -> int:
    """Write `out` (.mp4): `video` with each (person, track, boxes (n, 6): frame, x1, y1, x2, y2, time_s) drawn.
    Returns the number of frames written."""
    import cv2

    by_frame: dict[int, list[tuple[str, int, np.ndarray]]] = {}
    for person, track, boxes in tracks:
        label, key = (f"P{person}", person) if person is not None else (f"t{track}", 1000 + track)
        for row in boxes:
            by_frame.setdefault(int(row[0]), []).append((label, key, row[1:5]))
    writer, n = None, 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        for frame in read_frames(video):
            bgr = np.ascontiguousarray(frame.rgb[:, :, ::-1])
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), probe(video).fps,
                                         (bgr.shape[1], bgr.shape[0]))
            for label, key, (x1, y1, x2, y2) in by_frame.get(frame.index, []):
                c = colour(key)
                cv2.rectangle(bgr, (int(x1), int(y1)), (int(x2), int(y2)), c, 2)
                cv2.putText(bgr, label, (int(x1) + 2, max(int(y1) - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 2)
            writer.write(bgr)
            n += 1
            if progress:
                progress(n)
    finally:
        if writer is not None:
            writer.release()
    tmp.replace(out)  # atomically: a reader never sees half a video
    return n
