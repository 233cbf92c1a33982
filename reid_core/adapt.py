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
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base.flag_fields import setting
from .base.progress import progress_bar
from .data.datasets import DatasetError, Record, detect_layout, load_dataset
from .data.images import read_pixels
from .data.samplers import PKSampler
from .embed import list_images
from .evaluation.neighbours import jaccard_graph, mutual_share
from .model.network import SiameseReID
from .train.mean_teacher import MeanTeacher
from .train.proxies import CameraProxies

METHODS = ("bn", "self-train")
KEEP = ("best", "last")
CACHE_IN_MEMORY = 2 << 30  # bytes of trunk maps kept in memory; a larger cache is a memory-mapped temp file
MIN_CLUSTERED = 0.2  # clusters holding fewer of the crops than this cannot teach: the BatchNorm rung is kept
MIN_CROSS_CAMERA = 0.1  # ... nor clusters of which fewer span two cameras (when cameras are known)
CAMERA_FOLDER = re.compile(r"^cam(?:era)?(?:[-_ ]?(\d+)|[-_ ]([a-z0-9]+))$", re.I)  # cam1/, cam_a/, Camera-2/
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
    keep: str = setting("last", "self-train: the rung the adapted model is: last (the last round; the run says "
                        "when the signal without labels, crops matched mutually across cameras, puts it below "
                        "another rung beyond its noise) or best (the last rung within that noise of the best "
                        "signal; on CUHK03 the signal fell while accuracy rose, BENCHMARKS.md 24.3)", "self-train",
                        choices=list(KEEP))
    epochs: int = setting(4, "self-train: passes over the clustered crops per round", "self-train")
    max_steps: int = setting(600, "self-train: at most this many training steps a round, its epochs cut short past "
                             "it, so a round's time stops growing with the crops (as Cluster Contrast's fixed "
                             "iterations per epoch; CUHK03's 7,060 crops take about 280)", "self-train")
    train_stages: int = setting(2, "self-train: backbone stages trained (the last N; the rest stays frozen)",
                                "self-train")
    lr: float = setting(3.5e-4, "self-train: Adam learning rate", "self-train")
    temperature: float = setting(0.05, "self-train: cluster-memory softmax temperature", "self-train")
    momentum: float = setting(0.1, "self-train: cluster-memory update (weight of the old centroid)", "self-train")
    eps: float = setting(0.5, "self-train: DBSCAN radius on the k-reciprocal Jaccard distance", "self-train")
    camera_penalty: float = setting(0.4, "self-train, when the crops' names give cameras: embeddings are centred per "
                                    "camera and same-camera distances raised by this much before clustering, so "
                                    "clusters join cameras instead of splitting by them (0: plain)", "self-train")
    camera_proxies: float = setting(0.0, "self-train, when the crops' cameras are known: weight of the camera-aware "
                                    "proxy terms (intra- and inter-camera contrastive, as CAP / ICE; 0: off)",
                                    "self-train")
    teacher_momentum: float = setting(0.0, "self-train: a mean teacher (MMT): the clusters and the kept model come "
                                      "from a moving average of the trained weights, which keeps this share of "
                                      "itself at each step (0: off; 0.99: about 70 steps' memory)", "self-train")
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
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, not {self.keep!r}")
        if self.bn_layers not in BN_LAYERS:
            raise ValueError(f"bn_layers must be one of {BN_LAYERS}, not {self.bn_layers!r}")
        at_least = {"max_images": 0, "bn_images": 0, "rounds": 1, "epochs": 1, "train_stages": 1, "min_samples": 1,
                    "max_steps": 1, "k1": 1, "k2": 1, "p": 2, "k": 1, "batch_size": 2}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, not {getattr(self, name)}")
        positive = {"lr": self.lr, "temperature": self.temperature, "eps": self.eps}
        for name, v in positive.items():
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, not {v}")
        if not 0 <= self.teacher_momentum < 1:
            raise ValueError(f"teacher_momentum must be in [0, 1), not {self.teacher_momentum}")
        for name in ("momentum", "erasing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if not (np.isfinite(self.camera_proxies) and self.camera_proxies >= 0):
            raise ValueError(f"camera_proxies must be 0 or more, not {self.camera_proxies}")
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
    agreement: float | None = None  # the unsupervised signal of the model after this round (see rung_signal)


@dataclass
class AdaptReport:
    method: str
    images: int  # target crops used (self-training reads them all)
    bn_images: int  # of which the BatchNorm statistics saw
    cameras: int
    seconds: float
    bn_seconds: float
    rounds: list[Round] = field(default_factory=list)
    bn_agreement: float | None = None  # the BatchNorm rung's signal, when self-training measured it
    kept: str = ""  # the rung the adapted model is: "bn" or "round N"
    reason: str = ""  # why, in one line

    def describe(self) -> str:
        s = (f"{self.method} on {self.images} crops ({self.cameras or 'unknown'} cameras; BatchNorm statistics from "
             f"{self.bn_images}) in {self.seconds:.0f} s")
        if self.bn_agreement is not None:
            s += f"\n  BatchNorm rung: agreement {self.bn_agreement:.3f}"
        for r in self.rounds:
            s += (f"\n  round {r.round}: {r.clusters} clusters holding {r.clustered} crops, loss {r.loss:.3f}, "
                  f"{r.seconds:.0f} s, agreement {r.agreement:.3f}")
        if self.kept:
            s += f"\n  kept: {self.kept} ({self.reason})"
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
    kept), or every image below any other folder: cameras from Market-style `_cN` names, or, when no name
    carries one, from camera folders (`cam_a/...`, `cam1/...`: camera_folder), else -1 (unknown).
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

    paths = list_images(folder)
    names = [parse_market_name(p.name) for p in paths]
    if any(names):  # cameras in the file names (Market / Duke style): as before, those that parse
        return [Record(str(p), -1, n[1] - 1 if n else -1) for p, n in zip(paths, names, strict=True)]
    folders = [camera_folder(p.relative_to(folder)) for p in paths]
    ids = {name: i for i, name in enumerate(sorted({f for f in folders if f is not None}))}
    return [Record(str(p), -1, ids[f] if f is not None else -1) for p, f in zip(paths, folders, strict=True)]


def image_records(images: Sequence[Any], cameras: Sequence[int] | None = None,
                  tracks: Sequence[int] | None = None) -> list[Record]:
    """Crops already in memory (any ImageLike: the app's gallery pictures, a video's tracklet crops) as unlabeled
    target records, with each one's camera and tracklet (-1: unknown): read_pixels reads a record's `path` with
    load_image, which takes an image as well as a file."""
    cams = [-1] * len(images) if cameras is None else [int(c) for c in cameras]
    tids = [-1] * len(images) if tracks is None else [int(t) for t in tracks]
    if not len(cams) == len(tids) == len(images):
        raise ValueError(f"{len(images)} crops but {len(cams)} cameras and {len(tids)} tracklets")
    return [Record(img, -1, cam, t) for img, cam, t in zip(images, cams, tids, strict=True)]


def camera_folder(relative: Path) -> str | None:
    """The camera a crop's folders name (`cam_a/...`, `cam1/...`, the innermost such folder), or None."""
    for part in reversed(relative.parts[:-1]):
        if m := CAMERA_FOLDER.match(part):
            return (m.group(1) or m.group(2)).lower()
    return None


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
def adapt_bn(model: SiameseReID, batches: Iterable[torch.Tensor], layers: str = "all",
             turn: Callable[[], AbstractContextManager[Any]] = nullcontext) -> int:
    """Re-estimate the chosen BatchNorm layers' running mean and variance on `batches` (uint8 pixels of target
    crops): each layer's statistics restart and become the cumulative average over the batches (AdaBN). The
    rest of the model stays in eval mode; the model is left in eval mode. Each batch's pass waits for a `turn`
    (the app's fair lane). Returns the images seen."""
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
            with turn():
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
def embed_maps(split: Split, cache: torch.Tensor, batch_size: int = 256, desc: str = "embed",
               progress: bool = False) -> np.ndarray:
    """Unit embeddings from cached trunk maps (2, N, ...), the crop's and its mirror image's averaged (eval mode)."""
    split.model.eval()
    device = split.model.pixel_mean.device
    n = cache.shape[1]
    out = np.empty((n, 0), np.float32)
    bar = progress_bar(total=n, desc=desc, unit="crop", disable=not progress)
    for s in range(0, n, batch_size):
        e = sum(split(cache[m, s:s + batch_size].to(device).float())["emb"] for m in (0, 1))
        e = F.normalize(e, dim=1).cpu().numpy()
        out = np.empty((n, e.shape[1]), np.float32) if not out.shape[1] else out
        out[s:s + len(e)] = e
        bar.update(len(e))
    bar.close()
    return out


def cluster(emb: np.ndarray, cfg: AdaptConfig, cams: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """DBSCAN on the k-reciprocal Jaccard distance (SpCL / Cluster Contrast): a label per crop, -1 for outliers.
    The distance is a sparse graph (each crop's k1 nearest: reid_core.neighbours), so memory grows with n k1.

    With cameras (`cams`, 0-based, two or more), camera-aware: each camera's mean embedding is removed and
    same-camera pairs are pushed `cfg.camera_penalty` apart first. A network's cameras differ more than its
    people do, so plain clusters mostly gather one camera's crops (20 % of them spanned both cameras of CUHK03's
    training half); these span both in 66 %, at the same purity (BENCHMARKS.md section 14)."""
    from sklearn.cluster import DBSCAN

    penalty = 0.0
    if cams is not None and cfg.camera_penalty > 0 and len(np.unique(cams)) > 1:
        emb = emb.copy()
        for c in np.unique(cams):
            emb[cams == c] -= emb[cams == c].mean(0)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        penalty = cfg.camera_penalty
    graph = jaccard_graph(emb, cfg.k1, cfg.k2, cams if penalty else None, penalty, progress)
    return DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, metric="precomputed", n_jobs=1).fit_predict(graph)


def tracklet_labels(labels: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """Pseudo-labels that keep each tracklet whole (a tracker's track is one person: free positives): every crop of
    a track takes the label most of its clustered crops have, outliers included; a track none of whose crops
    clustered stays out. Crops of no track (-1) keep their own label."""
    out = labels.copy()
    for t in np.unique(tracks[tracks >= 0]):
        members = np.flatnonzero(tracks == t)
        votes = labels[members][labels[members] >= 0]
        if len(votes):
            out[members] = np.bincount(votes).argmax()
    return out


def clustering_support(labels: np.ndarray, cams: np.ndarray | None, cfg: AdaptConfig) -> str | None:
    """Why these pseudo-labels cannot teach, in one line, or None. Too few clusters for a batch; too few crops in
    clusters (DBSCAN needs `min_samples` crops of one person close together: a network with one or two crops per
    person leaves almost all of them outliers); clusters that hardly ever join two cameras (training on them
    teaches nothing about matching across cameras, which is the task)."""
    n, k = len(labels), int(labels.max()) + 1
    clustered = int((labels >= 0).sum())
    if k < cfg.p:
        return f"only {k} clusters among {n:,} crops, and a batch needs {cfg.p}"
    if clustered < MIN_CLUSTERED * n:
        return (f"only {clustered:,} of {n:,} crops ({clustered / n:.0%}) fall in clusters: too few crops per person "
                f"for DBSCAN's {cfg.min_samples} neighbours")
    if cams is not None and len(np.unique(cams)) > 1:
        keep = labels >= 0
        spans = np.array([len(np.unique(cams[keep][labels[keep] == c])) > 1 for c in range(k)])
        if spans.mean() < MIN_CROSS_CAMERA:
            return f"only {spans.mean():.0%} of the {k} clusters span two cameras"
    return None


def rung_signal(emb: np.ndarray, cams: np.ndarray | None) -> float:
    """The unsupervised signal that chooses between rungs: the share of crops that are mutual nearest neighbours
    across cameras (i's best match in the other cameras has i as its own best match there), or among all crops
    when cameras are unknown. It reads no label and no pseudo-label (a model trained on its own clusters would
    always prefer them); it rises when one person's crops in two cameras find each other, which is what Rank-1
    counts (BENCHMARKS.md section 24 checks it against the held-out figures)."""
    return mutual_share(emb, cams)


def kept_rung(signals: Sequence[float], n: int) -> int:
    """Which rung to keep (0: the BatchNorm rung, r: round r) from each rung's signal, a share of `n` crops: the
    last within two standard errors (binomial, sqrt(p (1 - p) / n) at the best share) of the best. Rungs that
    close cannot be told apart by the signal (on CUHK03 two runs of one recipe differed by 0.008 at round 1,
    more than rung to rung), and later rounds have trained longer, so the tie goes to them; a round is dropped
    for the BatchNorm rung only when the signal says it is worse beyond its noise."""
    best = max(signals)
    margin = 2 * float(np.sqrt(best * (1 - best) / max(n, 1)))
    return max(i for i, s in enumerate(signals) if s >= best - margin)


def trunk_cache(split: Split, records: Sequence[Record], size: tuple[int, int]) -> tuple[tuple[int, ...], int]:
    """The shape of the trunk-map cache of `records` (2, N, C, h, w) and its bytes (fp16), from one dummy crop
    (in eval mode, so no BatchNorm statistic moves)."""
    was = split.model.training
    split.model.eval()
    with torch.no_grad():
        shape = tuple(split.trunk_map(torch.zeros(1, 3, *size, dtype=torch.uint8)).shape[1:])
    split.model.train(was)
    full = (2, len(records), *shape)
    return full, 2 * int(np.prod(full))


def check_cache_room(nbytes: int) -> None:
    """A cache too large for memory goes to a temporary file: refuse before any work if the disk has no room."""
    import shutil

    free = shutil.disk_usage(tempfile.gettempdir()).free
    if nbytes > CACHE_IN_MEMORY and free < nbytes * 1.1:
        raise ValueError(f"self-training caches {nbytes / 2**30:.1f} GiB of trunk maps in {tempfile.gettempdir()}, "
                         f"which has {free / 2**30:.1f} GiB free; free some, set TMPDIR, or use --max-images")


def empty_cache(shape: tuple[int, ...]) -> torch.Tensor:
    """fp16 trunk maps: in memory up to CACHE_IN_MEMORY bytes, else a memory-mapped temporary file (unlinked at
    once: the space is freed when the tensor goes, and the OS pages it as memory allows)."""
    if 2 * int(np.prod(shape)) <= CACHE_IN_MEMORY:
        return torch.empty(shape, dtype=torch.float16)
    with tempfile.NamedTemporaryFile(prefix="reid-trunk-maps-", suffix=".f16") as f:
        arr = np.memmap(f.name, np.float16, "w+", shape=shape)
    return torch.from_numpy(arr)


def fill_cache(split: Split, records: Sequence[Record], cfg: AdaptConfig, progress: bool,
               ) -> tuple[torch.Tensor, list[int]]:
    """Each crop's and its mirror image's trunk map (2, N, C, h, w) fp16, and which crops were readable."""
    size = (split.model.cfg.height, split.model.cfg.width)
    shape, _ = trunk_cache(split, records, size)
    cache, kept, n = empty_cache(shape), [], 0
    for x in pixel_batches(records, size, cfg.batch_size, "trunk maps", progress, kept):
        cache[0, n:n + len(x)] = split.trunk_map(x).half()
        cache[1, n:n + len(x)] = split.trunk_map(x.flip(3)).half()
        n += len(x)
    if not n:
        raise ValueError("self-training needs readable target crops")
    return cache[:, :n], kept


def train_round(split: Split, cache: torch.Tensor, labels: np.ndarray, emb: np.ndarray, opt: torch.optim.Optimizer,
                cfg: AdaptConfig, r: int, gen: torch.Generator, progress: bool, cams: np.ndarray | None = None,
                teacher: MeanTeacher | None = None) -> float:
    """One round's epochs on the clusters `labels` (-1: left out), with camera-aware proxies when `cams` are
    known and cfg.camera_proxies > 0, the `teacher` following each step; the mean loss."""
    model = split.model
    device = model.pixel_mean.device
    keep = np.flatnonzero(labels >= 0)
    k = int(labels.max()) + 1
    centroids = torch.from_numpy(np.stack([emb[labels == c].mean(0) for c in range(k)])).to(device)
    memory = ClusterMemory(centroids, cfg.temperature, cfg.momentum)
    proxies = None
    if cams is not None and cfg.camera_proxies > 0:
        proxies = CameraProxies(torch.from_numpy(emb).to(device), torch.from_numpy(labels).to(device),
                                torch.from_numpy(cams).to(device))
    sampler = PKSampler(labels[keep].tolist(), cfg.p, cfg.k, seed=cfg.seed * 1000 + r)
    losses = []
    split.train_mode()
    steps = min(cfg.max_steps, sum(len(sampler.batches(e)) for e in range(cfg.epochs)))  # the bar's total
    bar = progress_bar(total=steps, desc=f"round {r + 1}/{cfg.rounds} training", disable=not progress)
    for e in range(cfg.epochs):
        for batch in sampler.batches(e)[: steps - len(losses)]:
            idx = torch.from_numpy(keep[batch])
            mirror = torch.randint(0, 2, (len(idx),), generator=gen)
            f = erase_blocks(cache[mirror, idx].float(), cfg.erasing, gen).to(device)
            out = split(f)["emb"]
            loss = memory.loss(out, torch.from_numpy(labels[idx.numpy()]).long().to(device))
            if proxies is not None:
                loss = loss + cfg.camera_proxies * proxies.loss(out, idx.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if teacher is not None:
                teacher.update(model)
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=e + 1, loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    model.eval()
    return float(np.mean(losses)) if losses else float("nan")


@dataclass
class SelfTrainResult:
    rounds: list[Round]
    bn_agreement: float | None
    kept: str  # "bn" or "round N"
    reason: str


def self_train(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig, progress: bool = True,
               on_round: Callable[[Round, SiameseReID], None] | None = None) -> SelfTrainResult:
    """Cluster-then-train rounds on the last `cfg.train_stages` stages (in place), then the rung the unsupervised
    signal (rung_signal) keeps restored (kept_rung): the BatchNorm rung itself when every round is worse by it,
    or when the first clustering cannot support training (clustering_support). Crops of one tracklet (Record.track)
    share a pseudo-label (tracklet_labels). `on_round` is called after each round (benchmarks score every round)."""
    split = Split(model, cfg.train_stages)
    cache, kept = fill_cache(split, records, cfg, progress)
    n = cache.shape[1]
    cams = np.array([records[i].camid for i in kept])
    cams = cams if cams.min() >= 0 and len(np.unique(cams)) > 1 else None  # only where every camera is known
    tracks = np.array([records[i].track for i in kept])
    for p in model.parameters():
        p.requires_grad_(False)
    params = split.trainable()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=5e-4)
    torch.set_flush_denormal(True)  # tiny values from training are slow on a CPU: they read as 0
    teacher = MeanTeacher(model, cfg.teacher_momentum) if cfg.teacher_momentum > 0 else None
    view = split if teacher is None else Split(teacher.model, cfg.train_stages)  # what clusters and is kept
    gen = torch.Generator().manual_seed(cfg.seed)
    rounds: list[Round] = []
    started = time.time()
    states = [copy.deepcopy(model.state_dict())]  # each rung's weights: the BatchNorm rung, then each round's
    stopped = ""
    try:
        emb = embed_maps(split, cache, desc="BatchNorm rung: embedding", progress=progress)
        bn_agreement = rung_signal(emb, cams)
        if progress:
            print(f"BatchNorm rung: agreement {bn_agreement:.3f}", file=sys.stderr)
        for r in range(cfg.rounds):
            t0 = time.time()
            labels = tracklet_labels(cluster(emb, cfg, cams, progress), tracks)
            if why := clustering_support(labels, cams, cfg):
                stopped = f"round {r + 1}'s clusters cannot teach: {why}"
                break
            loss = train_round(split, cache, labels, emb, opt, cfg, r, gen, progress, cams, teacher)
            emb = embed_maps(view, cache, desc=f"round {r + 1}/{cfg.rounds} embedding", progress=progress)
            agreement = rung_signal(emb, cams)
            rounds.append(Round(r + 1, int(labels.max()) + 1, int((labels >= 0).sum()), loss, time.time() - t0,
                                agreement))
            states.append(copy.deepcopy(view.model.state_dict()))
            if on_round is not None:
                on_round(rounds[-1], view.model)
            if progress:
                print(f"{round_done(rounds, cfg.rounds, started)} (of {n:,} crops; agreement {agreement:.3f})",
                      file=sys.stderr)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.bnneck.bias.requires_grad_(False)
        model.eval()
    signals = [bn_agreement, *(r.agreement for r in rounds)]
    by_signal = kept_rung(signals, n)
    kept = len(rounds) if cfg.keep == "last" else by_signal
    model.load_state_dict(states[kept])
    signal = "crops matched mutually across cameras" if cams is not None else "mutual nearest neighbours"
    said = f"{signal}: BatchNorm rung {bn_agreement:.3f}, " + ", ".join(f"round {r.round} {r.agreement:.3f}"
                                                                        for r in rounds)
    if not rounds:
        reason = f"{stopped}; {signal}: BatchNorm rung {bn_agreement:.3f}"
    elif cfg.keep == "last":
        doubt = "" if by_signal == kept else (
            f"; by the signal, {'the BatchNorm rung' if by_signal == 0 else f'round {by_signal}'} is better beyond "
            "its noise: "
            "check on labelled crops of these cameras (evaluate) or use --keep best")
        reason = f"the last round ({said}){doubt}"
    elif kept == 0:
        reason = f"every round had fewer {signal} than the BatchNorm rung, beyond the signal's noise ({said})"
    else:
        reason = f"the last rung within the signal's noise of the best ({said})"
    if stopped and rounds:
        reason += f"; stopped: {stopped}"
    return SelfTrainResult(rounds, bn_agreement, f"round {kept}" if kept else "bn", reason)


# --- the whole recipe ------------------------------------------------------------------------------------------
def preflight(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig) -> list[Record]:
    """Everything that can refuse an adaptation, checked before any pass (the CLI asks before its "before"
    evaluation too): enough crops, a backbone and number of stages self-training can split, disk for a large
    cache. Returns the crops used (cfg.max_images of them, in a seeded order)."""
    records = sample(records, cfg.max_images, cfg.seed)
    if len(records) < 2:
        raise ValueError(f"adaptation needs at least 2 target crops, got {len(records)}")
    if cfg.method == "self-train":
        check_cache_room(trunk_cache(Split(model, cfg.train_stages), records, (model.cfg.height, model.cfg.width))[1])
    return records


def adapt_model(model: SiameseReID, records: Sequence[Record], cfg: AdaptConfig, progress: bool = True,
                on_round: Callable[[Round, SiameseReID], None] | None = None) -> tuple[SiameseReID, AdaptReport]:
    """A copy of `model` adapted to the target crops `records` (labels unread): BatchNorm statistics, then, with
    method self-train, the self-training rounds. Whatever can refuse (too few crops, a backbone or a number of
    stages self-training cannot split, no disk for a large cache) refuses before the first pass."""
    t0 = time.time()
    records = preflight(model, records, cfg)
    model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    size = (model.cfg.height, model.cfg.width)
    bn_records = records[: cfg.bn_images or None]  # records are in a seeded order already
    bn_records = camera_balanced(bn_records) if cfg.balance_cameras else bn_records
    seen = adapt_bn(model, pixel_batches(bn_records, size, cfg.batch_size, "BatchNorm statistics", progress),
                    cfg.bn_layers)
    bn_seconds = time.time() - t0
    cams = len({r.camid for r in records if r.camid >= 0})
    if cfg.method != "self-train":
        return model, AdaptReport(cfg.method, seen, seen, cams, time.time() - t0, bn_seconds)
    st = self_train(model, records, cfg, progress, on_round)
    return model, AdaptReport(cfg.method, len(records), seen, cams, time.time() - t0, bn_seconds, st.rounds,
                              st.bn_agreement, st.kept, st.reason)


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
            "seconds": round(report.seconds, 1), "rounds": [asdict(r) for r in report.rounds],
            **({"kept": report.kept, "why": report.reason} if report.kept else {})}
