"""Ingest: uploads -> gallery rows (checked, de-duplicated, downsized, embedded), before any write lock is taken.

The costly part of adding to a gallery (decoding, screening, embedding) happens here, batch by batch, and the
finished rows go to a `stage` callback (the gallery's private staging table); the gallery then copies them in
with one short write transaction. So a 5,000-image add holds the write lock for the insert only, and a
kill at any instant leaves the gallery as it was (staged rows vanish with their connection).

    report = ingest(uploads, have, room, embed, limits, stage=...)
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..data.images import ImageError, PixelBudget, skipped_line
from ..data.limits import Limits
from ..data.person_check import person_warning
from ..data.uploads import read_image

STORE_SIZE = (128, 256)  # (w, h): stored pictures are at most this big, enough for any re-id input size
DECODE_SIZE = (2 * STORE_SIZE[0], 2 * STORE_SIZE[1])  # a JPEG is decoded at the smallest scale at least this big

Embed = Callable[[Sequence[Image.Image]], np.ndarray]
Row = tuple[str, str, bytes]  # (id: hash of the uploaded bytes, name, the stored picture as PNG)
Turn = Callable[[], AbstractContextManager[Any]]  # one unit of model work waits its turn (the app's fair lane)


ALREADY = ": already in the gallery"


@dataclass
class AddReport:
    added: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per upload left out, naming it and why
    warnings: list[str] = field(default_factory=list)  # added, but worth a look (e.g. not a person crop)

    def describe(self, most: int = 50, escape: Callable[[str], str] = str) -> str:
        """Skips and warnings as Markdown lines, at most `most` of each (for the app and the CLI); `escape`
        makes the file names in them text, not markup, where a page renders them."""
        skipped = self.skipped_lines()
        lines = ([f"- {skipped_line(escape(s))}" for s in skipped[:most]]
                 + [f"- warning {escape(w)}" for w in self.warnings[:most]])
        more = len(skipped) + len(self.warnings) - len(lines)
        return "\n".join(lines + ([f"- … and {more} more"] if more > 0 else []))

    def skipped_lines(self) -> list[str]:
        """`skipped`, with files already in the gallery said in one line when there are several (adding the
        example people twice listed 18 lines that all said the same)."""
        dups = [s.removesuffix(ALREADY) for s in self.skipped if s.endswith(ALREADY)]
        if len(dups) < 2:
            return list(self.skipped)
        shown = ", ".join(dups[:3]) + (", …" if len(dups) > 3 else "")
        return [f"{len(dups)} files{ALREADY} ({shown})", *(s for s in self.skipped if not s.endswith(ALREADY))]


def stored_picture(img: Image.Image) -> Image.Image:
    """Downsized to STORE_SIZE (the picture kept and embedded, so a re-embedding sees the same pixels)."""
    img = img.copy()
    img.thumbnail(STORE_SIZE, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")  # lossless
    return buf.getvalue()


def upload_id(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _counted(items: Iterable[Any], progress: Callable[[int], None] | None) -> Iterator[Any]:
    """The items, calling progress(n) once the n-th has been dealt with (added or skipped alike)."""
    for done, item in enumerate(items, start=1):
        yield item
        if progress:
            progress(done)


def ingest(uploads: Iterable[tuple[str, bytes]], have: dict[str, str], room: int, embed: Embed, limits: Limits,
           stage: Callable[[list[Row], np.ndarray], None], batch_size: int = 32,
           progress: Callable[[int], None] | None = None, turn: Turn = nullcontext) -> AddReport:
    """Decode, check, de-duplicate (against `have`, id -> name, and each other), downsize and embed (name, bytes)
    uploads, handing each finished batch to `stage`; at most `room` rows. Each bad upload is skipped with a line
    naming it. `turn()` wraps each decode and each batch's embedding, so a fair scheduler can let other
    visitors' work in between; decoding stops at `limits.max_request_pixels` decoded pixels (JPEGs are decoded
    reduced, so a huge photo costs what its downsized copy does)."""
    report, have = AddReport(), dict(have)
    budget = PixelBudget(limits.max_request_pixels)
    batch: list[tuple[str, str, Image.Image]] = []  # (id, name, the picture as stored)

    def flush() -> None:
        with turn():
            emb = embed([img for _, _, img in batch])
        stage([(i, n, png(img)) for i, n, img in batch], np.asarray(emb, np.float32))
        report.added += len(batch)
        batch.clear()

    for name, data in _counted(uploads, progress):
        if report.added + len(batch) >= room:
            report.skipped.append(f"{name} and any later files: the gallery is full "
                                  f"({limits.max_gallery:,}-image limit; clear it to add others)")
            break
        digest = upload_id(data)
        if digest in have:
            same = "" if have[digest] == name else f" (same picture as {have[digest]})"
            report.skipped.append(f"{name}{ALREADY}{same}")
            continue
        try:
            with turn():
                img = read_image(data, name, limits, reduce=DECODE_SIZE, budget=budget)
        except ImageError as e:
            report.skipped.append(str(e))
            if budget.spent_out:
                report.skipped.append("any later files: this request decoded its pixel budget "
                                      f"({limits.max_request_pixels:,} pixels); add them in another request")
                break
            continue
        if why := person_warning(img):
            report.warnings.append(f"{name}: {why}")
        have[digest] = name
        batch.append((digest, name, stored_picture(img)))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return report
