"""How to adapt (`AdaptConfig`, the adapt verb's flags) and what a run reports (`Round`, `AdaptReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..base.flag_fields import setting

METHODS = ("bn", "self-train")
KEEP = ("best", "last")
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
    epochs: int = setting(6, "self-train: passes over the clustered crops per round (4 until BENCHMARKS.md 24.8; "
                          "--max-steps bounds a round of a large network)", "self-train")
    max_steps: int = setting(600, "self-train: at most this many training steps a round, its epochs cut short past "
                             "it, so a round's time stops growing with the crops (as Cluster Contrast's fixed "
                             "iterations per epoch; CUHK03's 7,060 crops take 200-500)", "self-train")
    train_stages: int = setting(2, "self-train: backbone stages trained (the last N; the rest stays frozen): 1-4 "
                                "for a ResNet, 1-7 for an EfficientNet(-Lite) such as the shipped weights' Lite0",
                                "self-train")
    lr: float = setting(3.5e-4, "self-train: Adam learning rate", "self-train")
    lr_step: int = setting(0, "self-train: from this round on, train at a tenth of the learning rate (Cluster "
                           "Contrast's step schedule; 0: never)", "self-train")
    temperature: float = setting(0.05, "self-train: cluster-memory softmax temperature", "self-train")
    momentum: float = setting(0.1, "self-train: cluster-memory update (weight of the old centroid)", "self-train")
    eps: float = setting(0.5, "self-train: DBSCAN radius on the k-reciprocal Jaccard distance", "self-train")
    camera_penalty: float = setting(0.4, "self-train, when the crops' names give cameras: embeddings are centred per "
                                    "camera and same-camera distances raised by this much before clustering, so "
                                    "clusters join cameras instead of splitting by them (0: plain)", "self-train")
    camera_proxies: float = setting(0.0, "self-train, when the crops' cameras are known: weight of the camera-aware "
                                    "proxy terms (intra- and inter-camera contrastive, as CAP / ICE; 0: off)",
                                    "self-train")
    teacher_momentum: float = setting(0.99, "self-train: a mean teacher (MMT): the clusters and the kept model come "
                                      "from a moving average of the trained weights, which keeps this share of "
                                      "itself at each step (0: off, the student itself; 0.99: about 70 steps' "
                                      "memory, BENCHMARKS.md 24.8)", "self-train")
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
        at_least = {"max_images": 0, "bn_images": 0, "rounds": 1, "lr_step": 0, "epochs": 1, "train_stages": 1,
                    "min_samples": 1, "max_steps": 1, "k1": 1, "k2": 1, "p": 2, "k": 1, "batch_size": 2}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, not {getattr(self, name)}")
        positive = {"lr": self.lr, "temperature": self.temperature, "eps": self.eps}
        for name, v in positive.items():
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, not {v}")
        if self.lr_step > self.rounds:
            raise ValueError(f"lr_step must be at most rounds ({self.rounds}), not {self.lr_step}: no round would "
                             "train at the lower rate")
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
