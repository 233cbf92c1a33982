"""Rung 2, pseudo-label self-training as Cluster Contrast does it, on the last stages (split): cluster, train on
the clusters with a cluster memory (a mean teacher by default, camera proxies as asked), repeat; then the rung kept."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..base.progress import progress_bar
from ..data.datasets import Record
from ..data.samplers import PKSampler
from ..model.network import SiameseReID
from ..train.mean_teacher import MeanTeacher
from ..train.proxies import CameraProxies
from .clustering import cluster, clustering_support, kept_rung, rung_signal, tracklet_labels
from .config import AdaptConfig, Round
from .split import Split, embed_maps, fill_cache


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
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (0.1 if 0 < cfg.lr_step <= r + 1 else 1.0)
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
