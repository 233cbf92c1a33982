"""The one door for scripts and the app: load weights once, then embed, compare and search.

    from reid_core import ReID
    reid = ReID.load("weights/model.safetensors")
    r = reid.compare("a.jpg", "b.jpg")      # r.probability, r.cosine, r.same, r.threshold
    feats = reid.embed(["a.jpg", "b.jpg"])  # (2, D) L2-normalised numpy array
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .adapt import AdaptConfig, AdaptReport, Round, adapt_bn, adapt_model, target_records
from .embed import Embedder, Flipped
from .engines import choose_engine
from .gallery import Gallery
from .images import ImageLike, eval_pixels, load_image
from .limits import Limits
from .model import SiameseReID, load_model, resolve_weights, weights_hash
from .thresholds import Thresholds

FLIP_SAID = {True: "on: each embedding averages the crop's and its mirror image's (Market +1.9 Rank-1 / +2.8 mAP "
                   "for 2x the embedding time)", False: "off"}


@dataclass
class Comparison:
    probability: float  # same-person probability: the pair head's, Platt-calibrated where the weights record it
    cosine: float  # cosine similarity of the two embeddings
    threshold: float  # the probability threshold: 0.5 when calibrated, else the raw one chosen on held-out pairs
    same: bool  # probability >= threshold


class ReID:
    def __init__(self, model: SiameseReID, device: str | torch.device = "cpu", batch_size: int = 32,
                 engine: str = "torch", flip: bool = False):
        """`engine`: "auto" (the fastest engine and number format within parity, measured on this machine),
        "onnx" or "torch" (see engines.choose_engine). Which one runs, and why, is stated in `self.engine`.
        `flip`: every embedding is the mean of the crop's and its mirror image's (test-time flip: 2x the
        embedding time; Market +1.9 Rank-1 / +2.8 mAP with the shipped weights, BENCHMARKS.md section 14)."""
        self.flip = flip
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.engine_asked = engine
        self.batch_size = batch_size
        cfg = model.cfg
        # flip-averaged embeddings score pairs a little differently: their own threshold and calibration where recorded
        recorded = Thresholds.from_extra(cfg.extra)
        self.threshold = recorded.pair_for(flip)  # of the raw probability (the Model tab's score histogram)
        self.calibration = recorded.calibration.for_flip(flip) if recorded.calibration else None
        # the batch -> embedding step (shared with the CLIs and evaluation), and a sentence saying which it is
        self.embedder, self.engine = choose_engine(self.model, self.weights_id, engine)

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | None = None, allow_pickle: bool = False,
             engine: str | None = None, flip: bool = True) -> ReID:
        """Weights from the argument, else $REID_WEIGHTS, else the shipped weights/model.safetensors.
        allow_pickle: also read a trusted .pth/.pt state dict (tensors only, weights_only=True).
        engine: see __init__; default $REID_ENGINE, else "auto" (the fastest that passes parity).
        flip: test-time flip, on by default here (the app and the CLIs): it pays for its 2x embedding time."""
        weights = resolve_weights(weights)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_model(weights, device, allow_pickle), device,
                   engine=engine or os.environ.get("REID_ENGINE") or "auto", flip=flip)

    @property
    def info(self) -> dict:
        cfg = self.model.cfg
        return {"backbone": cfg.backbone, "input": f"{cfg.height}x{cfg.width}", "embed_dim": self.model.embed_dim,
                "engine": self.engine, "flip": FLIP_SAID[self.flip], "pair_threshold": self.threshold,
                **{k: v for k, v in cfg.extra.items() if k != "pair_threshold"}}

    @cached_property
    def weights_id(self) -> str:
        """How a gallery knows its embeddings came from these weights."""
        return weights_hash(self.model)

    @property
    def embedding_id(self) -> str:
        """What made this ReID's embeddings: the weights, and test-time flip (a flipped embedding is another)."""
        return self.weights_id + ("+flip" if self.flip else "")

    def gallery(self, path: str | Path, limits: Limits | None = None, **index: Any) -> Gallery:
        """Open (or create) a gallery file embedded by this model; one built by other weights is re-embedded
        from its stored pictures. `index`: approx="ivf", nlist, nprobe (see Gallery)."""
        return Gallery(path, self.embed, self.embedding_id, limits, self.batch_size, **index)

    def pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """uint8 (N, 3, H, W): decoded and resized exactly as the batch pipeline does it."""
        size = (self.model.cfg.height, self.model.cfg.width)
        return torch.stack([eval_pixels(load_image(im), size) for im in images])

    def pixel_batches(self, images: Sequence[ImageLike]) -> Iterator[torch.Tensor]:
        """`pixels` of `images`, `batch_size` at a time."""
        return (self.pixels(images[s:s + self.batch_size]) for s in range(0, len(images), self.batch_size))

    @property
    def embedding_step(self) -> Embedder:
        """What `embed` runs on each batch: the engine's embedder, flip-averaged when `flip` is on."""
        return Flipped(self.embedder) if self.flip else self.embedder

    @torch.no_grad()
    def embed(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """(N, D) L2-normalised embeddings; a single image gives (1, D)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        out = [self.embedding_step(x) for x in self.pixel_batches(images)]
        return np.concatenate(out) if out else np.zeros((0, self.model.embed_dim), np.float32)

    def adapted(self, target: str | Path, cfg: AdaptConfig | None = None, progress: bool = True,
                on_round: Callable[[Round, SiameseReID], None] | None = None, engine: str | None = None,
                ) -> tuple[ReID, AdaptReport]:
        """A new ReID adapted to the camera network of `target` (a folder of its crops; labels never read) by
        `cfg.method` (see reid_core.adapt), and what was done. This model is left as it was. `engine`: the new
        one's (default this one's; "fp32" when it will only be saved, so nothing is exported or timed)."""
        cfg = cfg or AdaptConfig()
        model, report = adapt_model(self.model, target_records(target), cfg, progress, on_round)
        return ReID(model, self.device, self.batch_size, engine or self.engine_asked, self.flip), report

    def bn_adapted(self, images: Sequence[ImageLike], layers: str = "all", engine: str | None = None) -> ReID:
        """A new ReID whose BatchNorm statistics are re-estimated on `images` (unlabeled crops of the cameras it
        will serve: a few hundred are enough): the app's "Adapt to this gallery"."""
        model = copy.deepcopy(self.model)
        adapt_bn(model, self.pixel_batches(images), layers)
        return ReID(model, self.device, self.batch_size, engine or self.engine_asked, self.flip)

    @torch.no_grad()
    def compare_embeddings(self, ea: np.ndarray, eb: np.ndarray) -> list[Comparison]:
        a, b = torch.from_numpy(np.atleast_2d(ea)).to(self.device), torch.from_numpy(np.atleast_2d(eb)).to(self.device)
        logit = self.model.pair_logit(a, b).float()
        cos = F.cosine_similarity(a.float(), b.float()).cpu().numpy()
        if self.calibration is not None:  # Platt-scaled on held-out pairs: 50 % is the verdict
            prob, t = self.calibration(logit.cpu().numpy()), 0.5
        else:
            prob, t = torch.sigmoid(logit).cpu().numpy(), self.threshold
        return [Comparison(float(p), float(c), t, bool(p >= t)) for p, c in zip(prob, cos, strict=True)]

    def compare(self, a: ImageLike, b: ImageLike) -> Comparison:
        """Embed both images in one batch and score the pair."""
        e = self.embed([a, b])
        return self.compare_embeddings(e[:1], e[1:])[0]

    @torch.no_grad()
    def similarity_map(self, a: ImageLike, b: ImageLike) -> tuple[np.ndarray, np.ndarray]:
        """Per-region agreement: each cell of a's feature map scored by its best cosine match anywhere in b
        (and vice versa), in [0, 1]. Shows which body parts drove the verdict."""
        x = self.pixels([a, b]).to(self.device).contiguous(memory_format=torch.channels_last)
        fm = F.normalize(self.model.feature_map(x).float(), dim=1)  # (2, C, h, w)
        fa, fb = fm[0].flatten(1), fm[1].flatten(1)
        sim = fa.T @ fb  # (hw_a, hw_b)
        h, w = fm.shape[2:]
        ma, mb = sim.max(1).values.reshape(h, w), sim.max(0).values.reshape(h, w)
        return ma.clamp(0, 1).cpu().numpy(), mb.clamp(0, 1).cpu().numpy()
