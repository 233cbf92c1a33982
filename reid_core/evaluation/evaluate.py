"""The evaluation entry: embed query and gallery (any engine), then score them the way the field does, into a
typed report; and the pair head's calibration on held-out identities.

`python -m reid_core evaluate --data DIR` runs it on the engine ReID.load picks; training calls it on its
live torch model every few epochs; both `record` the report's thresholds with the weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..base.files import atomic_write, atomic_write_text
from ..data.datasets import Record, ReIDData, known_cameras
from ..embed import Embedder, Mirrored, TorchEmbedder, embed_records, flip_average
from ..model.network import SiameseReID
from ..model.weights import config_path, weights_hash
from .camera_centring import centre_query_gallery
from .metrics import (
    RankResult,
    VerificationResult,
    cosine_distance,
    euclidean_distance,
    market_rank,
    rerank,
    verification,
)
from .thresholds import Calibration, CalibrationCheck, Thresholds, check_calibration, sigmoid


@dataclass
class EvalOptions:
    """How to evaluate: the ranking distance, which extra variants to report, and how to embed."""

    metric: str = "cosine"  # or "euclidean": the distance that ranks the gallery
    rerank: bool = False  # also k-reciprocal re-ranked ranking figures (the pair figures do not change)
    flip: bool = False  # also the figures of flip-averaged embeddings (one more embedding pass, of mirror images)
    centred: bool = False  # also the ranking figures of camera-centred embeddings (camera_centring; no extra pass;
    # the crops' cameras must be known: a ValueError otherwise)
    batch_size: int = 64
    threads: int | None = None
    progress: bool = True
    features: str | Path | None = None  # a safetensors file keeping the embeddings for the next call (read_features)


@dataclass
class PairFigures:
    """Verification on balanced held-out pairs: the pair head's probability and the cosine (each threshold chosen
    on half the identities, accuracy measured on the other half), and the pair head's calibration checked the
    same way (None when the pairs cannot be split)."""

    pair: VerificationResult
    cos: VerificationResult
    calibration: CalibrationCheck | None


@dataclass
class Variant:
    """The figures of one kind of embedding (plain, flip-averaged, either camera-centred)."""

    ranking: RankResult
    reranked: RankResult | None = None  # the same distances, k-reciprocal re-ranked
    pairs: PairFigures | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)  # what the app's Model tab draws (curve_data)

    def figures(self) -> dict[str, float]:
        """Flat, as log.csv, --json and the weights' stored metrics name them (rank1, rerank_mAP, pair_auc...)."""
        out = self.ranking.as_dict()
        if self.reranked is not None:
            out |= {f"rerank_{k}": v for k, v in self.reranked.as_dict().items()}
        if self.pairs is not None:
            out |= self.pairs.pair.as_dict("pair_") | self.pairs.cos.as_dict("cos_")
        return out


@dataclass
class EvalReport:
    """What `evaluate` measured: plain embeddings' figures (the headline), flip-averaged ones when asked for, and
    the thresholds (and calibration) `record` writes beside the weights."""

    plain: Variant
    flip: Variant | None
    num_query: int
    num_gallery: int
    embed_seconds: float = 0.0
    seconds: float = 0.0
    centred: Variant | None = None  # plain embeddings, camera-centred (ranking only: the pair head never saw them)
    flip_centred: Variant | None = None

    def variants(self) -> dict[str, Variant]:
        named = {"plain": self.plain, "flip": self.flip, "centred": self.centred, "flip_centred": self.flip_centred}
        return {name: v for name, v in named.items() if v is not None}

    def figures(self) -> dict[str, float]:
        """Every figure flat (another variant's prefixed by its name: flip_, centred_, flip_centred_): what --json
        and the weights' JSON hold."""
        out: dict[str, float] = {}
        for name, v in self.variants().items():
            out |= {figure_prefix(name) + k: x for k, x in v.figures().items()}
        return out | {"num_query": self.num_query, "num_gallery": self.num_gallery,
                      "embed_seconds": self.embed_seconds, "seconds": self.seconds}

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds chosen on all the held-out pairs, and the pair head's Platt calibration fitted on them."""
        p, f = self.plain.pairs, self.flip.pairs if self.flip is not None else None
        t = Thresholds(p.pair.threshold, p.cos.threshold) if p else Thresholds()
        if f is not None:
            t.flip_pair, t.flip_cos = f.pair.threshold, f.cos.threshold
        if p is not None and p.calibration is not None:
            flip_cal = f.calibration.platt if f is not None and f.calibration is not None else None
            t.calibration = Calibration(p.calibration.platt, flip_cal, "the evaluation's held-out pairs "
                                        "(metrics.evaluated_on)", checks(self))
        return t


def checks(report: EvalReport) -> dict[str, Any]:
    return {name: check_figures(v.pairs.calibration) for name, v in report.variants().items()
            if v.pairs is not None and v.pairs.calibration is not None}


def check_figures(c: CalibrationCheck) -> dict[str, Any]:
    """A CalibrationCheck's figures, rounded, for the weights' JSON (the fit itself is stored once, typed)."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(c).items() if k != "platt"}


def extract(embedder: Embedder, records: Sequence[Record], batch_size: int = 64, threads: int | None = None,
            desc: str = "embed", progress: bool = True) -> np.ndarray:
    """L2-normalised embeddings of records (every one: an unreadable image raises ImageError)."""
    model = embedder.model  # a torch model in training mode embeds in eval mode, then goes back
    was_training = model is not None and model.training
    if was_training:
        model.eval()
    try:
        return embed_records(embedder, records, batch_size, threads, desc, progress)[0]
    finally:
        if was_training:
            model.train()


def verification_pairs(q: Sequence[Record], g: Sequence[Record], seed: int = 0) -> np.ndarray:
    """Balanced held-out pairs (query index, gallery index, label): per query one cross-camera true match
    and one other identity, the pairs a user of Compare would bring."""
    rng = np.random.default_rng(seed)
    g_pids = np.array([r.pid for r in g])
    g_cams = np.array([r.camid for r in g])
    out = []
    for i, r in enumerate(q):
        pos = np.flatnonzero((g_pids == r.pid) & (g_cams != r.camid))
        neg = np.flatnonzero((g_pids != r.pid) & (g_pids > 0))
        if len(pos) and len(neg):
            out += [(i, int(rng.choice(pos)), 1), (i, int(rng.choice(neg)), 0)]
    return np.array(out, dtype=np.int64).reshape(-1, 3)


@torch.no_grad()
def pair_logits(model: SiameseReID, qf: np.ndarray, gf: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The pair head's logits of (query, gallery) index pairs: sigmoid gives its raw probability."""
    device = next(model.parameters()).device
    a = torch.from_numpy(qf[pairs[:, 0]]).to(device)
    b = torch.from_numpy(gf[pairs[:, 1]]).to(device)
    return model.pair_logit(a, b).float().cpu().numpy()


def subset_eval(data: ReIDData, max_ids: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """Query and gallery restricted to a seeded sample of test identities (for quick in-training checks)."""
    pids = sorted({r.pid for r in data.query})
    if not max_ids or max_ids >= len(pids):
        return data.query, data.gallery
    keep = set(np.random.default_rng(seed).choice(pids, max_ids, replace=False).tolist())
    return [r for r in data.query if r.pid in keep], [r for r in data.gallery if r.pid in keep]


def evaluate(model: SiameseReID, query: Sequence[Record], gallery: Sequence[Record],
             options: EvalOptions | None = None, embedder: Embedder | None = None) -> EvalReport:
    """Market-protocol ranking figures plus pair verification (pair head and cosine) of plain embeddings, and
    with `options` the flip-averaged and re-ranked ones beside them.

    `embedder`: what embeds the images (ReID.embedder: the engine chosen on this machine); default the model
    in torch fp32. The pair head always runs in torch, on those embeddings. `options.features` keeps the
    embeddings, so a second call (say with re-ranking) re-scores without embedding again; the file is refused
    when other weights or another engine made it.
    """
    o = options or EvalOptions()
    if o.centred and not known_cameras([*query, *gallery]):
        raise ValueError("camera centring needs the camera of every crop, and these crops' names give none "
                         "(Market-style _cN, or a dataset layout with cameras)")
    t0 = time.time()
    plain = embedder or TorchEmbedder(model)
    made_by = f"{weights_hash(model)} {plain.name}" if o.features else ""  # reused by the same weights + engine only
    feats = read_features(o.features, made_by) if o.features and Path(o.features).exists() else {}
    if feats and (len(feats["query"]), len(feats["gallery"])) != (len(query), len(gallery)):
        raise ValueError(f"{o.features}: embeddings of another query/gallery ({len(feats['query'])} x "
                         f"{len(feats['gallery'])}, not {len(query)} x {len(gallery)})")
    for name, records, mirror in (("query", query, False), ("gallery", gallery, False),
                                  ("query_mirror", query, True), ("gallery_mirror", gallery, True)):
        if name not in feats and (o.flip or not mirror):
            feats[name] = extract(Mirrored(plain) if mirror else plain, records, o.batch_size, o.threads, name,
                                  o.progress)
            if o.features:
                # after each part (atomically): a long run stopped midway keeps what it did
                atomic_write(o.features, lambda tmp: save_file(feats, str(tmp), {"made_by": made_by}))
    t_embed = time.time() - t0
    embedded = {"plain": (feats["query"], feats["gallery"])}
    if o.flip:
        embedded["flip"] = (flip_average(feats["query"], feats["query_mirror"]),
                            flip_average(feats["gallery"], feats["gallery_mirror"]))
    scored = {name: score(model, qf, gf, query, gallery, o.metric, o.rerank) for name, (qf, gf) in embedded.items()}
    if o.centred:
        q_cams, g_cams = np.array([r.camid for r in query]), np.array([r.camid for r in gallery])
        for name, (qf, gf) in list(embedded.items()):
            centred = centre_query_gallery(qf, gf, q_cams, g_cams)
            scored["centred" if name == "plain" else "flip_centred"] = score(model, *centred, query, gallery, o.metric,
                                                                             o.rerank, with_pairs=False)
    return EvalReport(scored["plain"], scored.get("flip"), len(query), len(gallery), t_embed, time.time() - t0,
                      scored.get("centred"), scored.get("flip_centred"))


def read_features(path: str | Path, made_by: str) -> dict[str, np.ndarray]:
    """The embeddings an earlier `evaluate(features=path)` kept; ValueError (one line) for a torn file or one
    made by other weights or another engine."""
    try:
        with safe_open(str(path), "np") as f:
            theirs = (f.metadata() or {}).get("made_by")
            feats = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not an embeddings file from `python -m reid_core evaluate --features` ({e}); "
                         "delete it") from e
    if theirs != made_by:
        raise ValueError(f"{path}: embeddings made by other weights or another engine ({theirs or 'unknown'}, not "
                         f"{made_by}); delete it or name another --features file")
    return feats


def score(model: SiameseReID, qf: np.ndarray, gf: np.ndarray, query: Sequence[Record], gallery: Sequence[Record],
          metric: str = "cosine", do_rerank: bool = False, with_pairs: bool = True) -> Variant:
    """The figures of `evaluate` from embeddings already extracted (e.g. gathered from several processes).
    Re-ranking changes the ranking only: the pairs are scored once (`with_pairs=False`: not at all)."""
    fn = cosine_distance if metric == "cosine" else euclidean_distance
    dist = fn(qf, gf)
    q_pids, q_cams = np.array([r.pid for r in query]), np.array([r.camid for r in query])
    g_pids, g_cams = np.array([r.pid for r in gallery]), np.array([r.camid for r in gallery])
    ranked = market_rank(dist, q_pids, g_pids, q_cams, g_cams)
    reranked = market_rank(rerank(dist, fn(qf, qf), fn(gf, gf)), q_pids, g_pids, q_cams, g_cams) if do_rerank else None
    if not with_pairs:
        return Variant(ranked, reranked)
    pairs = verification_pairs(query, gallery)
    if not len(pairs):
        return Variant(ranked, reranked)
    logits = pair_logits(model, qf, gf, pairs)
    figures = pair_figures(logits, (qf[pairs[:, 0]] * gf[pairs[:, 1]]).sum(1), pairs[:, 2], q_pids[pairs[:, 0]])
    return Variant(ranked, reranked, figures, curve_data(ranked.cmc, sigmoid(logits), pairs[:, 2]))


def pair_figures(logits: np.ndarray, cosines: np.ndarray, labels: np.ndarray, pids: np.ndarray) -> PairFigures:
    """Each score's threshold chosen on the pairs of half the identities (split by parity: none in both halves)
    and its accuracy reported on the other half, so the reported accuracy never saw its own threshold; the
    recorded threshold (and calibration) is then re-chosen on all pairs."""
    half = pids % 2 == 0
    split = not (half.all() or (~half).all()) and len(set(labels[half])) == 2 and len(set(labels[~half])) == 2
    out = []
    for scores in (sigmoid(logits), cosines):
        if not split:
            out.append(verification(scores, labels))
            continue
        v = verification(scores[~half], labels[~half], threshold=verification(scores[half], labels[half]).threshold)
        v.threshold = verification(scores, labels).threshold
        out.append(v)
    return PairFigures(*out, check_calibration(logits, labels, half) if split else None)


def calibration_records(records: Sequence[Record], max_ids: int = 300, per_id: int = 5, seed: int = 0,
                        ) -> list[Record]:
    """A seeded sample of identities seen by at least two cameras, up to `per_id` images each spread over
    their cameras: held-out identities to calibrate on (a dataset's training ones: never its test split)."""
    by_pid: dict[int, list[Record]] = {}
    for r in records:
        if r.pid >= 0:  # 0 is a real identity in a training split (relabelled 0..N-1); -1 is junk
            by_pid.setdefault(r.pid, []).append(r)
    pids = [p for p in sorted(by_pid) if len({r.camid for r in by_pid[p]}) > 1]
    rng = np.random.default_rng(seed)
    out = []
    for pid in rng.permutation(pids)[:max_ids] if max_ids else pids:
        mine = sorted(by_pid[int(pid)], key=lambda r: (r.path))
        mine = [mine[i] for i in rng.permutation(len(mine))]
        # round-robin over cameras, so cross-camera pairs exist
        cams: dict[int, list[Record]] = {}
        for r in mine:
            cams.setdefault(r.camid, []).append(r)
        spread = [r for group in zip(*(iter(c) for c in cams.values()), strict=False) for r in group]
        rest = [r for r in mine if r not in spread]
        out += (spread + rest)[:per_id]
    return out


def calibrate(model: SiameseReID, records: Sequence[Record], options: EvalOptions | None = None,
              embedder: Embedder | None = None, old: Thresholds | None = None) -> Calibration:
    """The pair head's Platt calibration on pairs of `records` (one cross-camera same-person pair and one
    different-person pair per image), for plain and flip-averaged embeddings; each fit is checked on the
    identities it did not see, against the raw probability at `old`'s thresholds, then re-fitted on all."""
    o, old = options or EvalOptions(), old or Thresholds()
    plain = embedder or TorchEmbedder(model)
    feats = extract(plain, records, o.batch_size, o.threads, "calibrate", o.progress)
    pairs = verification_pairs(records, records)
    if not len(pairs):
        raise ValueError("calibration needs identities seen by two cameras, and more than one identity")
    pids = np.array([r.pid for r in records])[pairs[:, 0]]
    half = pids % 2 == 0
    out: dict[str, CalibrationCheck] = {}
    for name in ("plain", "flip") if o.flip else ("plain",):
        if name == "flip":
            feats = flip_average(feats, extract(Mirrored(plain), records, o.batch_size, o.threads, "calibrate mirror",
                                                o.progress))
        out[name] = check_calibration(pair_logits(model, feats, feats, pairs), pairs[:, 2], half,
                                      old.pair_for(name == "flip"))
    n_ids = len({r.pid for r in records})
    return Calibration(out["plain"].platt, out["flip"].platt if "flip" in out else None,
                       f"{len(pairs)} balanced pairs of {len(records)} images of {n_ids} identities",
                       {k: check_figures(v) for k, v in out.items()})


def curve_data(cmc: np.ndarray, scores: np.ndarray, labels: np.ndarray, bins: int = 40, roc_points: int = 200,
               ) -> dict[str, list[float]]:
    """The CMC curve (ranks 1-50), the pair head's score histograms for same / different held-out pairs and
    its ROC curve (thinned to ~roc_points), small enough for the weights' JSON."""
    from sklearn.metrics import roc_curve

    edges = np.linspace(0, 1, bins + 1)
    fpr, tpr, _ = roc_curve(labels, scores)
    keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, min(roc_points, len(fpr))).round().astype(int)])
    r4 = lambda a: [round(float(x), 4) for x in a]  # noqa: E731
    return {"cmc": r4(cmc[:50]), "score_edges": r4(edges),
            "same_counts": np.histogram(scores[labels == 1], edges)[0].tolist(),
            "different_counts": np.histogram(scores[labels == 0], edges)[0].tolist(),
            "roc_fpr": r4(fpr[keep]), "roc_tpr": r4(tpr[keep])}


def figure_prefix(name: str) -> str:
    """What a variant's figures are prefixed with in EvalReport.figures: rank1, flip_rank1, centred_rank1..."""
    return "" if name == "plain" else f"{name}_"


def variant_label(name: str) -> str:
    """A variant's name as the CLIs print it: "flip + centred"."""
    return name.replace("_", " + ")


def format_figures(v: Variant) -> str:
    m = v.figures()
    keys = [("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("mAP", "mAP"),
            ("mAP_official", "mAP(official)"), ("mINP", "mINP"), ("pair_auc", "pair AUC"),
            ("pair_accuracy", "pair acc"), ("cos_auc", "cos AUC"), ("cos_accuracy", "cos acc")]
    return "  ".join(f"{label} {100 * m[k]:.1f}" for k, label in keys if k in m)


def record(weights: str | Path, thresholds: Thresholds, metrics: dict[str, Any] | None = None,
           curves: dict[str, list[float]] | None = None) -> Path:
    """Write typed thresholds (and calibration) into the weights' JSON, and with them, when given, the headline
    metrics and the curves the app's Model tab shows; the rest of the file is kept. Atomic. Returns the JSON."""
    path = config_path(weights)
    cfg = json.loads(path.read_text())
    extra = cfg.setdefault("extra", {})
    extra |= thresholds.to_extra()
    if metrics is not None:
        extra["metrics"] = metrics
    if curves:
        extra["curves"] = curves
    atomic_write_text(path, json.dumps(cfg, indent=2))
    return path


def stored_metrics(report: EvalReport, scope: str) -> dict[str, Any]:
    """The report's figures as the weights' JSON keeps them (rounded), with what they were measured on."""
    return {"evaluated_on": scope, **{k: round(float(v), 4) for k, v in report.figures().items()}}
