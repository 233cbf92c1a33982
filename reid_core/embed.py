"""The batch pipeline behind `python -m reid_core embed`, evaluation, training's checks and gallery adds.

An `Embedder` turns uint8 pixel batches into unit embeddings (torch, or the ONNX export through ONNX Runtime);
`Mirrored` and `Flipped` wrap any of them for test-time flip. `embed_records` runs one over a list of image
files: each of a few threads decodes a batch and embeds it, so one thread's decoding overlaps the others'
forward passes. The embeddings file holds `embeddings` (N, D, L2-normalised float32) and, in its header,
`paths` (JSON list of the N absolute image paths, same order) plus what made them (`EmbeddingsHeader`), which
`check_embeddings` compares with a model before the embeddings are used.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from .base.files import atomic_write
from .base.progress import progress_bar
from .data.datasets import IMAGE_EXTS, Record
from .data.images import read_pixels, skipped_line, unusable
from .model.errors import WeightsError
from .model.network import ModelConfig, SiameseReID
from .model.precision import autocast

CONFIG_KEY = "reid_config"


class Embedder:
    """uint8 pixel batches (B, 3, H, W) in, (B, D) numpy embeddings out. The model normalises its own input,
    so only uint8 (4x fewer bytes than float) travels from the loader and to a GPU."""

    cfg: ModelConfig
    dim: int
    name = "embedder"  # what runs, in words ("torch fp32", "ONNX Runtime fp32", ...)
    model: SiameseReID | None = None  # the torch model behind it, if any
    device = torch.device("cpu")
    channels_last = False

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


class TorchEmbedder(Embedder):
    """The model (eval mode, channels_last). `amp`: autocast as precision.autocast does it (bf16 on a CPU only
    where it is native); which format is faster on a CPU is measured by engines.choose_engine, not assumed."""

    channels_last = True

    def __init__(self, model: SiameseReID, amp: bool = False):
        self.model, self.amp = model, amp
        self.cfg, self.dim = model.cfg, model.embed_dim
        self.device = next(model.parameters()).device
        self.name = "torch fp32" if not amp else "torch bf16" if self.device.type == "cpu" else "torch autocast"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            return self.model.embed(x).float().cpu().numpy()


class Mirrored(Embedder):
    """Embeds each image's mirror image (evaluation keeps both passes, to report plain and flip figures)."""

    def __init__(self, inner: Embedder):
        self.inner, self.cfg, self.dim, self.model = inner, inner.cfg, inner.dim, inner.model
        self.name = f"{inner.name}, {type(self).__name__.lower()}"

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.inner(x.flip(3))


class Flipped(Mirrored):
    """Test-time flip on any engine: the mean of an image's and its mirror image's unit embeddings (2x the time);
    the one flip average, with evaluation's flip figures (flip_average)."""

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return flip_average(self.inner(x), self.inner(x.flip(3)))


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of a with the same row of b: how two engines' embeddings of one batch agree."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)


def flip_average(f: np.ndarray, f_mirror: np.ndarray) -> np.ndarray:
    """The mean of two sets of unit embeddings, re-normalised: test-time flip's average, in this one place."""
    s = f + f_mirror
    return s / np.linalg.norm(s, axis=1, keepdims=True).clip(1e-12)


class OnnxEmbedder(Embedder):
    """The exported graph through onnxruntime on the CPU (plain NCHW uint8 input). A call runs on as many threads
    as torch would use in the calling thread (one session per thread count), so embed_records' per-thread
    share of the CPU holds for ONNX as for torch."""

    name = "ONNX Runtime fp32"

    def __init__(self, path: str | Path):
        self.path, self.sessions, self.lock = str(path), {}, threading.Lock()
        try:
            session = self.session()
            self.cfg = ModelConfig.from_dict(json.loads(session.get_modelmeta().custom_metadata_map[CONFIG_KEY]))
        except KeyError as e:
            raise WeightsError(f"{path}: ONNX file without the {CONFIG_KEY} metadata; export it with "
                               "python -m reid_core export") from e
        except Exception as e:  # onnxruntime's own error types (NoSuchFile, InvalidProtobuf, ...)
            why = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            raise WeightsError(f"{path}: not a loadable ONNX model ({why})") from e
        self.dim = int(session.get_outputs()[0].shape[1])

    def session(self) -> Any:  # an onnxruntime.InferenceSession (imported only when asked for)
        threads = torch.get_num_threads()
        with self.lock:
            if threads not in self.sessions:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                self.sessions[threads] = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
            return self.sessions[threads]

    def __call__(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        x = x.numpy() if isinstance(x, torch.Tensor) else x
        return self.session().run(None, {"images": np.ascontiguousarray(x, dtype=np.uint8)})[0]


def thread_pool(threads: int | None = None) -> ThreadPoolExecutor:
    """`threads` threads (default: torch's CPU threads), each running the model on its share of those threads."""
    threads = max(1, threads or torch.get_num_threads())
    share = max(1, torch.get_num_threads() // threads)
    return ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(share,))


def embed_records(embedder: Embedder, records: Sequence[Record], batch_size: int = 64, threads: int | None = None,
                  desc: str = "embed", progress: bool = True, skip_bad: bool = False, screen: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, indices of the records they belong to). `threads` threads (default: torch's CPU threads)
    each take whole batches, decode them and embed them; on a CPU each runs the model on its share of the
    threads (1 each by default). Batches side by side beat one batch on all cores by 0-15 % here, and a
    thread's decoding then overlaps the others' forward passes instead of stalling a parallel one: the
    pipeline keeps most of the raw forward's rate (BENCHMARKS §3 measures it). Without `skip_bad` an
    unreadable image raises ImageError; with it, it is reported in one line and left out of the indices. `screen`:
    a line on stderr for each image that does not look like a person crop (embedded all the same)."""
    size = (embedder.cfg.height, embedder.cfg.width)

    def job(start: int) -> tuple[np.ndarray | None, np.ndarray, list[str], list[str]]:
        warnings: list[str] | None = [] if screen else None
        pixels, kept, errors = read_pixels(records[start:start + batch_size], size, skip_bad, warnings)
        return (None if pixels is None else embedder(pixels)), kept + start, errors, warnings or []

    out, kept = [], []
    pool = thread_pool(threads)
    try:
        results = pool.map(job, range(0, len(records), batch_size))
        for emb, idx, errors, warnings in progress_bar(results, total=-(-len(records) // batch_size), desc=desc,
                                                                     disable=not progress, unit="batch"):
            for e in errors:
                tqdm.write(skipped_line(e), file=sys.stderr)
            for w in warnings:
                tqdm.write(f"warning: {w}", file=sys.stderr)
            if emb is not None:
                out.append(emb)
                kept.append(idx)
    finally:  # an error or ^C: drop the batches not started yet instead of embedding them all first
        pool.shutdown(wait=True, cancel_futures=True)
    if not out:
        return np.zeros((0, embedder.dim), np.float32), np.zeros(0, np.int64)
    return np.concatenate(out).astype(np.float32, copy=False), np.concatenate(kept)


def list_images(folder: str | Path, skipped: list[str] | None = None) -> list[Path]:
    """Every image file under `folder`, sorted; ValueError (one line) for a missing or image-less folder.
    `skipped`: given, gets load_image's one line for every other visible file below (a .txt, an .avif), so the
    caller can name what it leaves out; hidden files (.DS_Store) are left out silently, as in a zip."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix.lower() in IMAGE_EXTS]
    if skipped is not None:
        skipped += [why for p in found if p.suffix.lower() not in IMAGE_EXTS
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                    and (why := unusable(p))]
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))}) in it or below it")
    return files


@dataclass(frozen=True)
class EmbeddingsHeader:
    """What made an embeddings file, kept in its safetensors header: the one identity every store of embeddings
    checks (`check_embeddings`) before it takes them."""

    weights_id: str  # the weights' hash, "+flip" when flip-averaged (ReID.embedding_id): what must match
    engine: str = ""  # what embedded them ("ONNX Runtime fp32", "torch fp32"): engines within parity agree
    weights: str = ""  # the weights file, for people (and `gallery build` without --weights)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> EmbeddingsHeader | None:
        return cls(d["weights_id"], d.get("engine", ""), d.get("weights", "")) if d.get("weights_id") else None


def check_embeddings(header: EmbeddingsHeader | None, embedding_id: str, what: str | Path) -> None:
    """ValueError (one line) unless `header` says the embeddings of `what` are `embedding_id`'s (ReID.embedding_id:
    the same weights, and the same test-time flip setting). A file without a header is taken as it is."""
    if header is None or header.weights_id == embedding_id:
        return
    flip_only = header.weights_id.split("+")[0] == embedding_id.split("+")[0]
    raise ValueError(f"{what}: embedded by other weights ({header.weights or header.weights_id})" if not flip_only
                     else f"{what}: embedded with the other test-time flip setting (--no-flip: a flipped embedding is "
                          "another embedding)")


def save_embeddings(path: str | Path, embeddings: np.ndarray, paths: Sequence[str], header: EmbeddingsHeader,
                    ) -> None:
    """One safetensors file: `embeddings` (N, D) and, in its header, the N image paths and what made them."""
    meta = {"paths": json.dumps(list(paths)), **{k: v for k, v in asdict(header).items() if v}}
    atomic_write(path, lambda p: save_file({"embeddings": np.ascontiguousarray(embeddings)}, str(p), meta))


def load_embeddings(path: str | Path) -> tuple[np.ndarray, list[str], EmbeddingsHeader | None]:
    """What `save_embeddings` wrote: (N, D) embeddings, their N image paths and what made them (None for a file
    without that header); ValueError in one line."""
    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            emb, paths = f.get_tensor("embeddings"), json.loads(meta["paths"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not an embeddings file from `python -m reid_core embed` "
                         f"({type(e).__name__}: {e})") from e
    if emb.ndim != 2 or len(emb) != len(paths):
        raise ValueError(f"{path}: {emb.shape} embeddings for {len(paths)} paths")
    return emb, paths, EmbeddingsHeader.from_dict(meta)
