"""Embed a folder of images (recursively) into one safetensors file: the batch pipeline behind evaluation too.

    python -m reid_core.embed DIR --out FILE [--weights weights/model.safetensors] [--backend torch|onnx]

Each of a few threads decodes a batch and embeds it, so one thread's decoding overlaps the others' forward
passes. An unreadable image gets a one-line warning and is skipped. FILE holds `embeddings` (N, D, L2-normalised
float32) and, in its header, `paths` (JSON list of the N absolute image paths, same order) plus the model and
backend used.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from .datasets import IMAGE_EXTS, Record
from .files import atomic_write
from .images import read_pixels
from .model import WEIGHTS_HELP, ModelConfig, SiameseReID, WeightsError, load_model, resolve_weights, weights_hash
from .precision import autocast

CONFIG_KEY = "reid_config"


class Embedder:
    """uint8 pixel batches (B, 3, H, W) in, (B, D) numpy embeddings out. The model normalises its own input,
    so only uint8 (4x fewer bytes than float) travels from the loader and to a GPU."""

    cfg: ModelConfig
    dim: int
    device = torch.device("cpu")
    channels_last = False

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


class TorchEmbedder(Embedder):
    """The model in eval mode, channels_last, bf16 where native. `flip` averages each image with its mirror
    image (test-time flip); `mirror` embeds the mirror images alone (evaluation reports both from two passes)."""

    channels_last = True

    def __init__(self, model: SiameseReID, amp: bool = True, flip: bool = False, mirror: bool = False):
        self.model, self.amp, self.flip, self.mirror = model, amp, flip, mirror
        self.cfg, self.dim = model.cfg, model.embed_dim
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if self.mirror:
            x = x.flip(3)
        with autocast(self.device, self.amp):
            return self.model.embed(x, self.flip).float().cpu().numpy()


class OnnxEmbedder(Embedder):
    """The exported graph through onnxruntime on the CPU (plain NCHW uint8 input). A call runs on as many threads
    as torch would use in the calling thread (one session per thread count), so embed_records' per-thread
    share of the CPU holds for ONNX as for torch."""

    def __init__(self, path: str | Path):
        self.path, self.sessions, self.lock = str(path), {}, threading.Lock()
        try:
            session = self.session()
            self.cfg = ModelConfig.from_dict(json.loads(session.get_modelmeta().custom_metadata_map[CONFIG_KEY]))
        except KeyError as e:
            raise WeightsError(f"{path}: ONNX file without the {CONFIG_KEY} metadata; export it with "
                               "python -m reid_core.export") from e
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


def thread_pool(workers: int | None = None) -> ThreadPoolExecutor:
    """`workers` threads (default: torch's CPU threads), each running torch on its share of those threads."""
    workers = max(1, workers or torch.get_num_threads())
    share = max(1, torch.get_num_threads() // workers)
    return ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(share,))


def embed_records(embedder: Embedder, records: Sequence[Record], batch_size: int = 64, workers: int | None = None,
                  desc: str = "embed", progress: bool = True, skip_bad: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, indices of the records they belong to). `workers` threads (default: torch's CPU threads)
    each take whole batches, decode them and embed them; on a CPU each runs the model on its share of the
    threads (1 each by default). Batches side by side beat one batch on all cores by 0-15 % here, and a
    thread's decoding then overlaps the others' forward passes instead of stalling a parallel one: the
    pipeline keeps most of the raw forward's rate (BENCHMARKS §3 measures it). Without `skip_bad` an
    unreadable image raises ImageError; with it, it is reported in one line and left out of the indices."""
    size = (embedder.cfg.height, embedder.cfg.width)

    def job(start: int) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
        pixels, kept, errors = read_pixels(records[start:start + batch_size], size, skip_bad)
        return (None if pixels is None else embedder(pixels)), kept + start, errors

    out, kept = [], []
    pool = thread_pool(workers)
    try:
        results = pool.map(job, range(0, len(records), batch_size))
        for emb, idx, errors in tqdm(results, total=-(-len(records) // batch_size), desc=desc, leave=False,
                                     disable=not progress, unit="batch"):
            for e in errors:
                tqdm.write(f"warning: {e}; skipped", file=sys.stderr)
            if emb is not None:
                out.append(emb)
                kept.append(idx)
    finally:  # an error or ^C: drop the batches not started yet instead of embedding them all first
        pool.shutdown(wait=True, cancel_futures=True)
    if not out:
        return np.zeros((0, embedder.dim), np.float32), np.zeros(0, np.int64)
    return np.concatenate(out).astype(np.float32, copy=False), np.concatenate(kept)


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder`, sorted; ValueError (one line) for a missing or image-less folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))}) in it or below it")
    return files


def save_embeddings(path: str | Path, embeddings: np.ndarray, paths: Sequence[str], **info: str) -> None:
    header = {"paths": json.dumps(list(paths)), **info}
    atomic_write(path, lambda p: save_file({"embeddings": np.ascontiguousarray(embeddings)}, str(p), header))


def load_embeddings(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """What `save_embeddings` wrote: (N, D) embeddings and their N image paths; ValueError in one line."""
    try:
        with safe_open(str(path), "np") as f:
            emb, paths = f.get_tensor("embeddings"), json.loads((f.metadata() or {})["paths"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not an embeddings file from reid_core.embed ({type(e).__name__}: {e})") from e
    if emb.ndim != 2 or len(emb) != len(paths):
        raise ValueError(f"{path}: {emb.shape} embeddings for {len(paths)} paths")
    return emb, paths


def make_embedder(backend: str, weights: str | Path, onnx: str | Path | None = None, device: str = "cpu",
                  amp: bool = True, flip: bool = False) -> Embedder:
    if backend == "onnx":
        if flip:
            raise ValueError("--flip runs on the torch backend only (the ONNX graph embeds each image once)")
        return OnnxEmbedder(onnx or Path(weights).with_suffix(".onnx"))
    return TorchEmbedder(load_model(weights, device), amp, flip)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="folder of images (searched recursively)")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--weights", help=WEIGHTS_HELP)
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--onnx", help="ONNX model from reid_core.export (default: the weights path with .onnx)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, help="threads, each decoding and embedding whole batches "
                    "(default: one per CPU thread torch uses)")
    ap.add_argument("--no-amp", action="store_true", help="fp32 even where the hardware has native bf16")
    ap.add_argument("--flip", action="store_true", help="average each image's embedding with its mirror image's "
                                                        "(test-time flip: 2x the time, usually a little better)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    args.weights = resolve_weights(args.weights)
    try:
        files = list_images(args.folder)
        embedder = make_embedder(args.backend, args.weights, args.onnx, args.device, not args.no_amp, args.flip)
    except (WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    emb, kept = embed_records(embedder, [Record(str(p), 0, 0) for p in files], args.batch_size, args.workers,
                              skip_bad=True)
    seconds = time.perf_counter() - t0
    paths = [str(files[i].resolve()) for i in kept]
    ident = {}  # what a gallery checks before taking these rows (a flipped embedding is another embedding)
    if isinstance(embedder, TorchEmbedder):
        ident["weights_id"] = weights_hash(embedder.model) + ("+flip" if args.flip else "")
    save_embeddings(args.out, emb, paths, weights=str(args.weights), backend=args.backend, **ident)
    print(f"embedded {len(paths)} images ({len(files) - len(paths)} skipped) in {seconds:.1f} s "
          f"({len(paths) / max(seconds, 1e-9):.0f} img/s, {args.backend}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
