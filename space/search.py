"""The Search tab: each visitor's private gallery (or one shared), filled from crops or a .zip, searched with a
query crop (marked right/wrong and scored by AP when names carry ids), and adapted to the visitor's cameras.
Endpoints /search, /add_to_gallery, /clear_gallery, /adapt_gallery, /undo_adapt, /self_train, /self_train_status,
/cancel_self_train (the background job itself: self_train.py)."""

from __future__ import annotations

import hmac
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from reid_core import (
    MAX_K,
    RERANK_POOL,
    Gallery,
    GalleryError,
    ImageError,
    Match,
    framed,
    parse_identity,
    person_warning,
    ranking_ap,
)

from . import params, requests
from .compare import image_input
from .host import EXAMPLES_DIR, Host
from .params import ParamError, text
from .requests import RAW, client_of, plain, session_key, upload, uploads, user_error
from .self_train import MIN_SELF_TRAIN_IMAGES, SelfTraining, Source, gallery_crops
from .self_train_controls import SelfTrainControls, panel, wire

RESULT_COLUMNS = ["rank", "name", "cosine", "match"]
EXAMPLE_QUERIES = ["person-A_c1.png", "person-D_c2.png"]
MIN_ADAPT_IMAGES = 20  # BatchNorm statistics from fewer crops than this are noise


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


def no_results() -> tuple[list, pd.DataFrame, str]:
    """Search's outputs emptied: tiles, table, summary (results scored by another model or gallery are stale)."""
    return [], pd.DataFrame(columns=RESULT_COLUMNS), ""


class Search:
    """The tab's handlers (layout: build_search_tab). The host's settings, sessions, require_model and work are
    this object's own names, so the handlers read as they did in app.py."""

    def __init__(self, host: Host, training: SelfTraining | None = None):
        """`training`: the server's self-training jobs (shared with Videos; a new one when None)."""
        self.host, self.settings, self.sessions = host, host.settings, host.sessions
        self.require_model, self.work, self.picture_file = host.require_model, host.work, host.picture_file
        self.training = training or SelfTraining(host)
        self.source = Source("search", self.sessions, gallery_crops,
                             lambda reid, path, turn: reid.gallery(path, self.settings.limits, turn=turn),
                             "Search uses", "Compare keeps the shared model; *Undo adaptation* goes back.")
        self.self_training = SelfTrainControls(host, self.training, self.source, self.gallery, self._trained, 4,
                                               self._shared_refusal)

    def _shared_refusal(self) -> str:
        return ("Self-training would change the shared gallery for everyone; the operator can adapt the model "
                "instead (python -m reid_core adapt)." if self.settings.shared_gallery else "")

    def _trained(self, request: gr.Request | None, job: Any) -> tuple[Any, ...]:
        """Once a job has ended: the gallery's status, and results emptied when its model changed (stale)."""
        cleared = no_results() if job.state == "done" else (gr.skip(),) * 3
        return self.gallery_summary(request, opened=False), *cleared

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

    def search_input(self, payload: Any, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Search's query changed: the old results go, and the query is checked as Compare's inputs are."""
        return *self.host.checked_input(payload, request), *no_results()

    def gallery_summary(self, request: gr.Request | None = None, opened: bool = True) -> str:
        """What this visitor's gallery holds (nothing is created to say so), and why it went if it did.
        `opened`: also what opening it did (re-embedded for new weights); off where the caller says the state."""
        if self.sessions is None:
            return f"⚠️ {self.host.error}"
        notice = self.sessions.notice(session_key(request))
        with self.gallery(request) as g:
            n, message = (len(g), g.message) if g is not None else (0, "")
        if self.settings.shared_gallery:
            out = f"Shared gallery: **{n}** image{'s' * (n != 1)} (everyone using this app sees and searches it)."
        else:
            out = (f"Your private gallery: **{n}** image{'s' * (n != 1)}. Only this browser session sees it; it "
                   f"is deleted {self.settings.server.session_minutes} min after you last use it.")
        return "\n\n".join(t for t in (f"⚠️ {notice}" if notice else "", out, message if opened else "") if t)

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
        if skipped := report.skipped_lines():
            gr.Warning(plain(f"Skipped {skipped[0]}" + (" …" if len(skipped) > 1 else "")))
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
        self.self_training.stop(request)  # a self-training of these crops would outlive them
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
        self.self_training.stop(request)  # the visitor chose this model instead
        with self.work(request) as turn, self.gallery(request) as gallery:
            rows = [] if gallery is None else gallery.entries()
            if gallery is not None and gallery.weights_id != reid.embedding_id:
                return ("Search already uses a model adapted to your gallery. "
                        + self.gallery_summary(request, opened=False)), *no_results()
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
        return (f"Search uses a model adapted to your gallery, private to you (BatchNorm statistics from "
                f"{len(pictures)} of your crops in {t1 - t0:.1f} s, the gallery re-embedded in "
                f"{time.perf_counter() - t1:.1f} s); Compare keeps the shared one, and *Undo adaptation* goes back. "
                + self.gallery_summary(request, opened=False)), *no_results()

    def undo_adapt(self, request: gr.Request | None = None) -> tuple[str, list, pd.DataFrame, str]:
        reid = self.require_model()
        self.self_training.stop(request)  # its result would undo the undo
        with self.work(request) as turn, self.gallery(request) as gallery:
            if gallery is None or gallery.weights_id == reid.embedding_id:
                return ("Search uses the shared model (not adapted). " + self.gallery_summary(request, opened=False),
                        *no_results())
            self.sessions.reopen(session_key(request), lambda path: reid.gallery(path, self.settings.limits, turn=turn))
        return ("Search uses the shared model again, your gallery re-embedded with it. "
                + self.gallery_summary(request, opened=False), *no_results())

    def adapt_view(self, request: gr.Request | None = None, progress: gr.Progress = gr.Progress(),
                   ) -> tuple[Any, ...]:
        """The Adapt button: (its note, status, *Search's outputs). A refusal (too few crops, the server full) is
        said in the note beside the button and everything else is left as it was: no error badge on outputs
        that did nothing wrong, no toast that closes by itself."""
        try:
            return "", *self.adapt_gallery(request, progress)
        except gr.Error as e:
            return f"⚠️ {e.message}", gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def search_view(self, query: Any, k: Any = 10, rerank: Any = False, note: Any = "",
                    request: gr.Request | None = None) -> tuple[Any, ...]:
        """The Search button: search's outputs, then the query's note. No query, or an unreadable one, is said in
        the note under the query (kept while the input is still empty: it says why a file was removed) and the
        results are emptied, as Compare does."""
        self.require_model()
        with self.work(request) as turn, turn():
            try:
                self.host.read_upload(query, "a query image")
            except ImageError as e:
                said = requests.note(e)
                kept = isinstance(note, str) and 0 < len(note) < 1000 and upload(query) is None
                return *no_results(), note if kept else said
        return *self.search(query, k, rerank, request), ""

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
                img, name = self.host.image(query, "a query image")
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



def build_search_tab(search: Search, examples: dict[str, str], demo: gr.Blocks) -> None:
    """The tab's layout, inside the app's gr.Tabs; `examples`: example crops by file name."""
    settings, model = search.settings, search.host.model_events
    with gr.Tab("Search"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                gallery_status = gr.Markdown(label="gallery_status", elem_id="gallery-status")
                files = gr.File(label="Gallery images or a .zip", file_count="multiple",  # any type: each file
                                elem_id="gallery-files", height=160)  # is checked, and refused, by name
                with gr.Row():
                    add_btn = gr.Button("Add to gallery", variant="primary", elem_id="add-btn", min_width=120)
                    add_examples_btn = gr.Button("Add example people", elem_id="add-examples-btn", min_width=120)
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
                gr.Markdown(f"*Adapt* re-estimates the model's statistics from your own crops: it needs at "
                            f"least {MIN_ADAPT_IMAGES} in your gallery.", elem_id="adapt-help",
                            visible=not settings.shared_gallery)
                adapt_note = gr.Markdown(elem_id="adapt-note", elem_classes="input-note")
                can_train = settings.server.self_train_jobs > 0 and not settings.shared_gallery
                training = panel("this gallery", f"*Self-train* learns from your own crops in the background "
                                 f"(minutes; needs at least {MIN_SELF_TRAIN_IMAGES}); Search keeps working meanwhile.",
                                 can_train, "")
                query = image_input("Query", "query", 260)
                query_note = gr.Markdown(elem_id="query-note", elem_classes="input-note")
                k = gr.Slider(1, MAX_K, value=10, step=1, label="Top k")
                rerank = gr.Checkbox(False, label=f"k-reciprocal re-ranking (galleries up to {RERANK_POOL:,})",
                                     elem_id="rerank")
                search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
            with gr.Column(scale=2, min_width=280):
                summary = gr.Markdown(label="summary", elem_id="search-summary")
                gr.Markdown("**Top matches** (green frame: same id, red: another id)")
                results = gr.Gallery(show_label=False, columns=5, height="auto", object_fit="contain",
                                     elem_id="results", buttons=[])
                table = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, label="Results", wrap=True,
                                     column_widths=["16%", "42%", "22%", "20%"], elem_id="results-table",
                                     max_height=4000)  # every row on the page, no inner scroll box
        queries = [n for n in EXAMPLE_QUERIES if n in examples]
        if queries:
            gr.Examples([[examples[n]] for n in queries], [query], label="Example queries", elem_id="search-examples")
        search_out = [results, table, summary]
        # results of the gallery before an add are stale ("AP over 18 images" while it holds 58): they go
        add_btn.click(search.add_to_gallery, files, gallery_status, api_name="add_to_gallery", **model, **RAW
                      ).success(no_results, None, search_out, api_visibility="private")
        add_examples_btn.click(search.add_examples, None, gallery_status, api_visibility="private", **model
                               ).success(no_results, None, search_out, api_visibility="private")
        clear_btn.click(search.clear_gallery, token, [gallery_status, *search_out], api_name="clear_gallery", **model)
        search_btn.click(search.search_view, [query, k, rerank, query_note], [*search_out, query_note],
                         api_visibility="private", **model, **RAW)
        # /search and /adapt_gallery for API clients, who get a one-line error instead of the notes
        gr.Button(visible=False).click(search.search, [query, k, rerank], search_out, api_name="search",
                                       **model, **RAW)
        adapt_btn.click(search.adapt_view, None, [adapt_note, gallery_status, *search_out], api_visibility="private",
                        **model)
        gr.Button(visible=False).click(search.adapt_gallery, None, [gallery_status, *search_out],
                                       api_name="adapt_gallery", **model)
        undo_btn.click(search.undo_adapt, None, [gallery_status, *search_out], api_name="undo_adapt", **model
                       ).success(lambda: "", None, adapt_note, api_visibility="private")
        wire(training, search.self_training, [gallery_status, *search_out], "self_train", model)
        query.change(search.search_input, query, [query, query_note, *search_out], api_visibility="private",
                     show_progress="hidden", **model, **RAW)
        demo.load(search.gallery_summary, None, gallery_status, api_visibility="private")
