"""One request's plumbing, for every tab: who asks (session key, client address), what they uploaded (parsed
and checked by our rules), their place in the fair lane, and a user's mistake said in one line.

Events run with preprocess=False, so every upload reaches a handler as it came (a dropped file, a clicked example
or an API call alike) and is judged here, in our words, never by Gradio's decoder.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from reid_core import GalleryError, ImageError, Limits, read_image

from .fair import Busy, FairLane
from .params import ParamError, text

log = logging.getLogger("reid.app")
LOCAL = "local"  # the session of direct calls (no request): remote sessions are prefixed, so none can choose it
RAW = {"preprocess": False}  # an event's uploads reach its handler as they came (see above)
EXPECTED = (Busy, ParamError, GalleryError, ImageError)  # failures a user is told in one line


def user_error(message: str) -> gr.Error:
    """A mistake of the user's (an empty input, an unreadable upload, a bad parameter): one line in the server
    log, not a traceback; tracebacks are for real faults. The message is shown as text, never as markup."""
    log.info("user error: %s", message)
    return gr.Error(plain(message), print_exception=False)


def plain(message: str) -> str:
    """A message with user strings in it, for a toast (which renders HTML): shown as the characters it is."""
    return html.escape(message, quote=False)


def note(e: Exception) -> str:
    """A user's mistake said in the note beside the input it concerns (logged in one line, shown as text)."""
    log.info("user error: %s", e)
    return f"⚠️ {text(str(e))}"


def upload(payload: Any) -> tuple[str, str] | None:
    """(server path, the user's own file name) of an upload; None when there is none."""
    if not payload:
        return None
    if isinstance(payload, (str, Path)):
        return str(payload), Path(payload).name
    if not isinstance(payload, dict) and not hasattr(payload, "path"):
        raise ParamError(f"an upload must be a file, not {type(payload).__name__}")
    get = payload.get if isinstance(payload, dict) else lambda k: getattr(payload, k, None)
    path, name = get("path"), get("orig_name")
    if not isinstance(path, str) or not isinstance(name, (str, type(None))):
        raise ParamError("an upload must be a file")
    return (path, name or Path(path).name) if path else None


def uploads(files: Any, most: int) -> list[tuple[str, str]]:
    """Several uploads (a list of at most `most`)."""
    if files is None:
        return []
    if not isinstance(files, list) or len(files) > most:
        raise ParamError(f"files must be a list of at most {most:,} uploads")
    return [u for u in map(upload, files) if u]


def read_upload(payload: Any, what: str, limits: Limits) -> tuple[Image.Image, str]:
    """(decoded image, the user's file name) of an upload; ImageError with one line naming it if unusable.
    A JPEG is decoded reduced: a crop never needs more than 512 x 1024 pixels."""
    got = upload(payload)
    if got is None:
        raise ImageError(f"Upload {what}.")
    path, name = got
    return read_image(path, name, limits, reduce=(512, 1024)), name


def session_key(request: gr.Request | None) -> str:
    """Whose gallery a call is about: its browser session (prefixed, so no client can name another's key or
    the direct calls' 'local'); direct calls (no request) share 'local'."""
    if request is None:
        return LOCAL
    session = getattr(request, "session_hash", None)
    if not isinstance(session, str) or not session:
        raise user_error("No browser session: reload the page.")
    return f"remote:{session}"


def client_of(request: gr.Request | None, behind_proxy: bool) -> str:
    """Who is asking: the client's address (the one the proxy saw when behind one: the last X-Forwarded-For
    entry, which a client cannot forge). Bounds per client use it; sessions are too cheap to make."""
    if request is None:
        return LOCAL
    if behind_proxy:
        forwarded = (request.headers or {}).get("x-forwarded-for", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


@contextmanager
def work(lane: FairLane, request: gr.Request | None, behind_proxy: bool) -> Iterator[Callable[[], Any]]:
    """This client's place in the fair lane for one request (`turn()` around each unit of model work); every
    expected failure inside becomes one line for the user."""
    try:
        with lane.request(client_of(request, behind_proxy), session_key(request)) as turn:
            yield turn
    except EXPECTED as e:
        raise user_error(str(e)) from e
