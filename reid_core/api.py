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

from .embed import Embedder, OnnxEmbedder, TorchEmbedder
from .export import PARITY_COSINE, export_onnx, parity
from .gallery import Gallery
from .images import ImageLike, eval_pixels, load_image
from .limits import Limits
from .model import SiameseReID, WeightsError, load_model, resolve_weights, weights_hash
from .precision import cpu_has_bf16


@dataclass
class Comparison:
    probability: float  # pair head's same-person probability
    cosine: float  # cosine similarity of the two embeddings
    threshold: float  # the calibrated probability threshold (chosen on held-out pairs)
    same: bool  # probability >= threshold


ENGINES = ("auto", "onnx", "torch")


def onnx_cache() -> Path:
    """Where exported ONNX graphs are kept, one per weights hash: $REID_CACHE_DIR, else ~/.cache/reid."""
    return Path(os.environ.get("REID_CACHE_DIR") or Path.home() / ".cache" / "reid")


class ReID:
    def __init__(self, model: SiameseReID, device: str | torch.device = "cpu", batch_size: int = 32,
                 engine: str = "torch"):
        """`engine`: "auto" (ONNX Runtime on a CPU when its export passes the parity check, else torch),
        "onnx" or "torch". Which one runs, and at what precision, is stated in `self.engine`."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.batch_size = batch_size
        cfg = model.cfg
        self.threshold = float(cfg.extra.get("pair_threshold", 0.5))
        self.embedder, self.engine = self._engine(engine)  # the batch -> embedding step, shared with the CLIs

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

    def _engine(self, engine: str) -> tuple[Embedder, str]:
        """ONNX Runtime embeds ~3.5x faster than torch fp32 on a CPU (BENCHMARKS.md §3): the default there once
        its export of these weights (cached by their hash) matches torch on a parity batch."""
        bf16 = self.device.type == "cpu" and cpu_has_bf16()
        torch_engine = TorchEmbedder(self.model)
        said = f"torch on {self.device.type}, " + ("bf16 autocast (native on this CPU)" if bf16 else "fp32")
        if engine == "torch" or self.device.type != "cpu":
            return torch_engine, said
        try:
            ort = self._onnx()
        except (ImportError, WeightsError, RuntimeError) as e:
            if engine == "onnx":
                raise
            return torch_engine, f"{said} (ONNX Runtime unavailable: {str(e).splitlines()[0][:120]})"
        x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, self.model.cfg.height,
                                                                       self.model.cfg.width), dtype=np.uint8))
        cos = float(parity(self.model, ort, x).min())
        if cos < PARITY_COSINE and engine == "auto":
            return torch_engine, f"{said} (the ONNX export failed parity: cosine {cos:.5f} < {PARITY_COSINE})"
        return ort, f"ONNX Runtime on cpu, fp32 (parity with torch fp32: cosine >= {cos:.6f})"

    def _onnx(self) -> Embedder:
        import onnxruntime  # noqa: F401 - fail here, before exporting, when it is not installed

        path = onnx_cache() / f"{self.weights_id}.onnx"
        if path.exists():
            try:
                return OnnxEmbedder(path)
            except WeightsError:  # a damaged cache file: export again
                path.unlink(missing_ok=True)
        export_onnx(self.model, path)
        return OnnxEmbedder(path)

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
