"""Gradio demo over reid_core.ReID: compare two crops, search a gallery (each browser session its own, unless
--shared-gallery), watch training curves, inspect the model.

    python app.py --host 127.0.0.1 --port 7860 [--weights W] [--data-dir D] [--runs-dir R] [--share]
                  [--allow-pickle] [--max-upload-mb N --max-gallery N --concurrency N ...: see reid_core/limits.py]

Weights come from --weights, else $REID_WEIGHTS, else weights/model.safetensors. A missing or bad weights
file does not stop the app: the Model tab and every model-backed output say what is wrong. `demo` is built
on first access (PEP 562), so `import app` is cheap and `python app.py --weights X` loads the model once.
Named API endpoints for gradio_client: /compare, /search, /add_to_gallery, /clear_gallery, /adapt_gallery,
/undo_adapt, /log_curves.
Every upload is checked against Limits (size, pixels, zip members and bytes, gallery size) before any work,
and nothing is written outside the data folder (zips are read in memory, never extracted).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import io
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from reid_core import (
    RERANK_POOL,
    WEIGHTS_HELP,
    Gallery,
    GalleryError,
    ImageError,
    Limits,
    Match,
    ReID,
    ServerLimits,
    atomic_write,
    framed,
    parse_identity,
    parts_picture,
    person_warning,
    plots,
    ranking_ap,
    read_image,
    resolve_weights,
)
from space import params
from space.fair import Busy, FairLane
from space.params import ParamError, text
from space.sessions import Sessions

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples" / "people"
RESULT_COLUMNS = ["rank", "name", "cosine", "match"]
MODEL_FIELDS = {"backbone": "Backbone", "engine": "Engine", "flip": "Test-time flip", "input": "Input size (h×w)",
                "embed_dim": "Embedding dimension",
                "pair_threshold": "Same-person threshold (pair head score)", "cos_threshold": "Cosine threshold",
                "train_data": "Training data", "train_images": "Training images", "train_ids": "Training identities",
                "loss": "Loss", "epochs": "Epochs", "train_seconds": "Training time (s)"}  # ReID.info keys, in order
METRIC_LABELS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP",
                 "mAP_official": "mAP (official trapezoid AP)", "mINP": "mINP",
                 "flip_rank1": "Rank-1 with flip test", "flip_mAP": "mAP with flip test",
                 "rerank_rank1": "Rank-1 re-ranked", "rerank_mAP": "mAP re-ranked",
                 "pair_auc": "Pair head AUC (held-out pairs)",
                 "pair_accuracy": "Pair accuracy at the calibrated threshold (held-out pairs)"}
EXAMPLE_PAIRS = [("person-A_c1.png", "person-A_c2.png"), ("person-A_c1.png", "person-B_c1.png"),
                 ("person-D_c3.png", "person-D_c2.png"), ("person-C_c1.png", "person-F_c3.png")]
EXAMPLE_QUERIES = ["person-A_c1.png", "person-D_c2.png"]
SHIPPED_LOG = "shipped weights (train_log.csv)"
MIN_ADAPT_IMAGES = 20  # BatchNorm statistics from fewer crops than this are noise
MAX_K = 50  # Search's top k: the slider's range, and what the API takes
LOCAL = "local"  # the session of direct calls (no request): remote sessions are prefixed, so none can choose it


@dataclass(frozen=True)
class Settings:
    weights: Path
    data_dir: Path
    runs_dir: Path
    limits: Limits = field(default_factory=Limits)
    server: ServerLimits = field(default_factory=ServerLimits)
    allow_pickle: bool = False  # also read a trusted .pth state dict (tensors only)
    shared_gallery: bool = False  # one gallery for every visitor, kept until cleared (default: one per session)
    operator_token: str = field(default="", repr=False)  # clears the shared gallery; empty: nobody can
    behind_proxy: bool = False  # a client's address is the one the proxy saw (last X-Forwarded-For entry)

    @classmethod
    def resolve(cls, weights: str | None = None, data_dir: str | None = None, runs_dir: str | None = None,
                allow_pickle: bool = False, shared_gallery: bool = False, **bounds: int | None) -> Settings:
        """Command line first, then environment, then the defaults a Hugging Face Space uses. The operator
        token comes from $REID_OPERATOR_TOKEN only (a command line shows in `ps`). On a Space ($SPACE_ID) the
        app sits behind Hugging Face's proxy."""
        env = os.environ
        shared = shared_gallery or env.get("REID_SHARED_GALLERY", "").lower() in ("1", "true", "yes")
        limits = Limits.from_env(env, **{f.name: bounds.get(f.name) for f in fields(Limits)})
        server = ServerLimits.from_env(env, **{f.name: bounds.get(f.name) for f in fields(ServerLimits)})
        return cls(resolve_weights(weights or env.get("REID_WEIGHTS")),
                   Path(data_dir or env.get("REID_DATA_DIR") or ROOT / "gallery_store"),
                   Path(runs_dir or env.get("REID_RUNS_DIR") or ROOT / "runs"),
                   limits, server, allow_pickle, shared, env.get("REID_OPERATOR_TOKEN", ""), bool(env.get("SPACE_ID")))


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


def identity(name: str) -> tuple[int | None, int | None]:
    return parse_identity(name) or (None, None)


def shown_id(name: str) -> str:
    """The id as the name writes it (`0001`, `person-A`), not its numeric code."""
    return Path(name).name.split("_c")[0]


def query_ap(name: str, ranked: list[Match]) -> str:
    """The query's AP under the Market-1501 protocol when file names carry ids, else a short note."""
    pid, cam = identity(name)
    if pid is None:
        return "The query's name carries no id (`0001_c1...` or `NAME_c1...`), so matches are not marked."
    ap = ranking_ap(pid, cam, [m.score for m in ranked], [-1 if m.pid is None else m.pid for m in ranked],
                    [-1 if m.camid is None else m.camid for m in ranked])
    if ap is None:
        return (f"Query {text(shown_id(name))}, camera {cam}: no image of this id from another camera in the "
                "gallery, so AP is undefined.")
    return (f"Query {text(shown_id(name))}, camera {cam}: **AP = {ap:.3f}** over {len(ranked)} gallery images "
            "(same-camera images of the same id are ignored, as in Market-1501).")


# --- the app --------------------------------------------------------------------------------------------------
log = logging.getLogger("reid.app")
CSS = """
#results .grid-wrap { min-height: 0 !important; max-height: none !important; overflow: visible !important; }
#results .grid-container { grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)) !important;
                           grid-template-rows: none !important; grid-auto-rows: auto !important; }
#results .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex !important;
                           flex-direction: column; }
#results .thumbnail-item > img { aspect-ratio: 1 / 2; height: auto !important; }
#results .caption-label { position: static !important; max-width: 100% !important; border: none !important;
                          text-align: center; background: none !important; }
#results-table table { font-size: var(--text-sm); }
#log-file .wrap { min-height: 0 !important; padding-top: 34px !important; }
.input-note p { color: var(--error-text-color, #b91c1c); }
"""  # result tiles: as many columns as fit (3 on a phone, 5-6 on a desktop), each picture whole at the crop's 1:2
# shape with its rank and score under it, the grid as tall as its tiles (Gradio's gallery is a fixed-height box
# with captions over the pictures); the results table in smaller type, so every column fits a phone; the log
# upload's prompt below its label (Gradio centres a 240 px prompt in the box, under the label)


def user_error(message: str) -> gr.Error:
    """A mistake of the user's (an empty input, an unreadable upload, a bad parameter): one line in the server
    log, not a traceback; tracebacks are for real faults. The message is shown as text, never as markup."""
    log.info("user error: %s", message)
    return gr.Error(plain(message), print_exception=False)


def plain(message: str) -> str:
    """A message with user strings in it, for a toast (which renders HTML): shown as the characters it is."""
    return html.escape(message, quote=False)


def upload(payload: Any) -> tuple[str, str] | None:
    """(server path, the user's own file name) of an upload. Events run with preprocess=False, so every
    upload reaches a handler as it came (a dropped file, a clicked example or an API call alike) and is
    checked there, by our rules and in our words."""
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


def no_results() -> tuple[list, pd.DataFrame, str]:
    """Search's outputs emptied: tiles, table, summary (results scored by another model or gallery are stale)."""
    return [], pd.DataFrame(columns=RESULT_COLUMNS), ""


class ReIDApp:
    """Every handler the UI and API call; holds the model and gallery so build_demo is layout only."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.reid, self.error = load_reid(settings.weights, settings.allow_pickle)
        self.picture_file = PictureFiles()
        self.lane = FairLane(settings.server.concurrency, settings.server.session_jobs, settings.server.client_jobs)
        self.sessions = None if self.reid is None else Sessions(
            settings.data_dir, lambda path: self.reid.gallery(path, settings.limits), settings.server,
            settings.shared_gallery)

    def require_model(self) -> ReID:
        if self.reid is None:
            raise user_error(self.error)
        return self.reid

    @contextmanager
    def work(self, request: gr.Request | None) -> Iterator[Callable[[], Any]]:
        """This client's place in the fair lane for one request (`turn()` around each unit of model work);
        every expected failure inside becomes one line for the user."""
        try:
            with self.lane.request(client_of(request, self.settings.behind_proxy), session_key(request)) as turn:
                yield turn
        except (Busy, ParamError, GalleryError, ImageError) as e:
            raise user_error(str(e)) from e

    @contextmanager
    def gallery(self, request: gr.Request | None, create: bool = False) -> Iterator[Gallery | None]:
        """This browser session's gallery (or the shared one) while the block runs; None when it has none and
        `create` is off (only an add creates one)."""
        self.require_model()
        try:
            with self.sessions.use(session_key(request), client_of(request, self.settings.behind_proxy),
                                   create) as g:
                yield g
        except GalleryError as e:
            raise user_error(str(e)) from e

    def own_gallery(self, request: gr.Request | None = None) -> Gallery | None:
        """This session's gallery handle, or None when it has none (notebooks and tests)."""
        with self.gallery(request) as g:
            return g

    def read_upload(self, payload: Any, what: str) -> tuple[Image.Image, str]:
        """(decoded image, the user's file name) of an upload; ImageError with one line naming it if unusable.
        A JPEG is decoded reduced: a crop never needs more than 512 x 1024 pixels."""
        got = upload(payload)
        if got is None:
            raise ImageError(f"Upload {what}.")
        path, name = got
        return read_image(path, name, self.settings.limits, reduce=(512, 1024)), name

    def image(self, payload: Any, what: str) -> tuple[Image.Image, str]:
        """read_upload for a handler whose caller gets a Gradio error (the API, Search)."""
        try:
            return self.read_upload(payload, what)
        except ImageError as e:
            raise user_error(str(e)) from e

    def compare(self, a: Any, b: Any, request: gr.Request | None = None) -> tuple[float, str, float, str]:
        """(probability, verdict, cosine, parts picture) for two crops: the /compare endpoint, whose caller gets
        a one-line error for a missing or unusable image."""
        self.require_model()
        with self.work(request) as turn, turn():
            (ia, _), (ib, _) = self.image(a, "the first image"), self.image(b, "the second image")
            return self.explained(ia, ib)

    def explained(self, ia: Image.Image, ib: Image.Image) -> tuple[float, str, float, str]:
        """One backbone pass over both crops (ReID.compare_parts): the verdict and the stripe picture saying why."""
        c, parts = self.reid.compare_parts(ia, ib)
        op = "≥" if c.same else "<"
        if self.reid.calibration is not None:  # Platt-calibrated on held-out pairs: a probability, cut at 50 %
            verdict = (f"{'Same person' if c.same else 'Different people'}: probability {c.probability:.1%} {op} "
                       f"{c.threshold:.0%}")
        else:  # the pair head's raw output is not a probability; say so rather than "19 % ... same person"
            verdict = (f"{'Same person' if c.same else 'Different people'}: pair score {c.probability:.3f} {op} "
                       f"threshold {c.threshold:.3f} (the score that best split same from different on held-out "
                       "pairs; a score, not a probability)")
        doubts = [f"{who} {why}" for who, img in (("Person A", ia), ("Person B", ib)) if (why := person_warning(img))]
        if doubts:
            verdict += ". Warning: " + "; ".join(doubts) + ", so this verdict means little."
        return round(c.probability, 4), verdict, round(c.cosine, 4), self.picture_file(parts_picture(ia, ib, parts))

    def compare_view(self, a: Any, b: Any, note_a: str = "", note_b: str = "", request: gr.Request | None = None,
                     ) -> tuple[Any, ...]:
        """The Compare button: compare's outputs, then a note under each input. A user's mistake (no image, an
        unreadable one) is said in the note of the input it concerns and stays there until that input changes
        (an input emptied because its file was unreadable keeps saying why); the outputs are emptied (no stale
        verdict, no error badge on them, no toast that closes by itself)."""
        if self.reid is None:
            return None, f"⚠️ {self.error}", None, None, "", ""
        with self.work(request) as turn, turn():
            crops, notes = [], []
            for payload, who, note in ((a, "Person A", note_a), (b, "Person B", note_b)):
                try:
                    crops.append(self.read_upload(payload, f"an image of {who}")[0])
                    notes.append("")
                except ImageError as e:
                    log.info("user error: %s", e)
                    kept = isinstance(note, str) and len(note) < 1000 and upload(payload) is None
                    notes.append(note if note and kept else f"⚠️ {text(str(e))}")
            if any(notes):
                return None, "", None, None, *notes
            return *self.explained(*crops), "", ""

    def compare_input(self, payload: Any, request: gr.Request | None = None) -> tuple[Any, ...]:
        """A Compare input changed: the old verdict goes; an unreadable upload is removed at once (no broken
        image) and its note says why; a usable one clears the note. Cleared (None): the note stays, so the reason
        a file was removed is still there to read."""
        cleared = (None, "", None, None)
        if upload(payload) is None:
            return gr.skip(), gr.skip(), *cleared
        with self.work(request) as turn, turn():
            try:
                self.read_upload(payload, "")
            except ImageError as e:
                log.info("user error: %s", e)
                return None, f"⚠️ {text(str(e))}", *cleared
        return gr.skip(), "", *cleared

    def gallery_summary(self, request: gr.Request | None = None) -> str:
        """What this visitor's gallery holds (nothing is created to say so), and why it went if it did."""
        if self.sessions is None:
            return f"⚠️ {self.error}"
        notice = self.sessions.notice(session_key(request))
        with self.gallery(request) as g:
            n, message = (len(g), g.message) if g is not None else (0, "")
        if self.settings.shared_gallery:
            out = f"Shared gallery: **{n}** image{'s' * (n != 1)} (everyone using this app sees and searches it)."
        else:
            out = (f"Your private gallery: **{n}** image{'s' * (n != 1)}. Only this browser session sees it; it "
                   f"is deleted {self.settings.server.session_minutes} min after you last use it.")
        return "\n\n".join(t for t in (f"⚠️ {notice}" if notice else "", out, message) if t)

    def add_to_gallery(self, files: Any, request: gr.Request | None = None,
                       progress: gr.Progress = gr.Progress()) -> str:
        try:
            got = uploads(files, self.settings.limits.max_files)
        except ParamError as e:
            raise user_error(str(e)) from e
        if not got:
            raise user_error("Choose images or a .zip of images to add.")
        self.require_model()
        try:
            self.sessions.make_room_on_disk(session_key(request))
        except GalleryError as e:
            raise user_error(str(e)) from e
        with self.work(request) as turn, self.gallery(request, create=True) as gallery:
            report = gallery.add_files([p for p, _ in got], [n for _, n in got],
                                       lambda done, total: progress((done, total), desc="Adding images",
                                                                    unit="images"), turn=turn)
        n = report.added
        out = f"Added {n} image{'s' * (n != 1)}. " + self.gallery_summary(request)
        if report.skipped:
            gr.Warning(plain(f"Skipped {len(report.skipped)} file(s): {report.skipped[0]}"
                                   + (" …" if len(report.skipped) > 1 else "")))
        if report.skipped or report.warnings:
            out += "\n\n" + report.describe(escape=text)
        return out

    def add_examples(self, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()) -> str:
        return self.add_to_gallery([str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))], request, progress)

    def clear_gallery(self, token: Any = None, request: gr.Request | None = None,
                      ) -> tuple[str, list, pd.DataFrame, str]:
        try:
            token = params.short_text(token, "token")
        except ParamError as e:
            raise user_error(str(e)) from e
        if self.settings.shared_gallery:
            if not self.settings.operator_token:
                raise user_error("Clearing the shared gallery is off: the operator turns it on with "
                                 "REID_OPERATOR_TOKEN.")
            if not hmac.compare_digest(token.encode(), self.settings.operator_token.encode()):
                raise user_error("Wrong operator token: only the operator can clear the shared gallery.")
        with self.gallery(request) as gallery:
            if gallery is not None:
                gallery.clear()
        return self.gallery_summary(request), *no_results()

    def adapt_gallery(self, request: gr.Request | None = None, progress: gr.Progress = gr.Progress(),
                      ) -> tuple[str, list, pd.DataFrame, str]:
        """Adapt to this gallery: BatchNorm statistics from the visitor's own crops (no labels), a copy of the
        model private to the session, the gallery re-embedded with it; Search then uses it. Clears the results
        (they were scored by the other model)."""
        reid = self.require_model()
        if self.settings.shared_gallery:
            raise user_error("Adapting would change the shared gallery for everyone; the operator can adapt the "
                             "model instead (python -m reid_core adapt).")
        with self.work(request) as turn, self.gallery(request) as gallery:
            rows = [] if gallery is None else gallery.entries()
            if gallery is not None and gallery.weights_id != reid.embedding_id:
                return "Already adapted to this gallery. " + self.gallery_summary(request), *no_results()
            if len(rows) < MIN_ADAPT_IMAGES:
                raise user_error(f"Add at least {MIN_ADAPT_IMAGES} crops from your cameras first (the gallery has "
                                 f"{len(rows)}): the statistics come from them.")
            if why := self.sessions.adapt_refusal(session_key(request)):  # before any work; reopen takes the place
                raise user_error(why)
            t0 = time.perf_counter()
            chosen = sorted(random.Random(0).sample(range(len(rows)),
                                                    min(len(rows), self.settings.server.adapt_images)))
            progress(0.1, desc=f"Reading {len(chosen)} of your crops")
            pictures = [gallery.picture(rows[i]["id"]) for i in chosen]
            progress(0.3, desc="BatchNorm statistics")
            adapted = reid.bn_adapted(pictures, engine="fp32", turn=turn)  # fp32: no ONNX export per visitor
            t1 = time.perf_counter()
            progress(0.6, desc="Re-embedding the gallery")
            size = sum(t.nbytes for t in adapted.model.state_dict().values())
            self.sessions.reopen(session_key(request),  # re-embedded a batch per turn, as adds are
                                 lambda path: adapted.gallery(path, self.settings.limits, turn=turn), size)
        return (f"Adapted to your gallery: BatchNorm statistics from {len(pictures)} of your crops ({t1 - t0:.1f} s), "
                f"gallery re-embedded ({time.perf_counter() - t1:.1f} s). Search now uses this adapted model, "
                "private to you; Compare keeps the shared one. *Undo adaptation* goes back. "
                + self.gallery_summary(request)), *no_results()

    def undo_adapt(self, request: gr.Request | None = None) -> tuple[str, list, pd.DataFrame, str]:
        reid = self.require_model()
        with self.work(request) as turn, self.gallery(request) as gallery:
            if gallery is None or gallery.weights_id == reid.embedding_id:
                return "Not adapted: Search uses the shared model. " + self.gallery_summary(request), *no_results()
            self.sessions.reopen(session_key(request), lambda path: reid.gallery(path, self.settings.limits, turn=turn))
        return ("Back to the shared model: your gallery is re-embedded with it. " + self.gallery_summary(request),
                *no_results())

    def search(self, query: Any, k: Any = 10, rerank: Any = False, request: gr.Request | None = None,
               ) -> tuple[list[tuple[str, str]], pd.DataFrame, str]:
        """Top-k gallery images for a query: (gallery items, results table, AP/notes). The whole gallery is
        ranked (the AP needs every position); pictures come from the same snapshot as the ranking."""
        self.require_model()
        try:
            k, rerank = params.whole(k, "k", 1, MAX_K), params.flag(rerank, "rerank")
        except ParamError as e:
            raise user_error(str(e)) from e
        with self.work(request) as turn, self.gallery(request) as gallery:
            if gallery is None:
                notice = self.sessions.notice(session_key(request))
                return *no_results()[:2], (f"⚠️ {notice}" if notice else
                                           "The gallery is empty: add images (or a .zip) first.")
            with turn():
                img, name = self.image(query, "a query image")
                try:
                    # the gallery's own model embeds the query (this session's adapted one, after "Adapt")
                    ranked = gallery.search(gallery.embed([img]), None, rerank, pictures=k)
                except GalleryError as e:
                    raise user_error(f"{e}. Search without re-ranking." if rerank and "re-ranking" in str(e)
                                     else str(e)) from e
        if not ranked:
            return *no_results()[:2], "The gallery is empty: add images (or a .zip) first."
        qpid, _ = identity(name)
        items, rows = [], []
        for rank, m in enumerate(ranked[:k], start=1):
            ok = None if qpid is None or m.pid is None else m.pid == qpid
            mark = "" if ok is None else ("✓ " if ok else "✗ ")
            items.append((self.picture_file(framed(m.picture, ok)), f"{mark}#{rank} {m.score:.3f}"))
            rows.append([rank, m.name, round(m.score, 4), "" if ok is None else ("right" if ok else "wrong")])
        note = "\n\nRe-ranked (k-reciprocal): scores are 1 - the re-ranked distance, not cosines." if rerank else ""
        if why := person_warning(img):
            note += f"\n\n⚠️ The query {why}: its matches mean little."
        return items, pd.DataFrame(rows, columns=RESULT_COLUMNS), query_ap(name, ranked) + note

    # --- training curves -----------------------------------------------------------------------------------
    def logs(self) -> dict[str, Path]:
        """Runs under runs_dir, newest first, then the shipped weights' own training log."""
        found = dict(plots.list_runs(self.settings.runs_dir))
        shipped = self.settings.weights.with_name("train_log.csv")
        if shipped.is_file():
            found[SHIPPED_LOG] = shipped
        return found

    def run_choices(self) -> list[str]:
        return list(self.logs())

    def curves(self, runs: Any, log_upload: Any) -> tuple[go.Figure, ...]:
        """Four figures (losses, accuracy, lr, rank-1/mAP) for the chosen runs and/or an uploaded log; at most
        limits.max_log_rows rows of each, thinned to plots.MAX_POINTS points per line."""
        available = self.logs()
        try:
            logs = {r: available[r] for r in params.strings(runs, "runs") if r in available}
            if got := upload(log_upload):
                logs[f"upload: {got[1]}"] = Path(got[0])
        except ParamError as e:
            raise user_error(str(e)) from e
        frames, errors, notes = [], [], []
        recorded = (self.reid.info.get("metrics") if self.reid else None) or {}
        for name, path in logs.items():
            try:
                df = plots.read_log(path, self.settings.limits.max_log_rows)
            except plots.LogError as e:
                errors.append(text(str(e).replace(str(path), name)))
                continue
            if df.attrs.get("cut"):
                errors.append(f"{text(name)}: only its first {self.settings.limits.max_log_rows:,} rows are plotted.")
            if name == SHIPPED_LOG and (filled := plots.with_recorded(df, recorded)) is not df:
                df = filled  # trained without periodic evaluation: the figures `evaluate --record` kept instead
                shown = ", ".join(f"{METRIC_LABELS[c]} {100 * df[c].iloc[-1]:.1f} %" for c in plots.EVAL_COLUMNS
                                  if c in df.columns and pd.notna(df[c].iloc[-1]))
                notes.append(f"Shipped weights at epoch {df['epoch'].iloc[-1]:.0f}: {shown}, the figures recorded "
                             f"with them on {text(str(recorded.get('evaluated_on', 'their test set')))}.")
            frames.append(df.assign(run=name))
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "run"])
        if not logs:
            status = "No run selected: pick one above, or upload a log.csv written by train.py."
        else:
            status = f"Showing {len(frames)} of {len(logs)} log(s)." + "".join(f" {n}" for n in notes) + "".join(
                f"\n\n⚠️ {e}" for e in errors)
        return (*plots.figures(df).values(), status)

    def refresh_runs(self, selected: Any) -> gr.Dropdown:
        choices = self.run_choices()
        try:
            keep = [r for r in params.strings(selected, "runs") if r in choices]
        except ParamError as e:
            raise user_error(str(e)) from e
        return gr.Dropdown(choices=choices, value=keep or choices[:1])

    # --- model ---------------------------------------------------------------------------------------------
    def model_markdown(self) -> str:
        if self.reid is None:
            return f"### ⚠️ No model loaded\n\n{self.error}\n\nStart with `--weights FILE` or set `$REID_WEIGHTS`."
        info = {k: v for k, v in self.reid.info.items() if k not in ("metrics", "curves", "thresholds")}
        lines = [f"- **Weights**: `{self.settings.weights.name}`"]
        lines += [f"- **{label}**: {_fmt(key, info[key])}" for key, label in MODEL_FIELDS.items() if key in info]
        text = "### Model\n\n" + "\n".join(lines)
        metrics = self.reid.info.get("metrics") or {}
        shown = [(label, metrics[key]) for key, label in METRIC_LABELS.items() if key in metrics]
        if shown:
            text += ("\n\n### Evaluation\n\n" + (f"On {metrics['evaluated_on']}.\n\n" if "evaluated_on" in metrics
                                                   else "")
                     + "\n".join(f"- **{label}**: {100 * v:.1f} %" for label, v in shown))
        if adapted := info.pop("adapted", None):
            text += "\n\n" + adapted_markdown(adapted)
        rest = {k: v for k, v in info.items() if k not in MODEL_FIELDS}
        if rest:
            text += "\n\n### How it was made\n\n" + "\n".join(f"- **{k.replace('_', ' ')}**: {_fmt(k, v)}"
                                                              for k, v in rest.items())
        return text

    def model_figures(self) -> dict[str, go.Figure]:
        extra = self.reid.info if self.reid else {}
        return plots.model_figures(extra.get("curves"), extra.get("pair_threshold"))


def adapted_markdown(a: dict[str, Any]) -> str:
    """What `python -m reid_core adapt` recorded: source, target, method, and the figures before and after."""
    n = a.get("target_images")
    lines = [f"- **Adapted to**: `{a.get('target')}` ({f'{n:,}' if isinstance(n, int) else '?'} unlabeled crops, "
             f"{a.get('target_cameras') or 'unknown'} cameras)",
             f"- **Method**: {a.get('method')} ({float(a.get('seconds') or 0):.0f} s)",
             f"- **From**: `{Path(str(a.get('source_weights', '?'))).name}`"]
    src = a.get("source_metrics") or {}
    if {"rank1", "mAP"} <= set(src):
        lines.append(f"- **Source model on {src.get('evaluated_on', 'its test set')}**: Rank-1 "
                     f"{100 * src['rank1']:.1f} %, mAP {100 * src['mAP']:.1f} %")
    fig = a.get("figures") or {}
    b, f = fig.get("before") or {}, fig.get("after") or {}
    if {"rank1", "mAP"} <= set(b) & set(f):
        lines.append(f"- **On the target** ({fig.get('evaluated_on', '')}): Rank-1 {100 * b['rank1']:.1f} → "
                     f"{100 * f['rank1']:.1f} %, mAP {100 * b['mAP']:.1f} → {100 * f['mAP']:.1f} %")
    return "### Adapted to a new camera network\n\n" + "\n".join(lines)


def _fmt(key: str, v: Any) -> str:
    """Thresholds as plain numbers: a cosine and the pair head's raw score are not probabilities ("20.4 %" read
    as one)."""
    if isinstance(v, float):
        if "threshold" in key:
            return f"{v:.3f}"  # a cosine, or the pair head's raw score: neither is a probability
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return "; ".join(map(str, v))
    return f"`{v}`" if key.endswith("command") else str(v)


def build_demo(settings: Settings) -> gr.Blocks:
    """The four tabs; all behaviour lives in ReIDApp. Every event with an upload runs with preprocess=False,
    so the handler, not Gradio's decoder, judges the file (and a clicked example changes nothing)."""
    app = ReIDApp(settings)
    examples = {p.name: str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))}
    # every model event shares one pool of workers, which wait in the fair lane for their turn (space/fair.py)
    model = {"concurrency_id": "model", "concurrency_limit": settings.server.workers}
    raw = {"preprocess": False}

    def image(label: str, elem_id: str, height: int) -> gr.Image:
        return gr.Image(label=label, type="filepath", image_mode=None, height=height, elem_id=elem_id, min_width=140)

    with gr.Blocks(title="Person re-identification", delete_cache=(3600, 3600)) as demo:  # drop uploads after 1 h
        gr.Markdown("# Person re-identification\nIs it the same person? Who in the gallery is this person?")
        if app.error:
            gr.Markdown(f"⚠️ {app.error}")
        with gr.Tabs(overflow_behavior="wrap"):  # every tab in sight on a phone, not in a menu
            with gr.Tab("Compare"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=280):
                        with gr.Row():
                            with gr.Column(min_width=140):
                                img_a = image("Person A", "img-a", 300)
                                note_a = gr.Markdown(elem_id="note-a", elem_classes="input-note")
                            with gr.Column(min_width=140):
                                img_b = image("Person B", "img-b", 300)
                                note_b = gr.Markdown(elem_id="note-b", elem_classes="input-note")
                        compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                    with gr.Column(scale=2, min_width=280):
                        verdict = gr.Textbox(label="Verdict", elem_id="verdict", interactive=False, lines=2)
                        with gr.Row():
                            prob = gr.Number(label="Same-person probability" if app.reid and app.reid.calibration
                                             else "Same-person score (pair head)", precision=4, interactive=False,
                                             min_width=120)
                            cos = gr.Number(label="Cosine similarity", precision=4, interactive=False, min_width=120)
                        gr.Markdown("**Which parts match**: each bar says how alike the two crops are in one "
                                    "horizontal stripe, head to feet (cosine of the stripe's features).",
                                    elem_id="parts-help")
                        parts = gr.Image(label="Which parts match", show_label=False, type="filepath",
                                         interactive=False, buttons=[], height=240, elem_id="parts")
                pairs = [(a, b) for a, b in EXAMPLE_PAIRS if a in examples and b in examples]
                if pairs:
                    gr.Examples([[examples[a], examples[b]] for a, b in pairs], [img_a, img_b],
                                label="Synthetic example pairs (drawn, not real people)", elem_id="compare-examples")
                compare_out = [prob, verdict, cos, parts]
                compare_btn.click(app.compare_view, [img_a, img_b, note_a, note_b], [*compare_out, note_a, note_b],
                                  api_visibility="private", **model, **raw)
                # /compare for API clients, who get a one-line error instead of the notes (no button on the page)
                gr.Button(visible=False).click(app.compare, [img_a, img_b], compare_out, api_name="compare",
                                               **model, **raw)
                for img, note in ((img_a, note_a), (img_b, note_b)):  # a new input: no verdict of the old ones
                    img.change(app.compare_input, img, [img, note, *compare_out], api_visibility="private",
                               show_progress="hidden", **model, **raw)

            with gr.Tab("Search"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=280):
                        gallery_status = gr.Markdown(label="gallery_status", elem_id="gallery-status")
                        files = gr.File(label="Gallery images or a .zip", file_count="multiple",  # any type: each file
                                        elem_id="gallery-files", height=160)  # is checked, and refused, by name
                        with gr.Row():
                            add_btn = gr.Button("Add to gallery", variant="primary", elem_id="add-btn", min_width=120)
                            add_examples_btn = gr.Button("Add example people", elem_id="add-examples-btn",
                                                         min_width=120)
                        can_clear = not settings.shared_gallery or bool(settings.operator_token)
                        with gr.Row():
                            token = gr.Textbox(label="Operator token", type="password", elem_id="operator-token",
                                               visible=settings.shared_gallery and can_clear, scale=2)
                            clear_btn = gr.Button("Clear gallery", variant="stop", size="sm", visible=can_clear)
                        with gr.Row():
                            adapt_btn = gr.Button("Adapt to this gallery", elem_id="adapt-btn", size="sm",
                                                  visible=not settings.shared_gallery)
                            undo_btn = gr.Button("Undo adaptation", elem_id="undo-adapt-btn", size="sm",
                                                 visible=not settings.shared_gallery)
                        query = image("Query", "query", 260)
                        k = gr.Slider(1, 50, value=10, step=1, label="Top k")
                        rerank = gr.Checkbox(False, label=f"k-reciprocal re-ranking (galleries up to {RERANK_POOL:,})",
                                             elem_id="rerank")
                        search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
                    with gr.Column(scale=2, min_width=280):
                        summary = gr.Markdown(label="summary", elem_id="search-summary")
                        gr.Markdown("**Top matches** (green frame: same id, red: another id)")
                        results = gr.Gallery(show_label=False, columns=5, height="auto", object_fit="contain",
                                             elem_id="results", buttons=[])
                        table = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, label="Results", wrap=True,
                                             column_widths=["16%", "42%", "22%", "20%"], elem_id="results-table")
                queries = [n for n in EXAMPLE_QUERIES if n in examples]
                if queries:
                    gr.Examples([[examples[n]] for n in queries], [query], label="Example queries",
                                elem_id="search-examples")
                search_out = [results, table, summary]
                add_btn.click(app.add_to_gallery, files, gallery_status, api_name="add_to_gallery", **model, **raw)
                add_examples_btn.click(app.add_examples, None, gallery_status, api_visibility="private", **model)
                clear_btn.click(app.clear_gallery, token, [gallery_status, *search_out], api_name="clear_gallery",
                                **model)
                search_btn.click(app.search, [query, k, rerank], search_out, api_name="search", **model, **raw)
                adapt_btn.click(app.adapt_gallery, None, [gallery_status, *search_out], api_name="adapt_gallery",
                                **model)
                undo_btn.click(app.undo_adapt, None, [gallery_status, *search_out], api_name="undo_adapt", **model)
                query.change(no_results, None, search_out,
                             api_visibility="private")
                demo.load(app.gallery_summary, None, gallery_status, api_visibility="private")

            with gr.Tab("Training curves"):
                with gr.Row():
                    choices = app.run_choices()
                    runs = gr.Dropdown(choices=choices, value=choices[:1], multiselect=True, label="Runs", scale=3,
                                       elem_id="runs", min_width=200)
                    log_file = gr.File(label="…or upload a log.csv", file_types=[".csv"], scale=2, height=150,
                                       elem_id="log-file",
                                       min_width=200)
                    with gr.Column(scale=1, min_width=160):
                        refresh_btn = gr.Button("Refresh", elem_id="refresh-btn")
                        auto = gr.Checkbox(label="Auto-refresh every 15 s", value=False, elem_id="auto-refresh")
                curves_status = gr.Markdown(elem_id="curves-status")
                with gr.Row():
                    loss_plot = gr.Plot(label="Losses", min_width=300)
                    acc_plot = gr.Plot(label="Accuracy", min_width=300)
                with gr.Row():
                    lr_plot = gr.Plot(label="Learning rate", min_width=300)
                    eval_plot = gr.Plot(label="Rank-1 / mAP", min_width=300)
                timer = gr.Timer(15, active=False)
                plot_outputs = [loss_plot, acc_plot, lr_plot, eval_plot, curves_status]
                draw = {"fn": app.curves, "inputs": [runs, log_file], "outputs": plot_outputs,
                        "api_visibility": "private", "preprocess": False}
                refresh_btn.click(app.refresh_runs, runs, runs, api_visibility="private").then(**draw)
                runs.change(**draw)
                log_file.change(**{**draw, "api_visibility": "public"}, api_name="log_curves")
                timer.tick(**draw)
                auto.change(lambda on: gr.Timer(active=on), auto, timer, api_visibility="private")
                demo.load(**draw)

            with gr.Tab("Model"):
                gr.Markdown(app.model_markdown(), elem_id="model-info")
                figs = app.model_figures()
                with gr.Row():
                    gr.Plot(figs["scores"], label="Same/different scores", elem_id="model-scores", min_width=300)
                    gr.Plot(figs["roc"], label="ROC", elem_id="model-roc", min_width=300)
                gr.Plot(figs["cmc"], label="CMC", elem_id="model-cmc")
    demo.reid_app = app  # handy for tests and notebooks
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Person re-identification demo (Gradio).")
    ap.add_argument("--weights", help=WEIGHTS_HELP)
    ap.add_argument("--data-dir", help="the search gallery's folder (default: $REID_DATA_DIR, else gallery_store/)")
    ap.add_argument("--runs-dir", help="training runs to plot (default: $REID_RUNS_DIR, else runs/)")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    ap.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    ap.add_argument("--allow-pickle", action="store_true", help="also accept trusted .pth/.pt weights (tensors only)")
    ap.add_argument("--shared-gallery", action="store_true",
                    help="one gallery for every visitor, kept until cleared (default: a private gallery per browser "
                         "session; also $REID_SHARED_GALLERY=1). Clear then needs $REID_OPERATOR_TOKEN")
    lim = ap.add_argument_group("limits (default: $REID_<NAME>, else the README's table)")
    for f in (*fields(Limits), *fields(ServerLimits)):
        lim.add_argument(f"--{f.name.replace('_', '-')}", type=int, help=f"default {f.default}")
    return ap.parse_args(argv)


def launch(demo: gr.Blocks, host: str, port: int | None, share: bool = False, block: bool = True) -> str:
    """Start the server; returns its local URL. One place for queue and launch settings (tests use it too).

    Model calls share one pool of `server.workers` (see build_demo) whose units of work take turns in the fair
    lane, `server.concurrency` at a time, so memory holds that many units' tensors whatever the number of users;
    at most `server.queue_size` more requests wait, and later ones are told the queue is full."""
    settings = demo.reid_app.settings
    demo.queue(default_concurrency_limit=settings.server.concurrency, max_size=settings.server.queue_size)
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                            allowed_paths=[str(EXAMPLES_DIR)], max_file_size=settings.limits.max_upload_mb * 2**20,
                            show_error=True, quiet=not block, theme=gr.themes.Soft(), css=CSS)
    return url


def __getattr__(name: str) -> Any:
    """Module-level `demo` for Spaces and `gradio app.py`, built on first use with the default settings."""
    if name == "demo":
        globals()["demo"] = build_demo(Settings.resolve())
        return globals()["demo"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    try:
        settings = Settings.resolve(args.weights, args.data_dir, args.runs_dir, args.allow_pickle, args.shared_gallery,
                                    **{f.name: getattr(args, f.name) for f in (*fields(Limits), *fields(ServerLimits))})
    except ValueError as e:  # a bad REID_* limit
        raise SystemExit(f"error: {e}") from None
    launch(build_demo(settings), args.host, args.port, args.share)
