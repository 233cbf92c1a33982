"""A tab's *Self-train* and *Cancel* buttons and the timer that follows the job: the handlers and their layout, one
of each for every tab that self-trains (Search its gallery, Videos its tracklets; the jobs: self_train.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import gradio as gr

from reid_core import Gallery, GalleryError, ImageError

from .host import Host
from .requests import client_of, session_key, user_error
from .self_train import MIN_SELF_TRAIN_IMAGES, Job, SelfTraining, Source

OpenSession = Callable[[gr.Request | None], AbstractContextManager[Gallery | None]]


class SelfTrainControls:
    """The handlers. `open_session(request)`: the tab's gallery of this session (None: it has none); `ended(request,
    job)`: what the tab's other outputs show once a job has ended (its people or results, scored anew), `outputs`
    of them; `refuse()`: why this server never self-trains this tab ('' when it may); `empty`: what a session
    with nothing to train on is told."""

    def __init__(self, host: Host, training: SelfTraining, source: Source, open_session: OpenSession,
                 ended: Callable[[gr.Request | None, Job], tuple[Any, ...]], outputs: int,
                 refuse: Callable[[], str] = lambda: "",
                 empty: str = f"Add at least {MIN_SELF_TRAIN_IMAGES} crops from your cameras first."):
        self.host, self.training, self.source, self.open_session = host, training, source, open_session
        self.ended, self.outputs, self.refuse, self.empty = ended, outputs, refuse, empty

    def start(self, request: gr.Request | None = None) -> str:
        """Start self-training this session's crops in the background; returns its status at once."""
        reid = self.host.require_model()
        session, client = session_key(request), client_of(request, self.host.settings.behind_proxy)
        if why := self.refuse() or self.training.refusal(self.source, session, client):  # before a place in line
            raise user_error(why)
        with self.host.work(request) as turn:
            try:
                with self.open_session(request) as gallery:
                    if gallery is None:
                        raise GalleryError(self.empty)
                    job = self.training.start(self.source, session, client, gallery, reid, turn)
            except (GalleryError, ImageError) as e:
                raise user_error(str(e)) from e
        return job.describe()

    def status(self, request: gr.Request | None = None) -> str:
        """Where this session's self-training is, or how it ended ('' when it never ran)."""
        job = self.training.poll(self.source, session_key(request))
        return "" if job is None else job.describe()

    def cancel(self, request: gr.Request | None = None) -> str:
        return self.training.cancel_said(self.source, session_key(request))

    def stop(self, request: gr.Request | None) -> None:
        """Stop this session's job (Clear, Adapt, Undo: its result would outlive the crops or undo the choice)."""
        self.training.cancel(self.source, session_key(request))

    def view(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """The Self-train button: (its note, the job's status, the timer that follows it). A refusal is said in
        the note, as Adapt's are."""
        try:
            return "", self.start(request), gr.Timer(active=True)
        except gr.Error as e:
            return f"⚠️ {e.message}", gr.skip(), gr.skip()

    def tick(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """The timer, every few seconds while a job runs: (its status, the timer, *the tab's outputs); at its end,
        once, the tab's outputs as `ended` has them, and the timer stops."""
        job = self.training.poll(self.source, session_key(request))
        unchanged = (gr.skip(),) * self.outputs
        if job is None:
            return "", gr.Timer(active=False), *unchanged
        if job.state == "running":
            return job.describe(), gr.skip(), *unchanged
        if job.shown:
            return job.describe(), gr.Timer(active=False), *unchanged
        outputs = self.ended(request, job)  # first: if it fails (the session busy), the next tick tries again
        job.shown = True
        return job.describe(), gr.Timer(active=False), *outputs


@dataclass
class Panel:
    """The controls' components, laid out where the tab calls `panel`; `wire` connects them once the tab's
    other outputs exist."""

    start: gr.Button
    cancel: gr.Button
    note: gr.Markdown
    status: gr.Markdown
    timer: gr.Timer


def panel(what: str, help_text: str, visible: bool, prefix: str) -> Panel:
    """The buttons (`Self-train on {what}`, Cancel), a line of help, the refusal note, the status and its timer;
    element ids start with `prefix`."""
    with gr.Row(visible=visible):
        start = gr.Button(f"Self-train on {what}", elem_id=f"{prefix}self-train-btn", size="sm")
        cancel = gr.Button("Cancel self-training", elem_id=f"{prefix}cancel-self-train-btn", size="sm")
    gr.Markdown(help_text, elem_id=f"{prefix}self-train-help", visible=visible)
    note = gr.Markdown(elem_id=f"{prefix}self-train-note", elem_classes="input-note")
    status = gr.Markdown(elem_id=f"{prefix}self-train-status")
    return Panel(start, cancel, note, status, gr.Timer(2.0, active=False))


def wire(p: Panel, controls: SelfTrainControls, outputs: list[Any], api: str, model: dict[str, Any]) -> None:
    """The events: the buttons, the timer (refreshing `outputs` at the job's end), and /{api}, /{api}_status,
    /cancel_{api} for API clients."""
    p.start.click(controls.view, None, [p.note, p.status, p.timer], api_visibility="private", **model)
    p.timer.tick(controls.tick, None, [p.status, p.timer, *outputs], api_visibility="private", show_progress="hidden")
    p.cancel.click(controls.cancel, None, p.status, api_name=f"cancel_{api}")
    gr.Button(visible=False).click(controls.start, None, p.status, api_name=api, **model)
    gr.Button(visible=False).click(controls.status, None, p.status, api_name=f"{api}_status")
