"""Every resource limit of the app in one place: what one upload, one zip, one image and the gallery may cost.

A public demo gets hostile uploads (zip bombs, decompression bombs, 100k-file archives); each limit bounds
memory or disk before the work starts. Defaults suit a small demo on 2 CPU cores; every field can be set by
an environment variable (REID_ + the field name in capitals, e.g. REID_MAX_UPLOAD_MB=50) or by the app's
command line (--max-upload-mb 50).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    max_upload_mb: int = 200  # one uploaded file; Gradio refuses bigger ones before they reach a handler
    max_files: int = 5000  # images per "add to gallery" call, and entries in one zip
    max_zip_mb: int = 500  # uncompressed bytes read from one zip (declared sizes checked first, then counted)
    max_image_mb: int = 25  # one image, uploaded alone or inside a zip, in every tab
    max_gallery: int = 20000  # images in the search gallery
    max_pixels: int = 40_000_000  # one decoded image (~120 MB as RGB)
    max_side: int = 12_000  # longest side of one image, in pixels
    max_aspect: int = 10  # longest side over shortest: beyond it decoding and resizing a strip costs seconds
    session_minutes: int = 60  # a private gallery is deleted this long after its session last used it
    max_sessions: int = 200  # private galleries kept at once (each up to max_gallery images)
    max_adapted: int = 8  # sessions holding a model adapted to their gallery at once (~14 MB each for Lite0)
    adapt_images: int = 500  # gallery crops an "Adapt to this gallery" reads (500 did as well as 7,060 on CUHK03)
    concurrency: int = 1  # model calls (compare/search/add) running at once; the rest wait in the queue
    queue_size: int = 64  # requests waiting in the queue before new ones are told it is full

    @property
    def max_zip_bytes(self) -> int:
        return self.max_zip_mb * MIB

    @property
    def max_image_bytes(self) -> int:
        return self.max_image_mb * MIB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: int | None) -> Limits:
        """Defaults, then REID_<FIELD> variables, then non-None keyword overrides (the command line)."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f"REID_{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"REID_{f.name.upper()}={raw!r}: expected a whole number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        limits = replace(cls(), **values)
        bad = [f.name for f in fields(cls) if getattr(limits, f.name) < 1]
        if bad:
            raise ValueError(f"limit {bad[0]} must be at least 1")
        return limits
