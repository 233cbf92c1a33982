"""Which engine and number format embed: a fixed rule, the same answer and the same figures on every run.

- "auto" (the default everywhere): ONNX Runtime fp32 on a CPU when the cached export of these weights passed its
  parity check with torch fp32; else torch fp32 (on a GPU, and wherever ONNX Runtime is missing or failed parity).
- "onnx": ONNX Runtime fp32, or a one-line error (not installed, a GPU model, failed parity).
- "fp32" (also "torch"): torch fp32, the reference; nothing exported, nothing measured.
- "bf16": torch under autocast (bf16; fp16 on GPUs before Ampere), only when asked for, and only when it passes
  parity with torch fp32 on this device, else a one-line error: it changes the numbers (Market Rank-1 moved by
  0.38, BENCHMARKS §13).

Nothing is timed at load (speed is measured in bench/engine_speed.py, BENCHMARKS.md). The ONNX export is cached
in `cache_dir` under a key that hashes everything the graph bakes in: the weights and the model config
(weights_hash: tensors, backbone, input size, normalisation, last stride, embedding width), the opset and the
exporter's versions (torch, onnx, onnxruntime). `<key>.onnx` sits beside `<key>.json`, the record of its parity
check (least cosine with torch fp32 over the seeded parity batch). The first load of new weights (or of another
config, or another exporter) exports and checks once; later loads only read the record and open the graph. An
export that failed parity is recorded too, so it is not retried on every load. The folder is bounded
(CACHE_BYTES): after each new export the least recently used exports go first.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .base.files import atomic_write_text
from .embed import Embedder, OnnxEmbedder, TorchEmbedder, row_cosine
from .export import OPSET, PARITY_COSINE, ParityError, export_onnx, parity_batch
from .model.errors import WeightsError
from .model.network import SiameseReID
from .model.precision import cpu_has_bf16
from .model.weights import weights_hash

ENGINES = ("auto", "onnx", "fp32", "torch", "bf16")  # the one list: --engine's choices, ReID's engine=
ENGINE_HELP = ("auto (default; $REID_ENGINE): ONNX Runtime fp32 on a CPU where the cached export of these weights "
               "passed parity with torch fp32, else torch fp32; onnx: ONNX Runtime or an error; fp32 (or torch): "
               "torch fp32; bf16: torch bf16 autocast, only if within parity on this device")


def default_cache_dir() -> Path:
    """Where ONNX exports are kept unless the entry point names a folder ($REID_CACHE_DIR there)."""
    return Path.home() / ".cache" / "reid"


CACHE_BYTES = 512 * 2**20  # the ONNX cache folder's budget: a ResNet-50 export is ~95 MB, the shipped model's 13.5 MB


def exporter_versions() -> dict[str, str]:
    """What makes and runs the graph, besides the model: another version may write another graph."""
    import onnx
    import onnxruntime

    return {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}


def export_key(weights_id: str) -> str:
    """The cache key of one export: the model's hash (weights_hash covers the tensors and the config) and the
    exporter's versions."""
    facts = json.dumps({"model": weights_id, **exporter_versions()}, sort_keys=True)
    return hashlib.blake2b(facts.encode(), digest_size=16).hexdigest()


def prune_cache(cache_dir: Path, keep: str, budget: int = CACHE_BYTES) -> list[str]:
    """Delete the least recently used exports (graph and record together) until the folder fits `budget`
    bytes; `keep` (the export just used) always stays. Returns the keys deleted."""
    sizes: dict[str, int] = {}
    used: dict[str, float] = {}
    for p in cache_dir.glob("*.json"):
        graph = p.with_suffix(".onnx")
        try:
            sizes[p.stem] = p.stat().st_size + (graph.stat().st_size if graph.exists() else 0)
            used[p.stem] = p.stat().st_mtime
        except OSError:  # deleted meanwhile by another process
            continue
    total, gone = sum(sizes.values()), []
    for key in sorted(used, key=used.get):
        if total <= budget:
            break
        if key == keep:
            continue
        for suffix in (".onnx", ".json"):
            (cache_dir / f"{key}{suffix}").unlink(missing_ok=True)
        total -= sizes[key]
        gone.append(key)
    return gone


def floor6(x: float) -> str:
    """Six decimals, rounded down: a lower bound must not print as 1.000000 when it is 0.9999996."""
    return f"{math.floor(min(x, 1.0) * 1e6) / 1e6:.6f}"


@dataclass(frozen=True)
class EngineChoice:
    """What embeds, and why: what `ReID.choice` holds and tests assert on; `str()` is the sentence people read."""

    engine: str  # "onnx" (ONNX Runtime) or "torch"
    dtype: str  # "fp32", "bf16" or "fp16"
    device: str  # "cpu", "cuda"
    parity: float | None  # least cosine with torch fp32 over the parity batch; None for torch fp32, the reference
    reason: str  # why this one, in words

    @property
    def name(self) -> str:
        return f"{'ONNX Runtime' if self.engine == 'onnx' else 'torch'} {self.dtype}"

    def __str__(self) -> str:
        figure = "" if self.parity is None else f"; parity with torch fp32: cosine >= {floor6(self.parity)}"
        return f"{self.name} on {self.device} ({self.reason}{figure})"


@dataclass(frozen=True)
class ExportRecord:
    """The parity check of one cached export, stored beside it as JSON."""

    key: str  # export_key: the model's hash and the exporter's versions
    parity: float  # least cosine with torch fp32 over the parity batch

    @property
    def passes(self) -> bool:
        return self.parity >= PARITY_COSINE


def cached_export(model: SiameseReID, weights_id: str, cache_dir: Path,
                  budget: int = CACHE_BYTES) -> tuple[Path, ExportRecord]:
    """(the ONNX file, its parity record): read from `cache_dir`, else exported and checked now, once, after
    which the folder is pruned to `budget` bytes. The file exists only when the record passes. A use marks the
    record as recently used (its mtime). ImportError without onnxruntime; OSError for a folder that cannot be
    written."""
    key = export_key(weights_id)
    path, record_file = cache_dir / f"{key}.onnx", cache_dir / f"{key}.json"
    try:
        record = ExportRecord(**json.loads(record_file.read_text()))
        if record.key == key and (path.exists() or not record.passes):
            os.utime(record_file)  # least recently used goes first
            return path, record
    except (OSError, ValueError, TypeError):  # none yet, or torn: export again
        pass
    try:
        cosine = export_onnx(model, path)
    except ParityError as e:
        cosine = e.cosine
        path.unlink(missing_ok=True)
    record = ExportRecord(key, cosine)
    atomic_write_text(record_file, json.dumps(asdict(record), indent=2))
    prune_cache(cache_dir, key, budget)
    return path, record


def cached_onnx(model: SiameseReID, weights_id: str, cache_dir: Path) -> tuple[OnnxEmbedder | None, ExportRecord]:
    """(ONNX Runtime on the cached export, or None when it failed parity; its record). A damaged graph file is
    exported again, once."""
    path, record = cached_export(model, weights_id, cache_dir)
    try:
        return (OnnxEmbedder(path) if record.passes else None), record
    except WeightsError:
        path.unlink(missing_ok=True)
        path, record = cached_export(model, weights_id, cache_dir)
        return OnnxEmbedder(path), record


def choose_engine(model: SiameseReID, engine: str = "auto", cache_dir: str | Path | None = None,
                  weights_id: Callable[[], str] | None = None) -> tuple[Embedder, EngineChoice]:
    """(the embedder, what it is and why) by the rule in this module's docstring. `weights_id`: the hash of the
    weights (asked for only when the ONNX cache is looked at); `cache_dir`: default_cache_dir()."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    device = next(model.parameters()).device
    fp32 = TorchEmbedder(model, amp=False)
    if engine in ("fp32", "torch"):
        return fp32, EngineChoice("torch", "fp32", device.type, None, "asked for")
    if engine == "bf16":
        return reduced(model, fp32, device)
    if device.type != "cpu":
        if engine == "onnx":
            raise WeightsError(f"engine onnx runs on the CPU only (this model is on {device}); use device cpu")
        return fp32, EngineChoice("torch", "fp32", device.type, None, "the default off the CPU")
    wid = weights_id() if weights_id else weights_hash(model)
    try:
        embedder, record = cached_onnx(model, wid, Path(cache_dir or default_cache_dir()))
    except (ImportError, WeightsError, RuntimeError, OSError) as e:  # OSError: a read-only cache folder
        why = f"ONNX Runtime unavailable: {(str(e).splitlines() or [type(e).__name__])[0][:160]}"
        if engine == "onnx":
            raise WeightsError(f"engine onnx: {why}") from e
        return fp32, EngineChoice("torch", "fp32", "cpu", None, why)
    if embedder is None:
        if engine == "onnx":
            raise ParityError("engine onnx: the ONNX export", record.parity)
        return fp32, EngineChoice("torch", "fp32", "cpu", None, f"the ONNX export failed parity (cosine "
                                  f"{record.parity:.6f} < {PARITY_COSINE})")
    said = "asked for" if engine == "onnx" else "the cached export of these weights passed parity"
    return embedder, EngineChoice("onnx", "fp32", "cpu", record.parity, said)


def reduced(model: SiameseReID, fp32: TorchEmbedder, device: torch.device) -> tuple[Embedder, EngineChoice]:
    """torch under autocast, when this device computes it natively and it passes parity with fp32 here."""
    if device.type == "cpu" and not cpu_has_bf16():
        raise WeightsError("engine bf16: this CPU has no native bf16 (emulated, several times slower than fp32); "
                           "use fp32")
    dtype = "fp16" if device.type == "cuda" and not torch.cuda.is_bf16_supported() else "bf16"
    amp = TorchEmbedder(model, amp=True)
    x = parity_batch(model.cfg)
    cosine = float(row_cosine(fp32(x), amp(x)).min())
    if cosine < PARITY_COSINE:
        raise ParityError(f"engine bf16: torch {dtype} on {device.type}", cosine)
    return amp, EngineChoice("torch", dtype, device.type, cosine, "asked for")
