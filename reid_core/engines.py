"""Which engine and number format embed on this machine: the fastest one that passes parity with torch fp32,
measured here at load time, and said in words, never switched on silently.

On a CPU the candidates are torch fp32 (the reference), torch bf16 autocast (only where the CPU has native bf16)
and ONNX Runtime fp32 (the export of the weights, cached by their hash). Each embeds one parity batch; one that
differs from fp32 by more than PARITY_COSINE is refused, and of the rest the fastest (median of a few timed calls)
runs; bf16, which changes the numbers, only when it beats the fastest fp32 engine by REDUCED_MARGIN. On a GPU
torch runs with autocast (bf16 on Ampere and later, else fp16).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .embed import Embedder, OnnxEmbedder, TorchEmbedder, row_cosine
from .export import PARITY_COSINE, export_onnx, parity_batch
from .model import SiameseReID, WeightsError
from .precision import cpu_has_bf16

ENGINES = ("auto", "onnx", "torch", "fp32")
PARITY_IMAGES = 8  # the batch every candidate embeds, for parity and timing
# bf16 changes the numbers (Rank-1 +0.38 on Market, BENCHMARKS §13) and one timed batch is noisy: it must beat the
# fastest fp32 engine by this factor, not by a coin toss (24 vs 27 ms flipped between runs on one machine)
REDUCED_MARGIN = 1.25


def onnx_cache() -> Path:
    """Where exported ONNX graphs are kept, one per weights hash: $REID_CACHE_DIR, else ~/.cache/reid."""
    return Path(os.environ.get("REID_CACHE_DIR") or Path.home() / ".cache" / "reid")


def cached_onnx(model: SiameseReID, weights_id: str) -> OnnxEmbedder:
    import onnxruntime  # noqa: F401 - fail here, before exporting, when it is not installed

    path = onnx_cache() / f"{weights_id}.onnx"
    if path.exists():
        try:
            return OnnxEmbedder(path)
        except WeightsError:  # a damaged cache file: export again
            path.unlink(missing_ok=True)
    export_onnx(model, path)
    return OnnxEmbedder(path)


def measure_ms(embedder: Embedder, x: torch.Tensor, repeat: int = 3) -> float:
    """Median wall time of embedding x; the caller has embedded x once already (first calls allocate and plan)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        embedder(x)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def floor6(x: float) -> str:
    """Six decimals, rounded down: a lower bound must not print as 1.000000 when it is 0.9999996."""
    return f"{math.floor(min(x, 1.0) * 1e6) / 1e6:.6f}"


@dataclass
class Candidate:
    embedder: Embedder
    cosine: float = 1.0  # the least cosine with torch fp32 over the parity batch
    ms: float = float("nan")  # median time to embed the parity batch

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def reduced(self) -> bool:
        """Computes in less than fp32 (bf16 autocast): other numbers, so it has to be clearly faster."""
        return bool(getattr(self.embedder, "amp", False))

    @property
    def passes(self) -> bool:
        return self.cosine >= PARITY_COSINE


def choose_engine(model: SiameseReID, weights_id: str, engine: str = "auto") -> tuple[Embedder, str]:
    """(the embedder to use, a sentence saying which it is and why). `engine`: "auto" (the fastest within
    parity), "onnx" (ONNX Runtime whatever its parity, an error if it cannot load), "torch" (torch, in bf16
    only where that is measured faster and within parity) or "fp32" (torch fp32, nothing measured: the same
    numbers on every machine)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    device = next(model.parameters()).device
    if engine == "fp32":
        return TorchEmbedder(model, amp=False), f"torch on {device.type}, fp32 (asked for)"
    if device.type != "cpu":
        if engine == "onnx":
            raise WeightsError(f"engine onnx runs on the CPU only (this model is on {device}); use device cpu")
        fmt = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return TorchEmbedder(model, amp=True), f"torch on {device.type}, {fmt} autocast"
    fp32 = Candidate(TorchEmbedder(model, amp=False))
    cands = [fp32] if engine != "onnx" else []
    notes = []
    if engine != "onnx" and cpu_has_bf16():
        cands.append(Candidate(TorchEmbedder(model, amp=True)))
    if engine != "torch":
        try:
            cands.append(Candidate(cached_onnx(model, weights_id)))
        except (ImportError, WeightsError, RuntimeError, OSError) as e:  # OSError: a read-only cache folder
            why = f"ONNX Runtime unavailable: {(str(e).splitlines() or [type(e).__name__])[0][:160]}"
            if engine == "onnx":
                raise WeightsError(f"engine onnx: {why}") from e
            notes.append(why)
    if len(cands) == 1 and engine != "onnx":
        return fp32.embedder, "torch on cpu, fp32" + (f" ({notes[0]})" if notes else "")
    x = parity_batch(model.cfg, PARITY_IMAGES)
    want = fp32.embedder(x)  # the parity reference, and fp32's warm-up call
    for c in cands:  # each candidate's parity call is its warm-up call
        c.cosine = 1.0 if c is fp32 else float(row_cosine(want, c.embedder(x)).min())
    if engine == "onnx":  # asked for: nothing to time against
        c = cands[0]
        return c.embedder, f"{c.name} on cpu (asked for; parity with torch fp32: cosine >= {floor6(c.cosine)})"
    for c in cands:
        c.ms = measure_ms(c.embedder, x)
    usable = [c for c in cands if c is fp32 or c.passes]  # fp32 is the reference
    best = min((c for c in usable if not c.reduced), key=lambda c: c.ms)
    refused = [f"{c.name} failed parity (cosine {c.cosine:.5f} < {PARITY_COSINE})" for c in cands
               if c is not fp32 and not c.passes]
    for c in sorted((c for c in usable if c.reduced), key=lambda c: c.ms)[:1]:
        if c.ms * REDUCED_MARGIN <= best.ms:
            best = c
        else:
            refused.append(f"{c.name} not used: not {REDUCED_MARGIN}x faster than {best.name}")
    timings = ", ".join(f"{c.name} {c.ms:.0f} ms" for c in sorted(cands, key=lambda c: c.ms))
    said = (f"{best.name} on cpu: the fastest within parity here ({timings} per {PARITY_IMAGES} images"
            + (f"; parity with torch fp32: cosine >= {floor6(best.cosine)}" if best is not fp32 else "") + ")")
    return best.embedder, "; ".join([said, *refused, *notes])
