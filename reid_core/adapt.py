"""Adapt a re-id model to a new camera network from unlabeled crops of it (unsupervised domain adaptation).

A model trained on one camera network loses most of its accuracy on another (Market -> CUHK03 here: Rank-1 81 ->
5). Two rungs, the second on top of the first, each measured on its own in BENCHMARKS.md:

- `bn` (AdaBN): every BatchNorm layer's statistics re-estimated on target crops by a forward pass; no labels,
  no gradient, seconds on a CPU.
- `self-train`: pseudo-label self-training as Cluster Contrast does it (embed the target crops, cluster their
  k-reciprocal Jaccard distances with DBSCAN, train on the clusters with a cluster memory, repeat). To fit a
  CPU it trains only the last stages of the backbone (`train_stages`) plus the BNNeck: the frozen trunk's
  output for each crop and its mirror image is computed once and kept, so a round costs a fraction of a
  forward pass over the target instead of several full training epochs.

Identity labels are never read: a dataset folder gives its training images (pid dropped, camera kept), any
other folder every image below it.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .base.flag_fields import setting
from .base.progress import progress_bar
from .data.datasets import DatasetError, Record, detect_layout, load_dataset
from .data.images import read_pixels
from .data.samplers import PKSampler
from .embed import list_images
from .evaluation.metrics import jaccard_distance
from .model.network import SiameseReID

METHODS = ("bn", "self-train")
MAX_SELF_TRAIN = 15_000  # crops: the Jaccard step holds a few n x n float32 matrices (~3.6 GB at 15,000)
BN_LAYERS = ("all", "backbone", "neck")


@dataclass
class AdaptConfig:
    """How to adapt (`python -m reid_core adapt` builds its flags from these fields)."""

    method: str = setting("self-train", "bn: re-estimate BatchNorm statistics on the target crops (seconds); "
                          "self-train: bn, then pseudo-label self-training of the last stages (minutes)", "adapt",
                          choices=list(METHODS))
    bn_layers: str = setting("all", "which BatchNorm statistics to re-estimate: all, backbone (not the BNNeck) or "
                             "neck (the BNNeck only)", "adapt", choices=list(BN_LAYERS))
    max_images: int = setting(0, "use at most this many target crops, a seeded sample (0: all)", "adapt")
    bn_images: int = setting(1000, "BatchNorm statistics from at most this many of them, a seeded sample (0: all; "
                             "500 gave the same figures as 7,060 on CUHK03, BENCHMARKS.md section 14)", "adapt")
    balance_cameras: bool = setting(False, "BatchNorm statistics from batches that hold every camera equally often "
                                    "(when the crops' names give cameras)", "adapt")
    rounds: int = setting(4, "self-train: cluster-then-train rounds", "self-train")
    epochs: int = setting(4, "self-train: passes over the clustered crops per round", "self-train")
    train_stages: int = setting(2, "self-train: backbone stages trained (the last N; the rest stays frozen)",
                                "self-train")
    lr: float = setting(3.5e-4, "self-train: Adam learning rate", "self-train")
    temperature: float = setting(0.05, "self-train: cluster-memory softmax temperature", "self-train")
    momentum: float = setting(0.1, "self-train: cluster-memory update (weight of the old centroid)", "self-train")
    eps: float = setting(0.5, "self-train: DBSCAN radius on the k-reciprocal Jaccard distance", "self-train")
    camera_penalty: float = setting(0.4, "self-train, when the crops' names give cameras: embeddings are centred per "
                                    "camera and same-camera distances raised by this much before clustering, so "
                                    "clusters join cameras instead of splitting by them (0: plain)", "self-train")
    min_samples: int = setting(4, "self-train: DBSCAN neighbours that make a core crop", "self-train")
    k1: int = setting(30, "self-train: k-reciprocal neighbours of the Jaccard distance", "self-train")
    k2: int = setting(6, "self-train: neighbours averaged in the Jaccard distance (query expansion)", "self-train")
    erasing: float = setting(0.5, "self-train: probability of erasing a random block of the frozen trunk's map",
                             "self-train")
    p: int = setting(16, "self-train: clusters per batch", "self-train")
    k: int = setting(4, "self-train: crops per cluster in a batch", "self-train")
    batch_size: int = setting(32, "crops per forward pass when estimating statistics and embedding", "adapt")
    seed: int = setting(0, "random seed", "adapt")

    def __post_init__(self) -> None:
        """Every setting checked here, so a bad flag is one line before any work."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.bn_layers not in BN_LAYERS:
            raise ValueError(f"bn_layers must be one of {BN_LAYERS}, not {self.bn_layers!r}")
        at_least = {"max_images": 0, "bn_images": 0, "rounds": 1, "epochs": 1, "train_stages": 1, "min_samples": 1,
                    "k1": 1, "k2": 1, "p": 2, "k": 1, "batch_size": 2}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, not {getattr(self, name)}")
        positive = {"lr": self.lr, "temperature": self.temperature, "eps": self.eps}
        for name, v in positive.items():
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, not {v}")
        for name in ("momentum", "erasing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if not (np.isfinite(self.camera_penalty) and self.camera_penalty >= 0):
            raise ValueError(f"camera_penalty must be 0 or more, not {self.camera_penalty}")


@dataclass
class Round:
    """One self-training round: what the clustering found and how training went."""

    round: int
    clusters: int
    clustered: int  # crops in a cluster (the rest are DBSCAN's outliers, left out of this round)
    loss: float
    seconds: float


@dataclass
class AdaptReport:
    method: str
    images: int  # target crops used (self-training reads them all)
    bn_images: int  # of which the BatchNorm statistics saw
    cameras: int
    seconds: float
    bn_seconds: float
    rounds: list[Round] = field(default_factory=list)

    def describe(self) -> str:
        s = (f"{self.method} on {self.images} crops ({self.cameras or 'unknown'} cameras; BatchNorm statistics from "
             f"{self.bn_images}) in {self.seconds:.0f} s")
        for r in self.rounds:
            s += (f"\n  round {r.round}: {r.clusters} clusters holding {r.clustered} crops, loss {r.loss:.3f}, "
                  f"{r.seconds:.0f} s")
        return s


def round_done(done: Sequence[Round], total: int, started: float) -> str:
    """One line after each self-training round: what it found, how long it took, and an estimate of what is left
    (the rounds still to run at the mean time of those done; the first, with the trunk maps, started at `started`)
    so a long run on busy cores says where it is."""
    r, left = done[-1], total - len(done)
    per_round = sum(d.seconds for d in done) / len(done)
    line = (f"round {r.round}/{total} done: {r.clusters} clusters holding {r.clustered} crops, loss {r.loss:.3f}, "
            f"{r.seconds / 60:.1f} min ({(time.time() - started) / 60:.1f} min in all)")
    return line + (f"; about {left * per_round / 60:.1f} min left for {left} more round{'s' * (left != 1)}"
                   if left else "")


# --- the target crops ------------------------------------------------------------------------------------------
def target_records(folder: str | Path, layout: str = "auto") -> list[Record]:
    """The unlabeled crops of a target folder: a dataset's training images (their pids dropped: -1; cameras
    kept), or every image below any other folder (camera from a Market-style `_cN` name, else -1).
    DatasetError / ValueError (one line) for a missing or image-less folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of target crops")
    try:
        kind = detect_layout(folder) if layout == "auto" else layout
    except DatasetError:
        kind = "plain"
    if kind not in ("plain", "folders"):
        recs = load_dataset(folder, kind).train
        if not recs:
            raise DatasetError(f"{folder}: no training images to adapt on")
        return [Record(r.path, -1, r.camid) for r in recs]
    from .data.datasets import parse_market_name

    out = []
    for p in list_images(folder):
        parsed = parse_market_name(p.name)
        out.append(Record(str(p), -1, parsed[1] - 1 if parsed else -1))
    return out


def sample(records: Sequence[Record], n: int, seed: int = 0) -> list[Record]:
    """A seeded sample of n records (all of them, in a seeded order, when n is 0 or too large)."""
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order[: n or None]]


def camera_balanced(records: Sequence[Record]) -> list[Record]:
    """The records reordered so that cameras take turns (every batch holds each camera about equally often),
    as many as the least-seen camera allows; unchanged when fewer than two cameras are known."""
    by_cam: dict[int, list[Record]] = {}
    for r in records:
        by_cam.setdefault(r.camid, []).append(r)
    if len(by_cam) < 2 or -1 in by_cam:
        return list(records)
    return [r for turn in zip(*by_cam.values(), strict=False) for r in turn]


def pixel_batches(records: Sequence[Record], size: tuple[int, int], batch_size: int = 64,
                  desc: str = "read", progress: bool = True, kept: list[int] | None = None) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches in order; the next batch decodes in a thread while the caller computes.
    Unreadable crops are skipped (a user's folder of crops may hold a few); `kept` collects the positions of
    the crops that were read."""
    starts = range(0, len(records), batch_size)
    with ThreadPoolExecutor(1) as pool:
        jobs = [pool.submit(read_pixels, records[s:s + batch_size], size, True) for s in starts[:2]]
        for i in progress_bar(range(len(starts)), desc=desc, disable=not progress, unit="batch"):
            pixels, positions, _ = jobs[i].result()
            if kept is not None:
                kept += (positions + starts[i]).tolist()
            if i + 2 < len(starts):
                s = starts[i + 2]
                jobs.append(pool.submit(read_pixels, records[s:s + batch_size], size, True))
            if pixels is not None:
                yield pixels


# --- rung 1: BatchNorm statistics ------------------------------------------------------------------------------
def bn_modules(model: SiameseReID, layers: str = "all") -> list[nn.modules.batchnorm._BatchNorm]:
    if layers not in BN_LAYERS:
        raise ValueError(f"bn_layers must be one of {BN_LAYERS}, not {layers!r}")
    parts = {"all": [model], "backbone": [model.backbone], "neck": [model.bnneck]}[layers]
    return [m for part in parts for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_bn(model: SiameseReID, batches: Iterable[torch.Tensor], layers: str = "all") -> int:
    """Re-estimate the chosen BatchNorm layers' running mean and variance on `batches` (uint8 pixels of target
    crops): each layer's statistics restart and become the cumulative average over the batches (AdaBN). The
    rest of the model stays in eval mode; the model is left in eval mode. Returns the images seen."""
    bns = bn_modules(model, layers)
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    seen, carry = 0, None
    try:
        for x in batches:
            if carry is not None:  # a lone image cannot give a batch's statistics: it joins the next batch
                x, carry = torch.cat([carry, x]), None
            if len(x) < 2:
                carry = x
                continue
            model(x.to(model.pixel_mean.device).contiguous(memory_format=torch.channels_last))
            seen += len(x)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.eval()
    if not seen:
        raise ValueError("BatchNorm adaptation needs at least 2 readable target crops")
    return seen


# --- rung 2: pseudo-label self-training on the last stages -----------------------------------------------------
def backbone_parts(backbone: nn.Module) -> tuple[list[nn.Module], int]:
    """forward_features as a list of modules run in order, and the index of the first stage in it. timm's ResNet
    (conv1 ... layer4) and EfficientNet family (conv_stem, bn1, blocks..., conv_head, bn2); other backbones
    are refused in one line."""
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        return [backbone.conv1, backbone.bn1, backbone.act1, backbone.maxpool, backbone.layer1, backbone.layer2,
                backbone.layer3, backbone.layer4], 4
    if hasattr(backbone, "blocks") and hasattr(backbone, "conv_head"):
        return [backbone.conv_stem, backbone.bn1, *backbone.blocks, backbone.conv_head, backbone.bn2], 2
    raise ValueError(f"self-training supports timm ResNet and EfficientNet backbones, not "
                     f"{type(backbone).__name__}; use --method bn")


class Split(nn.Module):
    """The model cut in two: a frozen `trunk` (pixels -> an intermediate map) and a trainable `top` (that map ->
    the post-BN embedding), with top(trunk(x)) == model(x)["emb"]."""

    def __init__(self, model: SiameseReID, train_stages: int):
        super().__init__()
        parts, first_stage = backbone_parts(model.backbone)
        stages = len(parts) - first_stage - (2 if parts[-1] is getattr(model.backbone, "bn2", None) else 0)
        if not 1 <= train_stages <= stages:
            raise ValueError(f"train_stages must be 1..{stages} for {model.cfg.backbone}, not {train_stages}")
        cut = first_stage + stages - train_stages
        self.model = model
        self.trunk, self.top = nn.Sequential(*parts[:cut]), nn.Sequential(*parts[cut:])

    @torch.no_grad()
    def trunk_map(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = x.to(m.pixel_mean.device).contiguous(memory_format=torch.channels_last)  # 2x faster on a CPU
        return self.trunk((x.float() - m.pixel_mean) / m.pixel_std)

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        feat = self.top(f.contiguous(memory_format=torch.channels_last)).float().mean(dim=(2, 3))
        if m.proj is not None:
            feat = m.proj(feat)
        return {"feat": feat, "emb": m.bnneck(feat)}

    def trainable(self) -> list[nn.Parameter]:
        m = self.model
        return [*self.top.parameters(), m.bnneck.weight, *(m.proj.parameters() if m.proj is not None else [])]

    def train_mode(self) -> None:
        """Only the trained part learns BatchNorm statistics; the trunk keeps the adapted ones."""
        self.model.eval()
        self.top.train()
        self.model.bnneck.train()


def erase_blocks(f: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Random erasing on feature maps: with probability p a random block (2-40 % of the map, aspect 0.3-3.3)
    of each sample is zeroed, as random erasing does on pixels."""
    if p <= 0:
        return f
    f = f.clone()
    n, _, h, w = f.shape
    u = torch.rand(n, 4, generator=gen)
    for i in range(n):
        if u[i, 0] >= p:
            continue
        area = (0.02 + 0.38 * u[i, 1].item()) * h * w
        aspect = float(np.exp(np.log(0.3) + (np.log(3.3) - np.log(0.3)) * u[i, 2].item()))
        eh, ew = min(h, max(1, round((area * aspect) ** 0.5))), min(w, max(1, round((area / aspect) ** 0.5)))
        top, left = int(u[i, 3].item() * (h - eh + 1)), int(torch.randint(0, w - ew + 1, (1,), generator=gen))
        f[i, :, top:top + eh, left:left + ew] = 0
    return f


class ClusterMemory:
    """Cluster Contrast's memory: one unit centroid per pseudo-identity; the loss is the softmax over all
    centroids at a temperature; after each step a cluster's centroid moves toward its hardest crop in the batch."""

    def __init__(self, centroids: torch.Tensor, temperature: float = 0.05, momentum: float = 0.1):
        self.bank = F.normalize(centroids, dim=1)
        self.temperature, self.momentum = temperature, momentum

    def loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        f = F.normalize(emb, dim=1)
        loss = F.cross_entropy(f @ self.bank.clone().T / self.temperature, labels)  # the bank moves below
        with torch.no_grad():
            sim = (f * self.bank[labels]).sum(1)
            for c in labels.unique():
                rows = (labels == c).nonzero().squeeze(1)
                hard = f[rows[sim[rows].argmin()]]
                self.bank[c] = F.normalize(self.momentum * self.bank[c] + (1 - self.momentum) * hard, dim=0)
        return loss


@torch.no_grad()
def embed_maps(split: Split, maps: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Unit embeddings from cached trunk maps (eval mode)."""
    split.model.eval()
    device = split.model.pixel_mean.device
    out = [F.normalize(split(maps[s:s + batch_size].to(device).float())["emb"], dim=1)
           for s in range(0, len(maps), batch_size)]
    return torch.cat(out).cpu().numpy()


def cluster(emb: np.ndarray, cfg: AdaptConfig, cams: np.ndarray | None = None) -> np.ndarray:
    """DBSCAN on the k-reciprocal Jaccard distance (SpCL / Cluster Contrast): a label per crop, -1 for outliers.

    With cameras (`cams`, 0-based, two or more), camera-aware: each camera's mean embedding is removed and
    same-camera pairs are pushed `cfg.camera_penalty` apart first. A network's cameras differ more than its
    people do, so plain clusters mostly gather one camera's crops (20 % of them spanned both cameras of CUHK03's
    training half); these span both in 66 %, at the same purity (BENCHMARKS.md section 14)."""
    from sklearn.cluster import DBSCAN

    if cams is not None and cfg.camera_penalty > 0 and len(np.unique(cams)) > 1:
        emb = emb.copy()
        for c in np.unique(cams):
            emb[cams == c] -= emb[cams == c].mean(0)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        penalty = cfg.camera_penalty * (cams[:, None] == cams[None, :])
        np.fill_diagonal(penalty, 0)
        dist = jaccard_distance(emb, cfg.k1, cfg.k2, penalty)
    else:
        dist = jaccard_distance(emb, cfg.k1, cfg.k2)
    return DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, metric="precomputed", n_jobs=1).fit_predict(dist)


def self_train(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig, progress: bool = True,
               on_round: Callable[[Round, SiameseReID], None] | None = None) -> list[Round]:
    """Cluster-then-train rounds on the last `cfg.train_stages` stages (in place). `on_round` is called after
    each round (benchmarks score every round with it)."""
    if len(records) > MAX_SELF_TRAIN:
        raise ValueError(f"self-training keeps {len(records):,} crops' maps and an n x n distance in memory; use at "
                         f"most {MAX_SELF_TRAIN:,} (--max-images {MAX_SELF_TRAIN})")
    split = Split(model, cfg.train_stages)
    size = (model.cfg.height, model.cfg.width)
    maps, kept = [], []  # (N, C, h, w) fp16 for each crop, then for each mirror image; which crops they are
    started = time.time()
    for x in pixel_batches(records, size, cfg.batch_size, "trunk", progress, kept):
        maps.append(torch.stack([split.trunk_map(x), split.trunk_map(x.flip(3))]).half().contiguous())
    if not maps:
        raise ValueError("self-training needs readable target crops")
    cache = torch.cat(maps, dim=1)  # (2, N, C, h, w)
    n = cache.shape[1]
    cams = np.array([records[i].camid for i in kept])
    cams = cams if cams.min() >= 0 else None  # camera-aware clustering only where every crop's camera is known
    for p in model.parameters():
        p.requires_grad_(False)
    params = split.trainable()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    rounds = []
    try:
        for r in range(cfg.rounds):
            t0 = time.time()
            emb = embed_maps(split, cache[0]) + embed_maps(split, cache[1])  # flip-averaged, for clustering
            labels = cluster(emb / np.linalg.norm(emb, axis=1, keepdims=True), cfg, cams)
            keep = np.flatnonzero(labels >= 0)
            k = int(labels.max()) + 1
            if k < cfg.p:
                raise ValueError(f"round {r + 1}: only {k} clusters among {n} crops (need at least {cfg.p}); "
                                 "more target crops, or --method bn")
            device = model.pixel_mean.device
            centroids = torch.from_numpy(np.stack([emb[labels == c].mean(0) for c in range(k)])).to(device)
            memory = ClusterMemory(centroids, cfg.temperature, cfg.momentum)
            sampler = PKSampler(labels[keep].tolist(), cfg.p, cfg.k, seed=cfg.seed * 1000 + r)
            losses = []
            split.train_mode()
            steps = sum(len(sampler.batches(e)) for e in range(cfg.epochs))  # the bar's total: the real steps
            bar = progress_bar(total=steps, desc=f"round {r + 1}/{cfg.rounds}", disable=not progress)
            for e in range(cfg.epochs):
                for batch in sampler.batches(e):
                    idx = torch.from_numpy(keep[batch])
                    mirror = torch.randint(0, 2, (len(idx),), generator=gen)
                    f = erase_blocks(cache[mirror, idx].float(), cfg.erasing, gen).to(device)
                    loss = memory.loss(split(f)["emb"], torch.from_numpy(labels[idx.numpy()]).long().to(device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                    bar.update()
            bar.close()
            model.eval()
            rounds.append(Round(r + 1, k, len(keep), float(np.mean(losses)) if losses else float("nan"),
                                time.time() - t0))
            if progress:
                tqdm.write(round_done(rounds, cfg.rounds, started), file=sys.stderr)
            if on_round is not None:
                on_round(rounds[-1], model)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.bnneck.bias.requires_grad_(False)
        model.eval()
    return rounds


# --- the whole recipe ------------------------------------------------------------------------------------------
def adapt_model(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig, progress: bool = True,
                on_round: Callable[[Round, SiameseReID], None] | None = None) -> tuple[SiameseReID, AdaptReport]:
    """A copy of `model` adapted to the target crops `records` (labels unread): BatchNorm statistics, then, with
    method self-train, the self-training rounds."""
    t0 = time.time()
    records = sample(records, cfg.max_images, cfg.seed)
    if len(records) < 2:
        raise ValueError(f"adaptation needs at least 2 target crops, got {len(records)}")
    model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    size = (model.cfg.height, model.cfg.width)
    bn_records = records[: cfg.bn_images or None]  # records are in a seeded order already
    bn_records = camera_balanced(bn_records) if cfg.balance_cameras else bn_records
    seen = adapt_bn(model, pixel_batches(bn_records, size, cfg.batch_size, "BatchNorm statistics", progress),
                    cfg.bn_layers)
    bn_seconds = time.time() - t0
    rounds = self_train(model, records, cfg, progress, on_round) if cfg.method == "self-train" else []
    cams = len({r.camid for r in records if r.camid >= 0})
    used = len(records) if cfg.method == "self-train" else seen
    return model, AdaptReport(cfg.method, used, seen, cams, time.time() - t0, bn_seconds, rounds)


THRESHOLDS_INHERITED = ("the source weights': chosen on the source cameras' held-out pairs, not on these cameras "
                        "(adaptation reads no labels; `evaluate --record` on labelled crops of these cameras "
                        "chooses them anew)")
THRESHOLDS_CHOSEN = "chosen anew on the target's held-out pairs (labels used for scoring only)"


def provenance(cfg: AdaptConfig, report: AdaptReport, source: str, target: str,
               thresholds_from: str = THRESHOLDS_INHERITED) -> dict[str, Any]:
    """What model.json records of an adaptation (extra.adapted), including where the decision thresholds and
    the calibration came from: an adapted model scores pairs of the new cameras with the source's unless they
    were chosen anew."""
    return {"source_weights": source, "target": Path(target).name, "target_images": report.images,
            "thresholds_from": thresholds_from,
            "bn_images": report.bn_images,
            "target_cameras": report.cameras, "method": cfg.method, "settings": asdict(cfg),
            "seconds": round(report.seconds, 1), "rounds": [asdict(r) for r in report.rounds]}
