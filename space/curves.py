"""The Training curves tab: the runs under runs_dir, the shipped weights' own log, or an uploaded log.csv, drawn
as four figures (losses, accuracy, learning rate, Rank-1/mAP). Endpoint /log_curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from reid_core.figures import plots

from . import params
from .host import Host
from .model_card import METRIC_LABELS
from .params import ParamError, text
from .requests import upload, user_error

SHIPPED_LOG = "shipped weights (train_log.csv)"


class Curves:
    """The tab's handlers (layout: build_curves_tab)."""

    def __init__(self, host: Host):
        self.host, self.settings = host, host.settings

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
        recorded = (self.host.reid.info.get("metrics") if self.host.reid else None) or {}
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



def build_curves_tab(curves: Curves, demo: gr.Blocks) -> None:
    """The tab's layout, inside the app's gr.Tabs."""
    with gr.Tab("Training curves"):
        with gr.Row():
            choices = curves.run_choices()
            runs = gr.Dropdown(choices=choices, value=choices[:1], multiselect=True, label="Runs", scale=3,
                               elem_id="runs", min_width=200)
            log_file = gr.File(label="…or upload a log.csv", file_types=[".csv"], scale=2, height=150,
                               elem_id="log-file", min_width=200)
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
        draw = {"fn": curves.curves, "inputs": [runs, log_file], "outputs": plot_outputs,
                "api_visibility": "private", "preprocess": False}
        refresh_btn.click(curves.refresh_runs, runs, runs, api_visibility="private").then(**draw)
        runs.change(**draw)
        log_file.change(**{**draw, "api_visibility": "public"}, api_name="log_curves")
        timer.tick(**draw)
        auto.change(lambda on: gr.Timer(active=on), auto, timer, api_visibility="private")
        demo.load(**draw)
