"""What every tab shares: the settings, the model (or why there is none), the fair lane, the galleries' sessions
and the output pictures. Each tab's handlers receive one Host; none holds state of its own but its sessions."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import gradio as gr
from PIL import Image

from reid_core import ImageError, Limits, ReID, ServerLimits, atomic_write

from . import requests
from .fair import FairLane
from .sessions import Sessions

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples" / "people"


class HostSettings(Protocol):
    """What the tabs read of app.Settings."""

    weights: Path
    data_dir: Path
    runs_dir: Path
    limits: Limits
    server: ServerLimits
    allow_pickle: bool
    shared_gallery: bool
    operator_token: str
    behind_proxy: bool


def load_reid(weights: Path, allow_pickle: bool = False) -> tuple[ReID | None, str]:
    """The model, or None and a one-line reason: the app must still start so it can show the reason."""
    try:
        return ReID.load(weights, device="cpu", allow_pickle=allow_pickle, engine=os.environ.get("REID_ENGINE"),
                         cache_dir=os.environ.get("REID_CACHE_DIR")), ""
    except (OSError, ValueError, RuntimeError) as e:  # WeightsError is a ValueError
        reason = str(e) if str(weights) in str(e) else f"{weights}: {e}"  # WeightsError names the file itself
        return None, f"Could not load weights: {reason}"


class PictureFiles:
    """Output pictures handed to Gradio as files, named by their bytes' hash and written atomically. Gradio
    caches a PIL output by rewriting one file in place on every request, so users getting the same picture
    (a gallery tile) truncated each other's (the load test's only errors); a file it copies into its cache
    atomically. Files unused for an hour are deleted."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="reid-pictures-"))
        self._swept = time.monotonic()

    def __call__(self, img: Image.Image) -> str:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        data = buf.getvalue()
        path = self.folder / f"{hashlib.blake2b(data, digest_size=12).hexdigest()}.png"
        if not path.exists():
            atomic_write(path, lambda tmp: tmp.write_bytes(data))
        os.utime(path)
        self._sweep()
        return str(path)

    def _sweep(self) -> None:
        if time.monotonic() - self._swept > 60:
            self._swept = time.monotonic()
            for old in self.folder.glob("*.png"):
                if time.time() - old.stat().st_mtime > 3600:
                    old.unlink(missing_ok=True)


class Host:
    """The app's shared state; the tabs' handlers call it for the model, the lane and uploads."""

    def __init__(self, settings: HostSettings):
        self.settings = settings
        self.reid, self.error = load_reid(settings.weights, settings.allow_pickle)
        self.picture_file = PictureFiles()
        self.lane = FairLane(settings.server.concurrency, settings.server.session_jobs, settings.server.client_jobs)
        self.sessions = None if self.reid is None else Sessions(  # the Search tab's galleries
            settings.data_dir, lambda path: self.reid.gallery(path, settings.limits), settings.server,
            settings.shared_gallery)

    @property
    def model_events(self) -> dict[str, Any]:
        """Every model event shares one pool of workers, which wait in the fair lane for their turn (fair.py)."""
        return {"concurrency_id": "model", "concurrency_limit": self.settings.server.workers}

    def require_model(self) -> ReID:
        if self.reid is None:
            raise requests.user_error(self.error)
        return self.reid

    def work(self, request: gr.Request | None) -> AbstractContextManager[Callable[[], Any]]:
        """This client's place in the fair lane for one request (requests.work)."""
        return requests.work(self.lane, request, self.settings.behind_proxy)

    def read_upload(self, payload: Any, what: str) -> tuple[Image.Image, str]:
        return requests.read_upload(payload, what, self.settings.limits)

    def image(self, payload: Any, what: str) -> tuple[Image.Image, str]:
        """read_upload for a handler whose caller gets a Gradio error (the API, Search)."""
        try:
            return self.read_upload(payload, what)
        except ImageError as e:
            raise requests.user_error(str(e)) from e

    def checked_input(self, payload: Any, request: gr.Request | None = None) -> tuple[Any, Any]:
        """(the image input, its note) when an input changes: an unreadable upload is removed at once (no broken
        image) and its note says why; a usable one clears the note. Cleared (None): the note stays, so the reason
        a file was removed is still there to read."""
        if requests.upload(payload) is None:
            return gr.skip(), gr.skip()
        with self.work(request) as turn, turn():
            try:
                self.read_upload(payload, "")
            except ImageError as e:
                return None, requests.note(e)
        return gr.skip(), ""
