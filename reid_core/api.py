"""The one door for scripts and the app: load weights once, then embed, compare and search.

    from reid_core import ReID
    reid = ReID.load("weights/model.safetensors")
    r = reid.compare("a.jpg", "b.jpg")      # r.score, r.cosine, r.same, r.threshold; r.verdict in words
    r, parts = reid.compare_parts("a.jpg", "b.jpg")  # and the cosine of each horizontal stripe
    feats = reid.embed(["a.jpg", "b.jpg"])  # (2, D) L2-normalised numpy array
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .adapt.batchnorm import adapt_bn
from .adapt.config import AdaptConfig, AdaptReport, Round
from .adapt.recipe import adapt_model
from .adapt.targets import image_records, target_records
from .data.images import ImageLike, eval_pixels, load_image
from .data.limits import Limits
from .embed import Embedder, Flipped
from .engines import EngineChoice, choose_engine
from .evaluation.thresholds import Thresholds
from .model.network import SiameseReID, load_model
from .model.weights import resolve_weights, weights_hash
from .search.gallery import Gallery
from .search.ingest import Turn

STRIPES, SHIFT = 6, 1  # compare_parts: horizontal stripes, as PCB cuts a person (head, shoulders, chest, waist, legs,
# feet); each matched to the best of the other crop's stripes up to SHIFT away (detections sit a little higher or lower)
FLIP_SAID = {True: "on: each embedding averages the crop's and its mirror image's (Market +1.9 Rank-1 / +2.8 mAP "
                   "for 2x the embedding time)", False: "off"}


SCORE_MEANING = {  # the one sentence on what the pair score means, used by Comparison.verdict, the CLI and the app
    True: "calibrated: the probability that both crops show the same person",
    False: "a score, not a probability: these weights record no calibration (`python -m reid_core calibrate "
           "--record`), so only its side of the threshold means something"}


@dataclass
class Comparison:
    """One pair's answer. `score` is the pair score: with calibrated weights (`calibrated`) the probability that
    the two crops show the same person, cut at 0.5; without, the pair head's raw output, which is a score and
    not a probability, cut at the threshold chosen on held-out pairs (SCORE_MEANING says it in words)."""

    score: float  # the pair score (see the class docstring)
    cosine: float  # cosine similarity of the two embeddings
    threshold: float  # 0.5 when calibrated, else the raw score's threshold chosen on held-out pairs
    same: bool  # score >= threshold
    calibrated: bool = False  # whether score is a probability

    @property
    def verdict(self) -> str:
        """The verdict in words, the same in the CLI and the app."""
        said, op = ("Same person" if self.same else "Different people"), "≥" if self.same else "<"
        if self.calibrated:
            return f"{said}: probability {self.score:.1%} {op} {self.threshold:.0%} ({SCORE_MEANING[True]})"
        return f"{said}: pair score {self.score:.3f} {op} threshold {self.threshold:.3f} ({SCORE_MEANING[False]})"


class ReID:
    choice: EngineChoice  # what embeds, and why (engines.choose_engine)

    def __init__(self, model: SiameseReID, device: str | torch.device = "cpu", batch_size: int = 32,
                 engine: str = "auto", flip: bool = False, cache_dir: str | Path | None = None):
        """`engine`: one of engines.ENGINES, by the fixed rule of engines.py ("auto": ONNX Runtime fp32 where the
        cached export in `cache_dir` passes parity, else torch fp32). What runs, and why, is `self.choice`.
        `flip`: every embedding is the mean of the crop's and its mirror image's (test-time flip: 2x the
        embedding time; Market +1.9 Rank-1 / +2.8 mAP with the shipped weights, BENCHMARKS.md section 14)."""
        self.flip = flip
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.engine_asked, self.cache_dir = engine, cache_dir
        self.batch_size = batch_size
        cfg = model.cfg
        # flip-averaged embeddings score pairs a little differently: their own threshold and calibration where recorded
        recorded = Thresholds.from_extra(cfg.extra)
        self.threshold = recorded.pair_for(flip)  # of the raw probability (the Model tab's score histogram)
        # the cosine cut for the same embeddings (flip-averaged ones have their own where recorded)
        self.cos_threshold = recorded.flip_cos if flip and recorded.flip_cos is not None else recorded.cos
        self.calibration = recorded.calibration.for_flip(flip) if recorded.calibration else None
        # the batch -> embedding step (shared with the CLIs and evaluation), and what it is and why
        self.embedder, self.choice = choose_engine(self.model, engine, cache_dir, lambda: self.weights_id)

    @property
    def engine(self) -> str:
        """The engine choice in words (the CLIs print it, the app's Model tab shows it)."""
        return str(self.choice)

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | None = None, allow_pickle: bool = False,
             engine: str | None = None, flip: bool = True, cache_dir: str | Path | None = None) -> ReID:
        """Weights from the argument, else the shipped weights/model.safetensors (entry points pass
        $REID_WEIGHTS, $REID_ENGINE and $REID_CACHE_DIR in; nothing here reads the environment).
        allow_pickle: also read a trusted .pth/.pt state dict (tensors only, weights_only=True).
        engine: see __init__ (default "auto"); cache_dir: where the ONNX export is kept (engines.default_cache_dir).
        flip: test-time flip, on by default here (the app and the CLIs): it pays for its 2x embedding time."""
        weights = resolve_weights(weights)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_model(weights, device, allow_pickle), device, engine=engine or "auto", flip=flip,
                   cache_dir=cache_dir)

    @property
    def info(self) -> dict:
        cfg = self.model.cfg
        return {"backbone": cfg.backbone, "input": f"{cfg.height}x{cfg.width}", "embed_dim": self.model.embed_dim,
                "engine": self.engine, "flip": FLIP_SAID[self.flip], "pair_threshold": self.threshold,
                "cos_threshold": self.cos_threshold,  # the cuts in use: the flip ones when flip is on
                **{k: v for k, v in cfg.extra.items() if k not in ("pair_threshold", "cos_threshold")}}

    @cached_property
    def weights_id(self) -> str:
        """How a gallery, an embeddings file and the ONNX cache know these weights: hashed once, when first asked."""
        return weights_hash(self.model)

    @property
    def embedding_id(self) -> str:
        """What made this ReID's embeddings: the weights, and test-time flip (a flipped embedding is another)."""
        return self.weights_id + ("+flip" if self.flip else "")

    def gallery(self, path: str | Path, limits: Limits | None = None, turn: Turn = nullcontext, **index: Any,
                ) -> Gallery:
        """Open (or create) a gallery file embedded by this model; one built by other weights is re-embedded
        from its stored pictures, each batch in a `turn` (the app's fair lane). `index`: approx="ivf", nlist,
        nprobe (see Gallery)."""
        return Gallery(path, self.embed, self.embedding_id, limits, self.batch_size, turn=turn, **index)

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
        return ReID(model, self.device, self.batch_size, engine or self.engine_asked, self.flip, self.cache_dir), report

    def self_trained(self, images: Sequence[ImageLike], cameras: Sequence[int] | None = None,
                     cfg: AdaptConfig | None = None, engine: str | None = None,
                     tracks: Sequence[int] | None = None) -> tuple[ReID, AdaptReport]:
        """A new ReID self-trained on `images` (unlabeled crops of the cameras it will serve; `cameras`: each
        one's camera, `tracks`: the tracklet each was cut from, -1 unknown), as `adapted` does a folder: the app's
        background "Self-train". A server follows it, and stops it between two units of work, with
        reid_core.listening."""
        cfg = cfg or AdaptConfig()
        model, report = adapt_model(self.model, image_records(images, cameras, tracks), cfg, progress=True)
        return ReID(model, self.device, self.batch_size, engine or self.engine_asked, self.flip, self.cache_dir), report

    def bn_adapted(self, images: Sequence[ImageLike], layers: str = "all", engine: str | None = None,
                   turn: Turn = nullcontext) -> ReID:
        """A new ReID whose BatchNorm statistics are re-estimated on `images` (unlabeled crops of the cameras it
        will serve: a few hundred are enough): the app's "Adapt to this gallery". Each batch's pass waits for a
        `turn` (the app's fair lane)."""
        model = copy.deepcopy(self.model)
        adapt_bn(model, self.pixel_batches(images), layers, turn)
        return ReID(model, self.device, self.batch_size, engine or self.engine_asked, self.flip, self.cache_dir)

    @torch.no_grad()
    def compare_embeddings(self, ea: np.ndarray, eb: np.ndarray) -> list[Comparison]:
        a, b = torch.from_numpy(np.atleast_2d(ea)).to(self.device), torch.from_numpy(np.atleast_2d(eb)).to(self.device)
        logit = self.model.pair_logit(a, b).float()
        cos = F.cosine_similarity(a.float(), b.float()).cpu().numpy()
        if self.calibration is not None:  # Platt-scaled on held-out pairs: 50 % is the verdict
            prob, t = self.calibration(logit.cpu().numpy()), 0.5
        else:
            prob, t = torch.sigmoid(logit).cpu().numpy(), self.threshold
        return [Comparison(float(p), float(c), t, bool(p >= t), self.calibration is not None)
                for p, c in zip(prob, cos, strict=True)]

    def compare(self, a: ImageLike, b: ImageLike) -> Comparison:
        """Embed both images in one batch and score the pair."""
        e = self.embed([a, b])
        return self.compare_embeddings(e[:1], e[1:])[0]

    @torch.no_grad()
    def compare_parts(self, a: ImageLike, b: ImageLike, stripes: int = STRIPES, shift: int = SHIFT,
                      ) -> tuple[Comparison, np.ndarray]:
        """The pair's Comparison and why: how alike each of `stripes` horizontal stripes (head to feet) of the two
        crops is, PCB-style: each stripe of the backbone's map pooled and put through the embedding's own neck (so
        its cosine is on the embedding's scale), its cosine with the best of the other crop's stripes up to
        `shift` away, averaged both ways (symmetric in a and b). One backbone pass over both crops (and their
        mirror images when `flip` is on) gives the embeddings and the stripes alike; it runs in torch fp32, since
        the exported engines give no feature map. The mean stripe cosine tells a same-person pair from another
        better than the old per-region map did (AUC on Market pairs: BENCHMARKS.md section 15)."""
        x = self.pixels([a, b]).to(self.device)
        if self.flip:
            x = torch.cat([x, x.flip(3)])  # a mirror image keeps its stripes where they were
        fm = self.model.feature_map(x.contiguous(memory_format=torch.channels_last)).float()  # (2 or 4, C, h, w)
        n, c = fm.shape[:2]
        whole = F.normalize(self.model.neck(fm.mean(dim=(2, 3)))[1], dim=1)
        pooled = F.adaptive_avg_pool2d(fm, (stripes, 1)).flatten(2).transpose(1, 2).reshape(n * stripes, c)
        parts = F.normalize(self.model.neck(pooled)[1], dim=1).reshape(n, stripes, -1)
        if self.flip:  # test-time flip, as `embed` does it: the mean of both unit vectors, re-normalised
            whole = F.normalize(whole[:2] + whole[2:], dim=1)
            parts = F.normalize(parts[:2] + parts[2:], dim=2)
        sim = parts[0] @ parts[1].T  # (stripes, stripes): a's stripe i against b's stripe j
        idx = torch.arange(stripes, device=sim.device)
        sim = sim.masked_fill((idx[:, None] - idx[None, :]).abs() > shift, -1.0)  # only stripes `shift` apart
        e = whole.cpu().numpy()
        return self.compare_embeddings(e[:1], e[1:])[0], ((sim.amax(1) + sim.amax(0)) / 2).cpu().numpy()
