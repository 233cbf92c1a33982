"""Gradio demo over reid_core.ReID: compare two crops, search a gallery (each browser session its own, unless
--shared-gallery), find people in short videos, watch training curves, inspect the model.

    python app.py --host 127.0.0.1 --port 7860 [--weights W] [--data-dir D] [--runs-dir R] [--share]
                  [--allow-pickle] [--max-upload-mb N --max-gallery N --concurrency N ...: see reid_core/data/limits.py]

Weights come from --weights, else $REID_WEIGHTS, else weights/model.safetensors. A missing or bad weights
file does not stop the app: the Model tab and every model-backed output say what is wrong. `demo` is built
on first access (PEP 562), so `import app` is cheap and `python app.py --weights X` loads the model once.
Named API endpoints for gradio_client: /compare, /search, /add_to_gallery, /clear_gallery, /adapt_gallery,
/undo_adapt, /find_people, /search_videos, /log_curves.
This file is the settings, the page's assembly and the launch; each tab's handlers and layout are a module of
space/ (DESIGN.md), over one space.host.Host.
Every upload is checked against Limits (size, pixels, zip members and bytes, gallery size) before any work,
and nothing is written outside the data folder (zips are read in memory, never extracted).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import gradio as gr

from reid_core import WEIGHTS_HELP, Limits, ServerLimits, resolve_weights
from space.compare import Compare, build_compare_tab
from space.curves import Curves, build_curves_tab
from space.host import EXAMPLES_DIR, Host
from space.model_card import ModelCard, build_model_tab
from space.search import Search, build_search_tab
from space.self_train import SelfTraining
from space.videos import Videos, build_videos_tab

ROOT = Path(__file__).resolve().parent


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
        app sits behind Hugging Face's proxy, and background self-training is off unless asked for."""
        env = os.environ
        shared = shared_gallery or env.get("REID_SHARED_GALLERY", "").lower() in ("1", "true", "yes")
        limits = Limits.from_env(env, **{f.name: bounds.get(f.name) for f in fields(Limits)})
        server = ServerLimits.from_env(env, **{f.name: bounds.get(f.name) for f in fields(ServerLimits)})
        if env.get("SPACE_ID") and "REID_SELF_TRAIN_JOBS" not in env and bounds.get("self_train_jobs") is None:
            server = replace(server, self_train_jobs=0)  # off on a public Space unless its operator turns it on
        return cls(resolve_weights(weights or env.get("REID_WEIGHTS")),
                   Path(data_dir or env.get("REID_DATA_DIR") or ROOT / "gallery_store"),
                   Path(runs_dir or env.get("REID_RUNS_DIR") or ROOT / "runs"),
                   limits, server, allow_pickle, shared, env.get("REID_OPERATOR_TOKEN", ""), bool(env.get("SPACE_ID")))


CSS = """
:is(#results, #video-people, #video-seen) .grid-wrap {
    min-height: 0 !important; max-height: none !important; overflow: visible !important; }
:is(#results, #video-people, #video-seen) .grid-container {
    grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)) !important; grid-template-rows: none !important;
    grid-auto-rows: auto !important; }
:is(#results, #video-people, #video-seen) .thumbnail-item {
    aspect-ratio: auto !important; height: auto !important; display: flex !important; flex-direction: column; }
:is(#results, #video-people, #video-seen) .thumbnail-item > img { aspect-ratio: 1 / 2; height: auto !important; }
:is(#results, #video-people, #video-seen) .caption-label {
    position: static !important; max-width: 100% !important; border: none !important; text-align: center;
    background: none !important; }
:is(#video-people, #video-seen) .caption-label { white-space: normal !important; overflow-wrap: anywhere; }
#results-table table { font-size: var(--text-sm); }
#log-file .wrap { min-height: 0 !important; padding-top: 34px !important; }
.input-note p { color: var(--error-text-color, #b91c1c); }
"""  # result tiles (Search's, and the Videos tab's people): as many columns as fit (3 on a phone, 5-6 on a desktop),
# each picture whole at the crop's 1:2 shape with its rank and score (a video tile's camera and time, wrapped) under
# it, the grid as tall as its tiles (Gradio's gallery is a fixed-height box with captions over the pictures); the
# results table in smaller type, so every column fits a phone; the log upload's prompt below its label (Gradio
# centres a 240 px prompt in the box, under the label)


class ReIDApp:
    """Every tab's handlers over one Host (the model, the lane, the sessions): build_demo lays them out."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.host = Host(settings)
        training = SelfTraining(self.host)  # the server's background jobs, in both tabs: one bound for all
        self.compare, self.search = Compare(self.host), Search(self.host, training)
        self.videos = Videos(self.host, training=training)
        self.curves, self.model = Curves(self.host), ModelCard(self.host)


def build_demo(settings: Settings) -> gr.Blocks:
    """The five tabs, each laid out by its module in space/. Every event with an upload runs with
    preprocess=False, so the handler, not Gradio's decoder, judges the file (and a clicked example changes
    nothing)."""
    app = ReIDApp(settings)
    examples = {p.name: str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))}
    with gr.Blocks(title="Person re-identification", delete_cache=(3600, 3600)) as demo:  # drop uploads after 1 h
        gr.Markdown("# Person re-identification\nIs it the same person? Who in the gallery is this person?")
        if app.host.error:
            gr.Markdown(f"⚠️ {app.host.error}")
        with gr.Tabs(overflow_behavior="wrap"):  # every tab in sight on a phone, not in a menu
            build_compare_tab(app.compare, examples)
            build_search_tab(app.search, examples, demo)
            build_videos_tab(app.videos)
            build_curves_tab(app.curves, demo)
            build_model_tab(app.model)
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
