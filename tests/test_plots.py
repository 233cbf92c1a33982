"""Training-curve figures from log.csv files as the trainer writes them, and clear errors for bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import rank1_at, write_log

from reid_core.figures import plots


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "runs" / "a" / "log.csv", epochs=6, eval_every=3)


def names(fig: plots.go.Figure) -> list[str]:
    return [t.name for t in fig.data]


def test_single_run_figures(log: Path) -> None:
    figs = plots.figures(plots.read_log(log))
    assert list(figs) == ["loss", "accuracy", "lr", "eval"]
    assert names(figs["loss"]) == ["loss", "loss_id", "loss_tri", "loss_pair"]
    assert names(figs["accuracy"]) == ["train_acc", "train_pair_acc"]
    assert names(figs["lr"]) == ["lr"] and figs["lr"].layout.yaxis.type == "log"
    rank1, mAP = figs["eval"].data
    assert (rank1.name, mAP.name) == ("rank1", "mAP")
    assert list(rank1.x) == [3, 6]  # only the epochs where evaluation ran
    assert list(rank1.y) == pytest.approx([rank1_at(3), rank1_at(6)])
    assert list(mAP.y) == pytest.approx([0.8 * rank1_at(3), 0.8 * rank1_at(6)])
    assert list(figs["loss"].data[0].x) == [1, 2, 3, 4, 5, 6]
    assert figs["loss"].data[0].y[0] == pytest.approx(5.0)


def test_runs_overlay_and_listing(tmp_path: Path, log: Path) -> None:
    other = write_log(tmp_path / "runs" / "b" / "log.csv", epochs=4, eval_every=2)
    (tmp_path / "runs" / "no_log").mkdir()
    assert set(plots.list_runs(tmp_path / "runs")) == {"a", "b"}
    assert plots.list_runs(tmp_path / "nowhere") == {}
    figs = plots.figures(plots.read_runs({"a": log, "b": other}))
    assert names(figs["eval"]) == ["a · rank1", "a · mAP", "b · rank1", "b · mAP", "rank1", "mAP", "a", "b"]
    assert list(figs["eval"].data[2].x) == [2, 4]


def legend(fig: plots.go.Figure) -> list[str]:
    return [t.name for t in fig.data if t.showlegend is not False]


def test_several_runs_legend_fits(tmp_path: Path, log: Path) -> None:
    """Two runs: a colour per column, a line style per run, and a legend entry for each (6 for the losses, not 8
    'run · column' ones, which squashed the plot to ~50 px on a phone); the figure grows by its legend's rows."""
    other = write_log(tmp_path / "runs" / "a_run_with_a_long_name" / "log.csv", epochs=4)
    figs = plots.figures(plots.read_runs({"a": log, "a_run_with_a_long_name": other}))
    loss = figs["loss"]
    assert legend(loss) == [*plots.LOSS_COLUMNS, "a", "a_run_with_a_long_name"]
    lines = [t for t in loss.data if t.showlegend is False]  # the data: hidden from the legend, named in full
    assert [t.name for t in lines[:2]] == ["a · loss", "a · loss_id"] and len(lines) == 8
    assert {t.line.color for t in lines if t.name.endswith("· loss")} == {plots.COLOURS[0]}  # colour: the column
    assert [t.line.dash for t in lines if t.name.endswith("· loss")] == ["solid", "dash"]  # style: the run
    single = plots.figures(plots.read_log(log))["loss"]
    assert legend(single) == list(plots.LOSS_COLUMNS)
    assert loss.layout.height == plots.HEIGHT + plots.LEGEND_ROW * plots.legend_rows(legend(loss))
    assert loss.layout.height > single.layout.height >= plots.HEIGHT
    assert plots.legend_rows(["loss"]) == 1 and plots.legend_rows(["x" * 30, "y" * 30]) == 2


def test_recorded_figures_fill_a_log_without_evaluation(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log.csv", epochs=5, eval_every=99)  # trained without periodic evaluation
    df = plots.read_log(log)
    filled = plots.with_recorded(df, {"rank1": 0.811, "mAP": 0.607, "evaluated_on": "market1501"})
    assert filled["rank1"].tolist()[-1] == 0.811 and filled["mAP"].tolist()[-1] == 0.607
    assert filled["rank1"].notna().sum() == 1 and df["rank1"].isna().all()  # the last epoch only; input unchanged
    ev = plots.figures(filled)["eval"]
    assert [(t.name, list(t.x)) for t in ev.data] == [("rank1", [5]), ("mAP", [5])]
    assert plots.with_recorded(df, None) is df and plots.with_recorded(df, {"mINP": 0.2}) is df
    own = plots.read_log(write_log(tmp_path / "own.csv", epochs=6, eval_every=3))  # its own last-epoch figures win
    assert plots.with_recorded(own, {"rank1": 0.1, "mAP": 0.1}) is own


def test_torn_last_line_and_header_only(tmp_path: Path, log: Path) -> None:
    with open(log, "a") as f:
        f.write("7,70,0.00035,1.2,0.3,0.2,0.1,0.9,0.9,,,,,,,,100,10,EXTRA,FIELDS\nnot-a-number")
    df = plots.read_log(log)
    assert df["epoch"].tolist() == [1, 2, 3, 4, 5, 6]  # the malformed rows are dropped, the rest kept
    header_only = tmp_path / "h.csv"
    header_only.write_text(log.read_text().splitlines()[0] + "\n")
    figs = plots.figures(plots.read_log(header_only))
    assert all(not f.data for f in figs.values())
    assert figs["loss"].layout.annotations[0].text == "no data yet"


@pytest.mark.parametrize(("content", "message"), [
    (None, "file not found"),
    (b"", "empty file"),
    (b"name,score\nx,1\n", "no 'epoch' column"),
    (b"\xff\xfe\x00\x01binary\x00\x00", "not a"),
])
def test_bad_logs_raise_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "log.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(plots.LogError, match=message) as err:
        plots.read_log(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_evaluate_record_keeps_the_model_tab_curves(tmp_path: Path, market: Path, tiny_weights: Path) -> None:
    """`evaluate --record` stores the CMC, the held-out pair-score histograms and the ROC with the weights;
    the Model tab's figures draw exactly them, with the calibrated threshold."""
    import json
    import shutil

    from reid_core.cli import main as cli

    weights = tmp_path / "model.safetensors"
    shutil.copy(tiny_weights, weights)
    shutil.copy(tiny_weights.with_suffix(".json"), weights.with_suffix(".json"))
    assert cli(["evaluate", "--weights", str(weights), "--data", str(market), "--threads", "1", "--record"]) == 0
    extra = json.loads(weights.with_suffix(".json").read_text())["extra"]
    m, c = extra["metrics"], extra["curves"]
    assert len(c["cmc"]) == 50 and c["cmc"][0] == pytest.approx(m["rank1"], abs=1e-4) and c["cmc"][-1] <= 1
    assert all(a <= b for a, b in zip(c["cmc"], c["cmc"][1:], strict=False))
    n_pairs = sum(c["same_counts"]) + sum(c["different_counts"])
    assert sum(c["same_counts"]) == sum(c["different_counts"]) == n_pairs // 2 > 0  # balanced held-out pairs
    assert c["roc_fpr"][0] == 0 and c["roc_tpr"][-1] == 1 and len(c["roc_fpr"]) == len(c["roc_tpr"])
    figs = plots.model_figures(c, extra["pair_threshold"])
    assert list(figs["cmc"].data[0].y) == pytest.approx([100 * v for v in c["cmc"]])
    bars = figs["scores"].data
    assert [b.name for b in bars] == ["same person", "different people"]
    assert sum(bars[0].y) == pytest.approx(100) and sum(bars[1].y) == pytest.approx(100)
    assert figs["scores"].layout.shapes[0].x0 == extra["pair_threshold"]  # the threshold line
    assert list(figs["roc"].data[0].x) == c["roc_fpr"]
    empty = plots.model_figures(None)
    assert all(not f.data and "not recorded" in f.layout.annotations[0].text for f in empty.values())


def test_html_page_works_offline(tmp_path: Path, log: Path, capsys: pytest.CaptureFixture) -> None:
    """plotly.js is inside the page, once, not fetched from a CDN (offline the page was blank)."""
    from reid_core.cli import main as cli

    page = tmp_path / "curves.html"
    assert cli(["plots", str(log), "--html", str(page)]) == 0
    html = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # no CDN (nor any other) script to fetch
    assert html.count("plotly.js v") == 1 and len(html) > 1_000_000  # the library itself (~4.6 MB), once
    assert html.count("Plotly.newPlot(") == 4
