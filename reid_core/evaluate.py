"""The evaluation entry: embed query and gallery (any engine), then score them the way the field does.

`python -m reid_core evaluate --data DIR` runs it on the engine ReID.load picks; training calls it on its
live torch model every few epochs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .datasets import Record, ReIDData
from .embed import Embedder, Mirrored, TorchEmbedder, embed_records, flip_average
from .files import atomic_write, atomic_write_text
from .metrics import cosine_distance, euclidean_distance, market_rank, rerank, verification
from .model import SiameseReID, config_path, weights_hash


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
def pair_scores(model: SiameseReID, qf: np.ndarray, gf: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    a = torch.from_numpy(qf[pairs[:, 0]]).to(device)
    b = torch.from_numpy(gf[pairs[:, 1]]).to(device)
    return torch.sigmoid(model.pair_logit(a, b)).cpu().numpy()


def subset_eval(data: ReIDData, max_ids: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """Query and gallery restricted to a seeded sample of test identities (for quick in-training checks)."""
    pids = sorted({r.pid for r in data.query})
    if not max_ids or max_ids >= len(pids):
        return data.query, data.gallery
    keep = set(np.random.default_rng(seed).choice(pids, max_ids, replace=False).tolist())
    return [r for r in data.query if r.pid in keep], [r for r in data.gallery if r.pid in keep]


def evaluate(model: SiameseReID, query: Sequence[Record], gallery: Sequence[Record], metric: str = "cosine",
             batch_size: int = 64, threads: int | None = None, embedder: Embedder | None = None,
             do_rerank: bool = False, progress: bool = True, flip: bool = False,
             features: str | Path | None = None, curves: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Market-protocol ranking metrics plus pair verification (pair head and cosine), on plain features.

    `embedder`: what embeds the images (ReID.embedder: the engine chosen on this machine); default the model
    in torch fp32. The pair head always runs in torch, on those embeddings.

    `do_rerank` adds the k-reciprocal re-ranked figures beside them (keys `rerank_*`), `flip` the
    flip-averaged ones (`flip_*`, and `flip_rerank_*` with both): one extra embedding pass of the mirror images.
    `features`: a safetensors file that keeps the embeddings, so a second call (say with re-ranking) re-scores
    without embedding again; it is refused when other weights or another engine made it. `curves`: a dict to
    fill with the plain features' CMC, pair-score histograms and ROC (curve_data).
    The decision threshold is chosen on the pairs of half the query identities and the accuracy is
    reported on the other half, so the reported accuracy never saw its own threshold; the stored
    threshold (`pair_threshold`) is then re-chosen on all pairs.
    """
    t0 = time.time()
    plain = embedder or TorchEmbedder(model)
    made_by = f"{weights_hash(model)} {plain.name}" if features else ""  # reused by the same weights + engine only
    feats = read_features(features, made_by) if features and Path(features).exists() else {}
    if feats and (len(feats["query"]), len(feats["gallery"])) != (len(query), len(gallery)):
        raise ValueError(f"{features}: embeddings of another query/gallery ({len(feats['query'])} x "
                         f"{len(feats['gallery'])}, not {len(query)} x {len(gallery)})")
    for name, records, mirror in (("query", query, False), ("gallery", gallery, False),
                                  ("query_mirror", query, True), ("gallery_mirror", gallery, True)):
        if name not in feats and (flip or not mirror):
            feats[name] = extract(Mirrored(plain) if mirror else plain, records, batch_size, threads, name, progress)
            if features:
                # after each part (atomically): a long run stopped midway keeps what it did
                atomic_write(features, lambda tmp: save_file(feats, str(tmp), {"made_by": made_by}))
    qf, gf = feats["query"], feats["gallery"]
    variants = {"": (qf, gf)}
    if flip:
        variants["flip_"] = (flip_average(qf, feats["query_mirror"]), flip_average(gf, feats["gallery_mirror"]))
    t_embed = time.time() - t0
    res: dict[str, float] = {}
    for prefix, (q, g) in variants.items():
        res |= {prefix + k: v for k, v in score(model, q, g, query, gallery, metric,
                                                curves=curves if not prefix else None).items()}
        if do_rerank:
            res |= {prefix + "rerank_" + k: v for k, v in score(model, q, g, query, gallery, metric, True).items()
                    if k in RANK_KEYS}
    res.update(embed_seconds=t_embed, seconds=time.time() - t0)
    return res


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


RANK_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_official", "mINP")


def score(model: SiameseReID, qf: np.ndarray, gf: np.ndarray, query: Sequence[Record], gallery: Sequence[Record],
          metric: str = "cosine", do_rerank: bool = False, curves: dict[str, list[float]] | None = None,
          ) -> dict[str, float]:
    """The metrics of `evaluate` from embeddings already extracted (e.g. gathered from several processes).
    `curves`: a dict to fill with what the app's Model tab draws (see curve_data)."""
    dist = cosine_distance(qf, gf) if metric == "cosine" else euclidean_distance(qf, gf)
    if do_rerank:
        fn = cosine_distance if metric == "cosine" else euclidean_distance
        dist = rerank(dist, fn(qf, qf), fn(gf, gf))
    q_pids, q_cams = np.array([r.pid for r in query]), np.array([r.camid for r in query])
    g_pids, g_cams = np.array([r.pid for r in gallery]), np.array([r.camid for r in gallery])
    ranked = market_rank(dist, q_pids, g_pids, q_cams, g_cams)
    res = ranked.as_dict()

    pairs = verification_pairs(query, gallery)
    if len(pairs):
        labels = pairs[:, 2]
        half = q_pids[pairs[:, 0]] % 2 == 0  # split by identity parity: no identity in both halves
        for name, scores in (("pair", pair_scores(model, qf, gf, pairs)),
                             ("cos", (qf[pairs[:, 0]] * gf[pairs[:, 1]]).sum(1))):
            if half.all() or (~half).all() or len(set(labels[half])) < 2 or len(set(labels[~half])) < 2:
                v = verification(scores, labels)
            else:
                cal = verification(scores[half], labels[half]).threshold
                v = verification(scores[~half], labels[~half], threshold=cal)
                v.threshold = verification(scores, labels).threshold
            res.update(v.as_dict(f"{name}_"))
            if name == "pair" and curves is not None:
                curves.update(curve_data(ranked.cmc, scores, labels))
    res.update(num_query=len(query), num_gallery=len(gallery))
    return res


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


def format_metrics(m: dict[str, float], prefix: str = "") -> str:
    keys = [("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("mAP", "mAP"),
            ("mAP_official", "mAP(official)"), ("mINP", "mINP"), ("pair_auc", "pair AUC"),
            ("pair_accuracy", "pair acc"), ("cos_auc", "cos AUC"), ("cos_accuracy", "cos acc")]
    return "  ".join(f"{label} {100 * m[prefix + k]:.1f}" for k, label in keys if prefix + k in m)


def record_metrics(weights: str | Path, m: dict[str, float], scope: str,
                   curves: dict[str, list[float]] | None = None) -> None:
    """Make these the weights' headline metrics (what the app's Model tab shows) and store the thresholds
    chosen on held-out pairs and the curves the Model tab draws, atomically."""
    path = config_path(weights)
    cfg = json.loads(path.read_text())
    extra = cfg.setdefault("extra", {})
    extra["metrics"] = {"evaluated_on": scope, **{k: round(float(v), 4) for k, v in m.items()}}
    extra["pair_threshold"] = float(m["pair_threshold"])
    extra["cos_threshold"] = float(m["cos_threshold"])
    if curves:
        extra["curves"] = curves
    atomic_write_text(path, json.dumps(cfg, indent=2))

