"""The training loop: one config dataclass in, a run folder out (config.json, log.csv, last/model weights).

Resuming is exact at epoch boundaries: samplers and augmentation are seeded by (seed, epoch) and the
optimiser state travels in the checkpoint, so a resumed run takes the same next step as an unbroken one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import losses
from .data import ImageDataset, PairDataset, train_transform
from .datasets import Record, ReIDData, load_dataset, relabel
from .evaluate import evaluate, extract, format_metrics, subset_eval
from .files import atomic_save_file, atomic_write_text
from .model import ModelConfig, SiameseReID, WeightsError, create_model, read_state_dict, save_model
from .precision import autocast
from .samplers import PairSampler, PKSampler

LOG_COLUMNS = ["epoch", "step", "lr", "loss", "loss_id", "loss_tri", "loss_pair", "train_acc", "train_pair_acc",
               "rank1", "rank5", "mAP", "mINP", "pair_auc", "pair_accuracy", "cos_accuracy", "images_per_s",
               "seconds"]


@dataclass
class TrainConfig:
    data: str = ""
    layout: str = "auto"
    out: str = "runs"
    name: str = "exp"
    backbone: str = "resnet50"
    pretrained: bool = True
    init_weights: str = ""
    height: int = 256
    width: int = 128
    embed_dim: int = 0
    last_stride: int = 1
    loss: str = "metric"  # metric: ID + triplet + pair BCE on PK batches; bce: the seed's pair BCE only
    p: int = 16
    k: int = 4
    pair_batch: int = 32  # pairs per batch in bce mode (2x images)
    hard_negatives: float = 0.0  # bce mode: share of negatives mined with the current model each epoch
    epochs: int = 120
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: int = 10
    schedule: str = "step"  # step | cosine
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    label_smoothing: float = 0.1
    margin: float = 0.3
    triplet_weight: float = 1.0
    pair_weight: float = 1.0
    erasing: float = 0.5
    freeze_epochs: int = 0  # train only the new heads (BNNeck, classifier, pair head) this many epochs first
    max_images: int = 0
    max_ids: int = 0
    eval_every: int = 0
    eval_max_ids: int = 0
    max_steps_per_epoch: int = 0
    workers: int = 2
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    resume: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subset_train(records: list[Record], max_ids: int, max_images: int, seed: int) -> list[Record]:
    """A seeded subset of identities and/or images, relabelled so the classifier stays dense."""
    rng = np.random.default_rng(seed)
    pids = sorted({r.pid for r in records})
    if max_ids and max_ids < len(pids):
        keep = set(rng.choice(pids, max_ids, replace=False).tolist())
        records = [r for r in records if r.pid in keep]
    if max_images and max_images < len(records):
        # whole identities, in a random order, until the budget is met: keeps K images per identity
        by_pid: dict[int, list[Record]] = {}
        for r in records:
            by_pid.setdefault(r.pid, []).append(r)
        chosen: list[Record] = []
        for pid in rng.permutation(sorted(by_pid)):
            if len(chosen) >= max_images:
                break
            chosen += by_pid[int(pid)]
        records = chosen[:max_images]
    return relabel(records)


def lr_at(cfg: TrainConfig, epoch_float: float) -> float:
    """Linear warm-up from 1% to lr, then step decay at milestones or a cosine to 1%."""
    if cfg.warmup_epochs and epoch_float < cfg.warmup_epochs:
        return cfg.lr * (0.01 + 0.99 * epoch_float / cfg.warmup_epochs)
    if cfg.schedule == "cosine":
        t = (epoch_float - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
    return cfg.lr * cfg.gamma ** sum(epoch_float >= m for m in cfg.milestones)


# --- checkpoints: model + optimiser in one safetensors file, never pickle --------------------------------
def save_checkpoint(path: Path, model: SiameseReID, opt: torch.optim.Optimizer, epoch: int, step: int) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for pid, state in sd["state"].items():
        for k, v in state.items():
            tensors[f"opt.{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    meta = {"epoch": str(epoch), "step": str(step), "param_groups": json.dumps(sd["param_groups"]),
            "model_config": json.dumps(asdict(model.cfg))}
    atomic_save_file(tensors, path, metadata=meta)


def load_checkpoint(path: Path, model: SiameseReID, opt: torch.optim.Optimizer) -> tuple[int, int]:
    tensors = read_state_dict(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "epoch" not in meta:
        raise WeightsError(f"{path}: not a training checkpoint (no epoch metadata)")
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd)
    except RuntimeError as e:
        raise WeightsError(f"{path}: checkpoint does not fit this model/config ({str(e).splitlines()[0]})") from e
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["epoch"]), int(meta["step"])


# --- the loop --------------------------------------------------------------------------------------------
def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _loader(dataset: torch.utils.data.Dataset, cfg: TrainConfig, epoch: int, **kw: Any) -> DataLoader:
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # augmentation randomness per epoch
    return DataLoader(dataset, num_workers=cfg.workers, generator=g, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, **kw)


class Trainer:
    def __init__(self, cfg: TrainConfig, data: ReIDData | None = None):
        self.cfg = cfg
        self.device = _device(cfg)
        self.data = data or load_dataset(cfg.data, cfg.layout, cfg.seed)
        self.train_records = subset_train(self.data.train, cfg.max_ids, cfg.max_images, cfg.seed)
        if not self.train_records:
            raise ValueError(f"{cfg.data}: no training images")
        num_classes = len({r.pid for r in self.train_records})
        mcfg = ModelConfig(backbone=cfg.backbone, height=cfg.height, width=cfg.width, embed_dim=cfg.embed_dim,
                           num_classes=num_classes, last_stride=cfg.last_stride)
        set_seed(cfg.seed)
        self.model = create_model(mcfg, pretrained=cfg.pretrained and not cfg.resume,
                                  init_weights=cfg.init_weights or None)
        dc = getattr(self.model.backbone, "pretrained_cfg", {}) or {}
        if dc.get("mean"):  # normalise as the backbone's ImageNet weights expect
            mcfg.mean, mcfg.std = tuple(dc["mean"]), tuple(dc["std"])
        self.model.to(self.device).to(memory_format=torch.channels_last)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.images = ImageDataset(self.train_records, train_transform((cfg.height, cfg.width), mcfg.mean, mcfg.std,
                                                                      erasing=cfg.erasing))
        if cfg.loss == "bce":
            self.pair_sampler = PairSampler(self.train_records, seed=cfg.seed, hard_fraction=cfg.hard_negatives)
        else:
            self.pk = PKSampler([r.pid for r in self.train_records], cfg.p, cfg.k, cfg.seed)
        self.start_epoch, self.step = 0, 0
        self.run_dir = cfg.run_dir
        self.ckpt = self.run_dir / "last.safetensors"
        if cfg.resume:
            if not self.ckpt.exists():
                raise WeightsError(f"--resume: no checkpoint at {self.ckpt}")
            self.start_epoch, self.step = load_checkpoint(self.ckpt, self.model, self.opt)
            self.start_epoch += 1
            self.trim_log()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.json", json.dumps(asdict(cfg), indent=2))

    # one batch -> losses
    def _metric_step(self, x: torch.Tensor, pids: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        l_id = losses.id_loss(out["logits"], pids, self.cfg.label_smoothing)
        l_tri = losses.triplet_loss(out["feat"], pids, self.cfg.margin)
        a, b, y = losses.in_batch_pairs(out["feat"], pids)
        logit = self.model.pair_logit(out["emb"][a], out["emb"][b])
        l_pair = losses.pair_bce(logit, y)
        loss = l_id + self.cfg.triplet_weight * l_tri + self.cfg.pair_weight * l_pair
        return {"loss": loss, "loss_id": l_id, "loss_tri": l_tri, "loss_pair": l_pair,
                "train_acc": (out["logits"].argmax(1) == pids).float().mean(),
                "train_pair_acc": ((logit > 0).float() == y).float().mean()}

    def _pair_step(self, xa: torch.Tensor, xb: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(torch.cat([xa, xb]))  # one pass through the shared backbone for both branches
        ea, eb = out["emb"].chunk(2)
        logit = self.model.pair_logit(ea, eb)
        l_pair = losses.pair_bce(logit, y)
        return {"loss": l_pair, "loss_pair": l_pair, "train_pair_acc": ((logit > 0).float() == y).float().mean()}

    def _epoch_batches(self, epoch: int) -> DataLoader:
        if self.cfg.loss == "bce":
            if self.cfg.hard_negatives > 0 and epoch > 0:
                feats = extract(self.model, self.train_records, workers=self.cfg.workers, amp=self.cfg.amp,
                                desc="mine")
                sims = torch.from_numpy(feats) @ torch.from_numpy(feats).T
                self.pair_sampler.set_neighbours(sims.topk(min(20, len(feats)), dim=1).indices.numpy())
            pairs = PairDataset(self.images, self.pair_sampler.pairs(epoch))
            return _loader(pairs, self.cfg, epoch, batch_size=self.cfg.pair_batch, shuffle=False, drop_last=True)
        self.pk.set_epoch(epoch)
        return _loader(self.images, self.cfg, epoch, batch_sampler=self.pk)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        frozen = epoch < cfg.freeze_epochs  # let the new heads settle before their gradients reach the backbone
        model.backbone.requires_grad_(not frozen)
        if frozen:
            model.backbone.eval()  # keep the ImageNet BN statistics too
        set_seed(cfg.seed * 1000 + epoch)  # main-process augmentation (workers=0) replays on resume too
        loader = self._epoch_batches(epoch)
        n_batches = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
        sums: dict[str, float] = {}
        n_img, t0, i = 0, time.time(), -1
        bar = tqdm(loader, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            lr = lr_at(cfg, epoch + i / max(1, n_batches))
            for g in self.opt.param_groups:
                g["lr"] = lr
            batch = [b.to(self.device, non_blocking=True) for b in batch]
            if cfg.loss == "bce":
                xa, xb, y = batch
                xa, xb = (t.contiguous(memory_format=torch.channels_last) for t in (xa, xb))
                with autocast(self.device, cfg.amp):
                    res = self._pair_step(xa, xb, y)
                n_img += 2 * len(y)
            else:
                x, pids = batch[0].contiguous(memory_format=torch.channels_last), batch[1]
                with autocast(self.device, cfg.amp):
                    res = self._metric_step(x, pids)
                n_img += len(pids)
            self.opt.zero_grad(set_to_none=True)
            res["loss"].backward()
            self.opt.step()
            self.step += 1
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.3f}", lr=f"{lr:.2e}")
        steps = max(1, min(n_batches, i + 1))
        row = {k: v / steps for k, v in sums.items()}
        row.update(epoch=epoch + 1, step=self.step, lr=lr_at(cfg, epoch + 1 - 1e-9),
                   images_per_s=n_img / max(time.time() - t0, 1e-9))
        return row

    def evaluate(self) -> dict[str, float]:
        query, gallery = subset_eval(self.data, self.cfg.eval_max_ids, self.cfg.seed)
        return evaluate(self.model, query, gallery, workers=self.cfg.workers, amp=self.cfg.amp)

    def log(self, row: dict[str, Any]) -> None:
        path = self.run_dir / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())

    def trim_log(self) -> None:
        """Keep the log rows the checkpoint has done, whole: a kill after an epoch's row (or mid-row) but
        before its checkpoint must not leave a duplicate or torn row behind once the epoch is redone."""
        path = self.run_dir / "log.csv"
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            if not lines or not lines[0].endswith("\n"):  # torn header: log() writes a new one
                path.unlink()
                return
            rows = [ln for ln in lines[1:] if ln.endswith("\n") and ln.split(",")[0].isdigit()
                    and int(ln.split(",")[0]) <= self.start_epoch]
            atomic_write_text(path, "".join(lines[:1] + rows))

    def fit(self) -> dict[str, float]:
        cfg = self.cfg
        print(self.data.summary())
        print(f"training {cfg.backbone} on {len(self.train_records)} images / "
              f"{len({r.pid for r in self.train_records})} ids, loss={cfg.loss}, device={self.device}")
        last: dict[str, float] = {}
        t_start = time.time()
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.time()
            row = self.train_epoch(epoch)
            if cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                metrics = self.evaluate()
                row.update(metrics)
                last = metrics
                print(f"epoch {epoch + 1}: {format_metrics(metrics)}")
            row["seconds"] = time.time() - t0
            self.log(row)  # before the checkpoint: a resume trims rows past it (trim_log), never misses one
            save_checkpoint(self.ckpt, self.model, self.opt, epoch, self.step)
            print(f"epoch {epoch + 1}/{cfg.epochs} loss {row.get('loss', float('nan')):.4f} "
                  f"({row['images_per_s']:.1f} img/s, {row['seconds']:.0f} s)")
        extra = {"train_data": self.data.name, "train_images": len(self.train_records),
                 "train_ids": len({r.pid for r in self.train_records}), "loss": cfg.loss, "epochs": cfg.epochs,
                 "train_seconds": round(time.time() - t_start, 1)}
        if last:
            scope = f"{self.data.name}: {last['num_query']:.0f} queries x {last['num_gallery']:.0f} gallery"
            extra["metrics"] = {"evaluated_on": scope, **{k: round(float(v), 4) for k, v in last.items()}}
            extra["pair_threshold"] = float(last.get("pair_threshold", 0.5))
            extra["cos_threshold"] = float(last.get("cos_threshold", 0.5))
        save_model(self.model, self.run_dir / "model.safetensors", inference_only=True, extra=extra)
        return last
