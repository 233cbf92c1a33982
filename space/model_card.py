"""The Model tab: what the loaded weights are (backbone, thresholds in use, training), how they scored, what they
were adapted to, and their recorded score, ROC and CMC figures."""

from __future__ import annotations

from typing import Any

import gradio as gr
import plotly.graph_objects as go

from reid_core import AdaptationRecord
from reid_core.figures import plots

from .host import Host

MODEL_FIELDS = {"backbone": "Backbone", "engine": "Engine", "flip": "Test-time flip", "input": "Input size (h×w)",
                "embed_dim": "Embedding dimension",
                "pair_threshold": "Same-person threshold (pair score)", "cos_threshold": "Cosine threshold",
                "train_data": "Training data", "train_images": "Training images", "train_ids": "Training identities",
                "loss": "Loss", "epochs": "Epochs", "train_seconds": "Training time (s)"}  # ReID.info keys, in order
THRESHOLD_FIELDS = ("pair_threshold", "cos_threshold")  # ReID.info's cuts in use: flip-averaged ones when flip is on
METRIC_LABELS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP",
                 "mAP_official": "mAP (official trapezoid AP)", "mINP": "mINP",
                 "flip_rank1": "Rank-1 with flip test", "flip_mAP": "mAP with flip test",
                 "rerank_rank1": "Rank-1 re-ranked", "rerank_mAP": "mAP re-ranked",
                 "pair_auc": "Pair head AUC (held-out pairs)",
                 "pair_accuracy": "Pair accuracy at the calibrated threshold (held-out pairs)"}


class ModelCard:
    """The tab's content (layout: build_model_tab)."""

    def __init__(self, host: Host):
        self.host, self.settings = host, host.settings

    def model_markdown(self) -> str:
        reid = self.host.reid
        if reid is None:
            return f"### ⚠️ No model loaded\n\n{self.host.error}\n\nStart with `--weights FILE` or set `$REID_WEIGHTS`."
        info = {k: v for k, v in reid.info.items() if k not in ("metrics", "curves", "thresholds")}
        lines = [f"- **Weights**: `{self.settings.weights.name}`"]
        said = " with test-time flip" if reid.flip else ""  # the cuts in use are those of the flipped embeddings
        lines += [f"- **{label}{said if key in THRESHOLD_FIELDS else ''}**: {_fmt(key, info[key])}"
                  for key, label in MODEL_FIELDS.items() if key in info]
        text = "### Model\n\n" + "\n".join(lines)
        metrics = reid.info.get("metrics") or {}
        shown = [(label, metrics[key]) for key, label in METRIC_LABELS.items() if key in metrics]
        if shown:
            text += ("\n\n### Evaluation\n\n" + (f"On {metrics['evaluated_on']}.\n\n" if "evaluated_on" in metrics
                                                   else "")
                     + "\n".join(f"- **{label}**: {100 * v:.1f} %" for label, v in shown))
        info.pop("adapted", None)
        if record := AdaptationRecord.from_extra(reid.model.cfg.extra):
            text += "\n\n" + adapted_markdown(record)
        rest = {k: v for k, v in info.items() if k not in MODEL_FIELDS}
        if rest:
            text += "\n\n### How it was made\n\n" + "\n".join(f"- **{k.replace('_', ' ')}**: {_fmt(k, v)}"
                                                              for k, v in rest.items())
        return text

    def model_figures(self) -> dict[str, go.Figure]:
        """The recorded curves are of plain embeddings (evaluate --record), so their plot's cut is the plain one;
        the Model tab's list gives the cuts in use (with test-time flip, where it is on)."""
        extra = self.host.reid.model.cfg.extra if self.host.reid else {}
        return plots.model_figures(extra.get("curves"), extra.get("pair_threshold"))


def adapted_markdown(record: AdaptationRecord) -> str:
    """What `python -m reid_core adapt` recorded (the library's typed reading of it), as the tab's list."""
    facts = "\n".join(f"- **{what}**: {said}" for what, said in record.facts())
    return "### Adapted to a new camera network\n\n" + facts


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


def build_model_tab(card: ModelCard) -> None:
    """The tab's layout, inside the app's gr.Tabs."""
    with gr.Tab("Model"):
        gr.Markdown(card.model_markdown(), elem_id="model-info")
        figs = card.model_figures()
        with gr.Row():
            gr.Plot(figs["scores"], label="Same/different scores", elem_id="model-scores", min_width=300)
            gr.Plot(figs["roc"], label="ROC", elem_id="model-roc", min_width=300)
        gr.Plot(figs["cmc"], label="CMC", elem_id="model-cmc")
