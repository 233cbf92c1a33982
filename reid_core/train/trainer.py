"""The training loop: one config dataclass in, a run folder out (config.json, log.csv, last/model weights).

Resuming is exact at epoch boundaries: samplers are seeded by (seed, epoch), every sample's augmentation by
its position in the epoch, and the optimiser state travels in the checkpoint, so a resumed run takes the same
next step as an unbroken one. Under torchrun the same code runs on every rank (see distributed.py).
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from ..base.files import atomic_save_file, atomic_write_text
from ..base.progress import progress_bar
from ..data.augment import ImageDataset, PairDataset, train_transform
from ..data.datasets import Record, ReIDData, combine, load_dataset, relabel
from ..data.device_crops import DeviceBatches, DeviceCrops, decode_all
from ..data.samplers import PairSampler, PKSampler
from ..embed import TorchEmbedder
from ..evaluation.evaluate import EvalReport, extract, format_figures, record, score, stored_metrics, subset_eval
from ..model.errors import WeightsError
from ..model.network import ModelConfig, SiameseReID, create_model, normalisation, save_model
from ..model.precision import autocast
from ..model.weights import read_state_dict
from . import distributed, losses
from .config import TrainConfig
from .distributed import RankShare, World, gather_cat, gather_rows

LOG_COLUMNS = ["epoch", "step", "lr", "loss", "loss_id", "loss_tri", "loss_pair", "train_acc", "train_pair_acc",
               "rank1", "rank5", "mAP", "mINP", "pair_auc", "pair_accuracy", "cos_accuracy", "images_per_s",
               "seconds"]


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
    saved = json.loads(meta.get("model_config", "{}"))
    own = {k: v for k, v in asdict(model.cfg).items() if k != "extra"}
    clash = [f"{k} {saved[k]!r} (this run: {own[k]!r})" for k in own if k in saved and saved[k] != own[k]
             and not (isinstance(own[k], (list, tuple)) and list(saved[k]) == list(own[k]))]
    if clash:
        raise WeightsError(f"{path}: checkpoint of another model: {'; '.join(clash)}")
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
class Objective(nn.Module):
    """The training loss as a module: DDP then sees every trained parameter (heads included) in forward.

    Cross-sample terms (batch-hard triplet, in-batch pairs) see the whole global batch: features are
    gathered from all ranks, and DDP's gradient averaging then makes N ranks equal to one process.
    """

    def __init__(self, model: SiameseReID, cfg: TrainConfig, world: World):
        super().__init__()
        self.model, self.cfg, self.world = model, cfg, world

    def forward(self, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._pairs(*batch) if self.cfg.loss == "bce" else self._metric(*batch)

    def _metric(self, x: torch.Tensor, pids: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        l_id = losses.id_loss(out["logits"], pids, self.cfg.label_smoothing)  # per-rank mean; DDP averages
        feat, emb = gather_cat(out["feat"], self.world), gather_cat(out["emb"], self.world)
        all_pids = gather_cat(pids, self.world)
        l_tri = losses.triplet_loss(feat, all_pids, self.cfg.margin, self.cfg.triplet_norm)
        a, b, y = losses.in_batch_pairs(feat, all_pids)
        logit = self.model.pair_logit(emb[a], emb[b])
        l_pair = losses.pair_bce(logit, y)
        loss = self.cfg.id_weight * l_id + self.cfg.triplet_weight * l_tri + self.cfg.pair_weight * l_pair
        return {"loss": loss, "loss_id": l_id, "loss_tri": l_tri, "loss_pair": l_pair,
                "train_acc": (out["logits"].argmax(1) == pids).float().mean(),
                "train_pair_acc": ((logit > 0).float() == y).float().mean()}

    def _pairs(self, xa: torch.Tensor, xb: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(torch.cat([xa, xb]))  # one pass through the shared backbone for both branches
        ea, eb = out["emb"].chunk(2)
        logit = self.model.pair_logit(ea, eb)
        l_pair = losses.pair_bce(logit, y)
        return {"loss": l_pair, "loss_pair": l_pair, "train_pair_acc": ((logit > 0).float() == y).float().mean()}


def nearest_neighbours(feats: np.ndarray, k: int = 20, chunk: int = 2048) -> np.ndarray:
    """Indices of each row's k most similar rows, a chunk of rows at a time (never the full N x N matrix)."""
    f = torch.from_numpy(feats)
    k = min(k, len(f))
    return torch.cat([(f[i:i + chunk] @ f.T).topk(k, dim=1).indices for i in range(0, len(f), chunk)]).numpy()


class Trainer:
    def __init__(self, cfg: TrainConfig, data: ReIDData | None = None):
        self.cfg = cfg
        self.world, self.device = distributed.init(cfg.device)
        self.data = data or combine([load_dataset(cfg.data, cfg.layout, cfg.seed)]
                                    + [load_dataset(d, "auto", cfg.seed) for d in cfg.extra_data])
        self.train_records = subset_train(self.data.train, cfg.max_ids, cfg.max_images, cfg.seed)
        if not self.train_records:
            raise ValueError(f"{cfg.data}: no training images")
        num_classes = len({r.pid for r in self.train_records})
        mean, std = normalisation(cfg.norm, cfg.backbone)
        mcfg = ModelConfig(**cfg.architecture(), num_classes=num_classes, mean=mean, std=std)
        set_seed(cfg.seed)
        self.model = create_model(mcfg, pretrained=cfg.pretrained and not cfg.resume,
                                  init_weights=cfg.init_weights or None)
        if self.world.size > 1 and cfg.sync_bn:
            self.model = distributed.sync_batchnorm(self.model, self.device)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        if cfg.compile:
            self.model.backbone.compile()  # in place: state-dict names stay those of the plain model
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        fp16 = self.device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)  # only fp16 needs loss scaling
        self.embedder = TorchEmbedder(self.model, cfg.amp)  # the live model, for evaluation and pair mining
        self.objective: nn.Module = Objective(self.model, cfg, self.world)
        if self.world.size > 1:
            self.objective = DistributedDataParallel(
                self.objective, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.loss == "bce" or cfg.freeze_epochs > 0)  # idle classifier / frozen
        self.images = ImageDataset(self.train_records, train_transform((cfg.height, cfg.width), mcfg.mean,
                                                                      erasing=cfg.erasing))
        if cfg.loss == "bce":
            self.pair_sampler = PairSampler(self.train_records, seed=cfg.seed, hard_fraction=cfg.hard_negatives)
        else:
            self.pk = PKSampler([r.pid for r in self.train_records], cfg.p, cfg.k, cfg.seed)
        self.pk_loader: DataLoader | None = None
        self.crops: DeviceCrops | None = None
        if cfg.device_crops:
            if cfg.loss == "bce":
                raise ValueError("--device-crops takes PK batches (--loss metric)")
            self.crops = DeviceCrops(decode_all(self.train_records, (cfg.height, cfg.width), cfg.workers),
                                     self.device, mcfg.mean, cfg.erasing)
        self.start_epoch, self.step = 0, 0
        self.run_dir = cfg.run_dir
        self.ckpt = self.run_dir / "last.safetensors"
        if cfg.resume:
            if not self.ckpt.exists():
                raise WeightsError(f"--resume: no checkpoint at {self.ckpt}")
            self.start_epoch, self.step = load_checkpoint(self.ckpt, self.model, self.opt)
            self.start_epoch += 1
        if self.world.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.resume:
                self.trim_log()
            else:  # a fresh run in an old run's folder starts a fresh log, not an appended one
                (self.run_dir / "log.csv").unlink(missing_ok=True)
            atomic_write_text(self.run_dir / "config.json", json.dumps(asdict(cfg), indent=2))

    def _extract(self, records: list[Record], desc: str) -> np.ndarray:
        """Embeddings of records, each rank embedding every size-th one, gathered back in order."""
        w = self.world
        # on a CPU one thread per core (each on its share); for a GPU two keep it fed, one decoding while the
        # other's batch runs, without a batch on the GPU per host core
        threads = 2 if self.device.type == "cuda" else None
        feats = extract(self.embedder, records[w.rank::w.size], threads=threads, desc=desc, progress=w.main)
        return gather_rows(feats, w)

    def _epoch_batches(self, epoch: int) -> DataLoader | DeviceBatches:
        """This rank's share of the epoch's global batches; sample seeds depend on (seed, epoch, position)."""
        cfg = self.cfg
        if self.crops is not None:
            self.pk.set_epoch(epoch)
            share = RankShare(self.pk, self.world, seed=self._epoch_seed(epoch))
            return DeviceBatches(self.crops, share, [r.pid for r in self.train_records])
        if cfg.loss == "bce":
            if cfg.hard_negatives > 0 and epoch > 0:
                self.pair_sampler.set_neighbours(nearest_neighbours(self._extract(self.train_records, "mine")))
            dataset: torch.utils.data.Dataset = PairDataset(self.images, self.pair_sampler.pairs(epoch))
            batches = BatchSampler(SequentialSampler(range(len(dataset))), cfg.pair_batch, drop_last=True)
            return self._loader(dataset, batches, epoch)
        self.pk.set_epoch(epoch)
        if self.pk_loader is None:  # one loader for all epochs: its workers stay alive (a GPU waits otherwise)
            self.pk_loader = self._loader(self.images, self.pk, epoch, persistent_workers=cfg.workers > 0)
        self.pk_loader.batch_sampler.seed = self._epoch_seed(epoch)
        return self.pk_loader

    def _epoch_seed(self, epoch: int) -> int:
        return (self.cfg.seed * 1000 + epoch) * 10_000_000

    def _loader(self, dataset: torch.utils.data.Dataset, batches: Any, epoch: int, **kw: Any) -> DataLoader:
        """Workers start from a fork server, not a fork of this process: a fork copies every lock another thread
        holds at that moment (a server's, a logger's, the tensor-passing handshake's), and a worker that needs one
        waits forever (seen once in CI: workers stuck on a futex, training stopped at 80 %). Python 3.14 made this
        the default on Linux for that reason. The server imports torch and the augmentations once, so a worker
        starts in about 3 s (a pair epoch's new loader pays it each epoch; the PK loader's workers persist)."""
        share = RankShare(batches, self.world, seed=self._epoch_seed(epoch))
        context = "forkserver" if self.cfg.workers > 0 and "forkserver" in mp.get_all_start_methods() else None
        if context:
            mp.set_forkserver_preload(["torch", "reid_core.data.augment"])  # read when the server first starts
        return DataLoader(dataset, batch_sampler=share, num_workers=self.cfg.workers,
                          pin_memory=self.device.type == "cuda", multiprocessing_context=context, **kw)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        frozen = epoch < cfg.freeze_epochs  # let the new heads settle before their gradients reach the backbone
        model.backbone.requires_grad_(not frozen)
        if frozen:
            model.backbone.eval()  # keep the ImageNet BN statistics too
        set_seed(cfg.seed * 1000 + epoch)  # the in-batch pair draws replay on resume
        loader = self._epoch_batches(epoch)
        n_batches = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
        sums: dict[str, torch.Tensor] = {}
        n_img, t0, i = 0, time.time(), -1
        bar = progress_bar(loader, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.world.main)
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            lr = lr_at(cfg, epoch + i / max(1, n_batches))
            for g in self.opt.param_groups:
                g["lr"] = lr
            if cfg.loss == "bce":
                xa, xb, y = (b.to(self.device, non_blocking=True) for b in batch)
                inputs = (xa.contiguous(memory_format=torch.channels_last),
                          xb.contiguous(memory_format=torch.channels_last), y)
                n_img += 2 * len(y) * self.world.size
            else:
                x, pids = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
                inputs = (x.contiguous(memory_format=torch.channels_last), pids)
                n_img += len(pids) * self.world.size
            with autocast(self.device, cfg.amp):
                res = self.objective(*inputs)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(res["loss"]).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.step += 1
            for k, v in res.items():  # summed on the device: reading a GPU value waits for the GPU
                sums[k] = sums.get(k, 0) + v.detach().float()
            if i % 20 == 0 or i + 1 == n_batches:
                bar.set_postfix(loss=f"{float(sums['loss']) / (i + 1):.3f}", lr=f"{lr:.2e}")
        steps = max(1, min(n_batches, i + 1))
        row = distributed.mean_over_ranks({k: float(v) / steps for k, v in sums.items()}, self.world, self.device)
        row.update(epoch=epoch + 1, step=self.step, lr=lr_at(cfg, epoch + 1 - 1e-9),
                   images_per_s=n_img / max(time.time() - t0, 1e-9))
        return row

    def evaluate(self) -> EvalReport | None:
        """Every rank embeds a share of query and gallery; rank 0 scores (the other ranks get None)."""
        query, gallery = subset_eval(self.data, self.cfg.eval_max_ids, self.cfg.seed)
        t0 = time.time()
        qf, gf = self._extract(query, "query"), self._extract(gallery, "gallery")
        if not self.world.main:
            return None
        t_embed = time.time() - t0
        return EvalReport(score(self.model, qf, gf, query, gallery), None, len(query), len(gallery), t_embed,
                          time.time() - t0)

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

    def fit(self) -> EvalReport | None:
        cfg, main = self.cfg, self.world.main
        if main:
            print(self.data.summary())
            print(f"training {cfg.backbone} on {len(self.train_records)} images / "
                  f"{len({r.pid for r in self.train_records})} ids, loss={cfg.loss}, device={self.device}, "
                  f"processes={self.world.size}")
        last: EvalReport | None = None
        t_start = time.time()
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.time()
            row = self.train_epoch(epoch)
            if cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                last = self.evaluate()
                if last is not None:
                    row.update(last.figures())
                    print(f"epoch {epoch + 1}: {format_figures(last.plain)}")
            row["seconds"] = time.time() - t0
            if main:  # one writer; the others wait so that a resume never sees a half-finished epoch
                self.log(row)  # before the checkpoint: a resume trims rows past it (trim_log), never misses one
                save_checkpoint(self.ckpt, self.model, self.opt, epoch, self.step)
                print(f"epoch {epoch + 1}/{cfg.epochs} loss {row.get('loss', float('nan')):.4f} "
                      f"({row['images_per_s']:.1f} img/s, {row['seconds']:.0f} s)")
            distributed.barrier(self.world)
        if main:
            extra = {"train_data": self.data.name, "train_images": len(self.train_records),
                     "output_stride": self.model.output_stride(), "normalisation": cfg.norm,
                     "init": cfg.init_weights or ("timm ImageNet" if cfg.pretrained else "random"),
                     "train_ids": len({r.pid for r in self.train_records}), "loss": cfg.loss, "epochs": cfg.epochs,
                     "train_seconds": round(time.time() - t_start, 1), "processes": self.world.size}
            weights = self.run_dir / "model.safetensors"
            save_model(self.model, weights, inference_only=True, extra=extra)
            if last is not None:  # thresholds and calibration chosen on the last evaluation's held-out pairs
                scope = f"{self.data.name}: {last.num_query} queries x {last.num_gallery} gallery"
                record(weights, last.thresholds, stored_metrics(last, scope), last.plain.curves)
        distributed.barrier(self.world)
        return last
