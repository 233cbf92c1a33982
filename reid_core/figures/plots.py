"""Plotly figures from training logs (runs/<name>/log.csv) and from the curves `python -m reid_core evaluate
--record` keeps with the weights, for the app and notebooks.

Logs are read while training appends to them, so a torn last line or an empty file must give a clear
message or a partial plot, never a traceback. No model imports: this stays cheap to import.

    python -m reid_core plots runs/exp/log.csv [--html curves.html]   # last epoch's numbers, optional page
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

LOSS_COLUMNS = ("loss", "loss_id", "loss_tri", "loss_pair")
ACCURACY_COLUMNS = ("train_acc", "train_pair_acc")
LR_COLUMNS = ("lr",)
EVAL_COLUMNS = ("rank1", "mAP")
MAX_POINTS = 2000  # per line: more points than pixels only cost the browser
PANELS: dict[str, tuple[str, tuple[str, ...]]] = {  # key -> (title, columns)
    "loss": ("Training losses", LOSS_COLUMNS),
    "accuracy": ("Training accuracy", ACCURACY_COLUMNS),
    "lr": ("Learning rate", LR_COLUMNS),
    "eval": ("Evaluation (epochs where it ran)", EVAL_COLUMNS),
}
COLOURS = qualitative.Plotly  # one colour per column (series), the same in every run
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")  # one line style per run
HEIGHT, LEGEND_ROW, PHONE_LEGEND = 320, 28, 280  # px: a panel without legend, a legend row, a phone's legend width


class LogError(ValueError):
    """A log that cannot be plotted; one line naming the file and the reason."""


def read_log(path: str | Path, max_rows: int | None = None) -> pd.DataFrame:
    """One run's log as numbers; rows with no epoch (a torn last line) are dropped, empty cells become NaN.
    At most `max_rows` rows are read (time and memory bounded whatever the file); `df.attrs["cut"]` says
    whether there were more."""
    path = Path(path)
    try:
        df = pd.read_csv(path, on_bad_lines="skip", skip_blank_lines=True,
                         nrows=None if max_rows is None else max_rows + 1)
    except FileNotFoundError as e:
        raise LogError(f"{path}: file not found") from e
    except pd.errors.EmptyDataError as e:
        raise LogError(f"{path}: empty file (training has not logged an epoch yet?)") from e
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, MemoryError) as e:
        raise LogError(f"{path}: not a CSV file ({type(e).__name__})") from e
    cut = max_rows is not None and len(df) > max_rows
    if cut:
        df = df.iloc[:max_rows]
    elif path.stat().st_size and _torn(path):  # killed mid-row: its cells may be cut-off numbers, drop it
        df = df.iloc[:-1]
    if "epoch" not in df.columns:
        raise LogError(f"{path}: not a training log (no 'epoch' column; found {', '.join(map(str, df.columns[:5]))})")
    df = df.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
    df = df.sort_values("epoch", kind="stable").reset_index(drop=True)
    df.attrs["cut"] = cut
    return df


def thinned(pts: pd.DataFrame, most: int = MAX_POINTS) -> pd.DataFrame:
    """At most `most` evenly spaced rows, the last kept: a 200,000-row log draws as fast as a 120-epoch one."""
    if len(pts) <= most:
        return pts
    keep = np.unique(np.linspace(0, len(pts) - 1, most).round().astype(int))
    return pts.iloc[keep]


def _torn(path: Path) -> bool:
    """The trainer ends every row with a newline, so a last line without one was cut off mid-write."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def read_runs(logs: Mapping[str, str | Path]) -> pd.DataFrame:
    """Several runs in one long frame with a `run` column, for overlaid curves."""
    frames = [read_log(p).assign(run=name) for name, p in logs.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "run"])


def list_runs(runs_dir: str | Path) -> dict[str, Path]:
    """Run name -> log.csv for every runs_dir/<name>/log.csv, newest first."""
    runs_dir = Path(runs_dir)
    logs = sorted(runs_dir.glob("*/log.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
    return {p.parent.name: p for p in logs}


def with_recorded(df: pd.DataFrame, metrics: Mapping[str, object] | None) -> pd.DataFrame:
    """A log with the evaluation figures kept with its weights (`python -m reid_core evaluate --record`, ReID.info
    "metrics") in the empty evaluation cells of its last epoch: a run trained without periodic evaluation then
    shows, in the Rank-1/mAP panel, the figures the Model tab states."""
    got = {c: float(v) for c in EVAL_COLUMNS if isinstance(v := (metrics or {}).get(c), (int, float))}
    last = df.index[-1] if len(df) else None
    todo = {c: v for c, v in got.items() if last is not None and (c not in df.columns or pd.isna(df.at[last, c]))}
    if not todo:
        return df  # the same frame: nothing recorded, or the log has its own figures there
    df = df.copy()
    for col, v in todo.items():
        df.loc[last, col] = v
    return df


def line_figure(df: pd.DataFrame, columns: Sequence[str], title: str, empty: str = "no data yet") -> go.Figure:
    """A line per (run, column) present; NaN rows are skipped per trace, so sparse eval columns plot only the
    epochs where evaluation ran. Several runs: a colour per column and a line style per run, so the legend has
    one entry per column and one per run (not one per pair, which squashed the plot under it)."""
    fig = go.Figure()
    runs = list(df.groupby("run", sort=False)) if "run" in df.columns else [("", df)]
    multi = len(runs) > 1
    shown = [c for c in columns if c in df.columns and df[c].notna().any()]
    for i, (run, part) in enumerate(runs):
        dash = DASHES[i % len(DASHES)]
        for col in shown:
            pts = thinned(part[["epoch", col]].dropna())
            if pts.empty:
                continue
            fig.add_trace(go.Scatter(x=pts["epoch"], y=pts[col], mode="lines+markers" if len(pts) <= 20 else "lines",
                                     name=html.escape(f"{run} · {col}" if multi else col), legendgroup=col,
                                     showlegend=not multi,
                                     line={"color": COLOURS[shown.index(col) % len(COLOURS)], "dash": dash},
                                     marker={"size": 9 if len(pts) == 1 else 5}))
    if multi and fig.data:  # legend-only entries: the columns' colours, then the runs' line styles
        for col in shown:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=col, legendgroup=col,
                                     line={"color": COLOURS[shown.index(col) % len(COLOURS)]}))
        for i, (run, _) in enumerate(runs):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=html.escape(str(run)),
                                     legendgroup=f"run {run}", line={"color": "grey", "dash": DASHES[i % len(DASHES)]}))
    return styled(fig, title, "epoch", empty)


def styled(fig: go.Figure, title: str, xaxis: str, empty: str = "no data yet") -> go.Figure:
    """One look for every panel: the title left and the modebar upright on the right, so they never overlap on
    a narrow screen; the legend under the plot, the figure taller by a row per three legend entries, so the plot
    keeps its height however many there are."""
    entries = [str(t.name) for t in fig.data if t.showlegend is not False]
    fig.update_layout(title={"text": title, "x": 0.01, "xanchor": "left"}, xaxis_title=xaxis,
                      height=HEIGHT + LEGEND_ROW * legend_rows(entries), margin={"l": 50, "r": 40, "t": 50, "b": 40},
                      legend={"orientation": "h", "x": 0, "y": 0, "yref": "container", "yanchor": "bottom"},
                      template="plotly_white",
                      modebar={"orientation": "v"})
    if not fig.data:
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 16, "color": "grey"})
    return fig


def legend_rows(names: Sequence[str], width: int = PHONE_LEGEND) -> int:
    """Rows a horizontal legend of these entries takes on a phone (each entry ~50 px of line and gaps plus ~7 px a
    character): the figure grows by that many rows, so its plot keeps its height wherever it wraps."""
    rows, used = 0, width
    for name in names:
        w = 50 + 7 * len(name)
        rows, used = (rows + 1, w) if used + w > width else (rows, used + w)
    return rows


def figures(df: pd.DataFrame) -> dict[str, go.Figure]:
    """All panels: losses, train accuracy, learning rate (log scale), rank-1/mAP."""
    figs = {key: line_figure(df, cols, title, "no evaluation yet" if key == "eval" else "no data yet")
            for key, (title, cols) in PANELS.items()}
    if figs["lr"].data:
        figs["lr"].update_yaxes(type="log", exponentformat="e")
    return figs


def model_figures(curves: Mapping[str, Sequence[float]] | None, threshold: float | None = None,
                  ) -> dict[str, go.Figure]:
    """The Model tab's pictures, from the weights' recorded curves (evaluate.curve_data): the CMC curve, the pair
    head's same/different score distributions on held-out pairs with `threshold` (the cut for the embeddings the
    curves were recorded with: plain ones), the ROC. The pair head's raw output is a score, not a probability,
    and the figure calls it so, as the verdict does."""
    c = curves or {}
    empty = "not recorded: run python -m reid_core evaluate --record"
    cmc, roc, dist = go.Figure(), go.Figure(), go.Figure()
    if c.get("cmc"):
        ranks = list(range(1, len(c["cmc"]) + 1))
        cmc.add_trace(go.Scatter(x=ranks, y=[100 * v for v in c["cmc"]], mode="lines+markers", name="CMC",
                                 marker={"size": 4}))
        cmc.update_yaxes(title="queries matched within rank k (%)")
    if c.get("score_edges"):
        edges = c["score_edges"]
        mids, width = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)], edges[1] - edges[0]
        for key, name, colour in (("same_counts", "same person", "#2e9f43"),
                                  ("different_counts", "different people", "#d62728")):
            total = max(1, sum(c[key]))
            dist.add_trace(go.Bar(x=mids, y=[100 * v / total for v in c[key]], width=width, name=name,
                                  marker_color=colour, opacity=0.6))
        dist.update_layout(barmode="overlay")
        dist.update_yaxes(title="share of pairs (%)")
        if threshold is not None:
            dist.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.3f}")
    if c.get("roc_fpr"):
        roc.add_trace(go.Scatter(x=c["roc_fpr"], y=c["roc_tpr"], mode="lines", name="pair head"))
        roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot"}))
        roc.update_yaxes(title="true positive rate")
    return {"cmc": styled(cmc, "CMC: rank-k accuracy", "rank k", empty),
            "scores": styled(dist, "Pair scores of held-out pairs", "pair score (plain embeddings)", empty),
            "roc": styled(roc, "ROC of the pair head, held-out pairs", "false positive rate", empty)}
