"""Every resource bound in one place: `Limits`, what one input may cost (an upload, a zip, an image, a request's
pixels, a log), and `ServerLimits`, what the server shares among visitors (sessions, memory, disk, workers).

A public demo gets hostile uploads (zip bombs, decompression bombs, 100k-file archives) and hostile visitors
(floods of sessions, queues filled by one client); each bound caps memory, disk or CPU before the work starts.
Defaults suit a small demo on 2 CPU cores; every field can be set by an environment variable (REID_ + the field
name in capitals, e.g. REID_MAX_UPLOAD_MB=50), read by the entry point (`from_env(os.environ)`), or by the
app's command line (--max-upload-mb 50).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

MIB = 2**20
T = TypeVar("T")


OFF_AT_ZERO = ("self_train_jobs",)  # bounds whose 0 turns a feature off; every other bound is at least 1


def _from_env(cls: type[T], env: Mapping[str, str], overrides: Mapping[str, int | None]) -> T:
    """Defaults, then REID_<FIELD> variables, then non-None keyword overrides (the command line); every
    bound a whole number of at least 1."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        raw = env.get(f"REID_{f.name.upper()}")
        if raw is not None:
            try:
                values[f.name] = int(raw)
            except ValueError:
                raise ValueError(f"REID_{f.name.upper()}={raw!r}: expected a whole number") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    out = replace(cls(), **values)
    bad = [f.name for f in fields(cls) if getattr(out, f.name) < (f.name not in OFF_AT_ZERO)]  # type: ignore[arg-type]
    if bad:
        raise ValueError(f"limit {bad[0]} must be at least {int(bad[0] not in OFF_AT_ZERO)}")
    return out


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
    max_request_pixels: int = 250_000_000  # decoded pixels per request (~8 s of PNG decoding here); JPEGs count reduced
    max_log_rows: int = 200_000  # rows of an uploaded training log read for the curves; the rest is cut, with a note

    @property
    def max_zip_bytes(self) -> int:
        return self.max_zip_mb * MIB

    @property
    def max_image_bytes(self) -> int:
        return self.max_image_mb * MIB

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: int | None) -> Limits:
        return _from_env(cls, env, overrides)


@dataclass(frozen=True)
class ServerLimits:
    """What a server shares among its visitors: each visitor's share and the total, so no one can take it all."""

    session_minutes: int = 60  # a private gallery is deleted this long after its session last used it
    max_sessions: int = 200  # private galleries kept at once; past it the least recently used idle one goes
    client_sessions: int = 8  # private galleries one client (address) keeps; past it its own oldest goes
    session_jobs: int = 2  # requests one browser session may have running or waiting; more are refused at once
    client_jobs: int = 8  # the same for one client (address) over all its sessions: half the workers
    max_adapted: int = 8  # sessions holding a model adapted to their gallery at once (~14 MB each for Lite0)
    client_adapted: int = 2  # of those, held by one client (address): below max_adapted, so one cannot take all
    adapt_images: int = 500  # gallery crops an "Adapt to this gallery" reads (500 did as well as 7,060 on CUHK03)
    memory_mb: int = 1024  # in-memory search indexes and adapted models, all sessions together
    disk_mb: int = 4096  # gallery files, all sessions together
    self_train_jobs: int = 1  # self-training jobs in the background at once, both tabs (one a client); 0: off, as on a
    # public Space unless its operator sets REID_SELF_TRAIN_JOBS (minutes of CPU each)
    self_train_images: int = 2000  # crops a self-training job reads (its memory: ~60 KB each; Videos: whole tracklets)
    video_sessions: int = 50  # the Videos tab's private galleries (tracklets), a budget of their own beside Search's
    video_client_sessions: int = 2  # the same for one client (address)
    video_memory_mb: int = 256  # the Videos tab's in-memory indexes, all sessions together
    video_disk_mb: int = 1024  # the Videos tab's gallery files, all sessions together
    concurrency: int = 1  # units of model work (a decode, a batch, a compare) running at once, taken in turn
    workers: int = 16  # requests admitted to wait for the model; each client has at most client_jobs of them
    queue_size: int = 256  # requests waiting for a worker before new ones are told the queue is full

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: int | None) -> ServerLimits:
        return _from_env(cls, env, overrides)

    def for_videos(self) -> ServerLimits:
        """The bounds the Videos tab's galleries live within: their own places, memory and disk, so the two tabs
        together stay within the sum of both budgets and neither can take the other's."""
        return replace(self, max_sessions=self.video_sessions, client_sessions=self.video_client_sessions,
                       memory_mb=self.video_memory_mb, disk_mb=self.video_disk_mb)
