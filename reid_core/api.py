"""The one door for scripts and the app: load weights once, then embed, compare and search.

    from reid_core import ReID
    reid = ReID.load("weights/model.safetensors")
    r = reid.compare("a.jpg", "b.jpg")      # r.probability, r.cosine, r.same, r.threshold
    feats = reid.embed(["a.jpg", "b.jpg"])  # (2, D) L2-normalised numpy array
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .engines import choose_engine
from .gallery import Gallery
from .images import ImageLike, eval_pixels, load_image
from .limits import Limits
from .model import SiameseReID, load_model, resolve_weights, weights_hash


@dataclass
class Comparison:
    probability: float  # pair head's same-person probability
    cosine: float  # cosine similarity of the two embeddings
    threshold: float  # the calibrated probability threshold (chosen on held-out pairs)
    same: bool  # probability >= threshold


class ReID:
    def __init__(self, model: SiameseReID, device: str | torch.device = "cpu", batch_size: int = 32,
                 engine: str = "torch"):
        """`engine`: "auto" (the fastest engine and number format within parity, measured on this machine),
        "onnx" or "torch" (see engines.choose_engine). Which one runs, and why, is stated in `self.engine`."""
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.batch_size = batch_size
        cfg = model.cfg
        self.threshold = float(cfg.extra.get("pair_threshold", 0.5))
        # the batch -> embedding step (shared with the CLIs and evaluation), and a sentence saying which it is
        self.embedder, self.engine = choose_engine(self.model, self.weights_id, engine)

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | None = None, allow_pickle: bool = False,
             engine: str | None = None) -> ReID:
        """Weights from the argument, else $REID_WEIGHTS, else the shipped weights/model.safetensors.
        allow_pickle: also read a trusted .pth/.pt state dict (tensors only, weights_only=True).
        engine: see __init__; default $REID_ENGINE, else "auto" (the fastest that passes parity)."""
        weights = resolve_weights(weights)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_model(weights, device, allow_pickle), device,
                   engine=engine or os.environ.get("REID_ENGINE") or "auto")

    @property
    def info(self) -> dict:
        cfg = self.model.cfg
        return {"backbone": cfg.backbone, "input": f"{cfg.height}x{cfg.width}", "embed_dim": self.model.embed_dim,
                "engine": self.engine, "pair_threshold": self.threshold,
                **{k: v for k, v in cfg.extra.items() if k != "pair_threshold"}}

    @cached_property
    def weights_id(self) -> str:
        """How a gallery knows its embeddings came from these weights."""
        return weights_hash(self.model)

    def gallery(self, path: str | Path, limits: Limits | None = None, **index: Any) -> Gallery:
        """Open (or create) a gallery file embedded by this model; one built by other weights is re-embedded
        from its stored pictures. `index`: approx="ivf", nlist, nprobe (see Gallery)."""
        return Gallery(path, self.embed, self.weights_id, limits, self.batch_size, **index)

    def pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """uint8 (N, 3, H, W): decoded and resized exactly as the batch pipeline does it."""
        size = (self.model.cfg.height, self.model.cfg.width)
        return torch.stack([eval_pixels(load_image(im), size) for im in images])

    @torch.no_grad()
    def embed(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """(N, D) L2-normalised embeddings; a single image gives (1, D)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        out = [self.embedder(self.pixels(images[s:s + self.batch_size]))
               for s in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.model.embed_dim), np.float32)

    @torch.no_grad()
    def compare_embeddings(self, ea: np.ndarray, eb: np.ndarray) -> list[Comparison]:
        a, b = torch.from_numpy(np.atleast_2d(ea)).to(self.device), torch.from_numpy(np.atleast_2d(eb)).to(self.device)
        prob = torch.sigmoid(self.model.pair_logit(a, b)).cpu().numpy()
        cos = F.cosine_similarity(a.float(), b.float()).cpu().numpy()
        t = self.threshold
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
