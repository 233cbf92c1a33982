"""The default engine: the fastest of torch fp32, torch bf16 (only on CPUs with native bf16) and ONNX Runtime (the
export of these weights, cached by their hash) that passes parity with torch fp32, measured at load; the choice is
stated, never silent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import person

from reid_core import ReID, WeightsError, engines
from reid_core.embed import OnnxEmbedder, TorchEmbedder
from reid_core.model import load_model


def fake_timings(monkeypatch: pytest.MonkeyPatch, ms: dict[str, float]) -> None:
    """Timings by engine kind, so which one is faster is the test's choice, not this machine's noise."""
    def measure(embedder: object, x: object, repeat: int = 3) -> float:
        kind = "onnx" if isinstance(embedder, OnnxEmbedder) else "bf16" if embedder.amp else "fp32"
        return ms[kind]
    monkeypatch.setattr(engines, "measure_ms", measure)


def test_auto_engine_exports_once_checks_parity_and_matches_torch(tmp_path: Path, tiny_weights: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)
    fake_timings(monkeypatch, {"onnx": 10.0, "fp32": 30.0})
    auto = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(auto.embedder, OnnxEmbedder)
    assert re.fullmatch(r"ONNX Runtime fp32 on cpu: the fastest within parity here \(ONNX Runtime fp32 10 ms, "
                        r"torch fp32 30 ms per 8 images; parity with torch fp32: cosine >= (0\.999\d+|1\.000000)\)",
                        auto.engine), auto.engine
    assert auto.info["engine"] == auto.engine
    cached = tmp_path / "cache" / f"{auto.weights_id}.onnx"
    assert sorted((tmp_path / "cache").iterdir()) == [cached]
    mtime = cached.stat().st_mtime_ns
    assert isinstance(ReID.load(tiny_weights, "cpu", engine="auto").embedder, OnnxEmbedder)
    assert cached.stat().st_mtime_ns == mtime  # the second load reuses the export

    plain = ReID.load(tiny_weights, "cpu", engine="torch")
    assert isinstance(plain.embedder, TorchEmbedder) and plain.engine == "torch on cpu, fp32"
    crops = [person(pid, cam, 0) for pid in range(1, 4) for cam in range(2)]
    a, t = auto.embed(crops), plain.embed(crops)
    assert (a * t).sum(1).min() > 0.999  # unit vectors: the same embeddings
    assert auto.compare(crops[0], crops[1]).same == plain.compare(crops[0], crops[1]).same

    cached.write_bytes(b"not an onnx graph")  # a damaged cache file is exported again
    assert isinstance(ReID.load(tiny_weights, "cpu", engine="auto").embedder, OnnxEmbedder)
    assert cached.stat().st_size > 1000

    fake_timings(monkeypatch, {"onnx": 40.0, "fp32": 30.0})  # slower here: not used, and it is said
    slower = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(slower.embedder, TorchEmbedder) and slower.engine.startswith(
        "torch fp32 on cpu: the fastest within parity here (torch fp32 30 ms, ONNX Runtime fp32 40 ms per 8 images)")

    fake_timings(monkeypatch, {"onnx": 10.0, "fp32": 30.0})
    monkeypatch.setattr(engines, "PARITY_COSINE", 1.01)  # faster but failing parity: not used, and it is said
    fallback = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(fallback.embedder, TorchEmbedder) and "ONNX Runtime fp32 failed parity (cosine" in fallback.engine
    forced = ReID.load(tiny_weights, "cpu", engine="onnx")  # asked for: used whatever its parity, which is stated
    assert isinstance(forced.embedder, OnnxEmbedder) and forced.engine.startswith("ONNX Runtime fp32 on cpu (asked")
    with pytest.raises(ValueError, match="engine must be one of"):
        ReID(load_model(tiny_weights), engine="fast")


def test_an_unwritable_cache_falls_back_to_torch_and_says_why(tmp_path: Path, tiny_weights: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A Space or a locked-down machine whose cache folder cannot be written still starts, on torch."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("REID_CACHE_DIR", str(blocker / "reid"))
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)
    reid = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(reid.embedder, TorchEmbedder)
    assert reid.engine.startswith("torch on cpu, fp32 (ONNX Runtime unavailable: ") and "file" in reid.engine
    with pytest.raises(WeightsError, match="^engine onnx: ONNX Runtime unavailable: .*file"):
        ReID.load(tiny_weights, "cpu", engine="onnx")  # asked for by name: a one-line error, not a fallback


def test_engine_comes_from_the_environment(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_ENGINE", "torch")
    assert isinstance(ReID.load(tiny_weights, "cpu").embedder, TorchEmbedder)
    assert np.isfinite(ReID.load(tiny_weights, "cpu").embed(person(1, 1, 0))).all()


def test_bf16_only_where_measured_faster_and_within_parity(tmp_path: Path, tiny_weights: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with native bf16 gets bf16 only when it is measured faster than fp32 and stays within parity. Here
    the flag is forced on an AVX2 CPU, where autocast emulates bf16: it runs, and its real parity is measured."""
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(engines.TorchEmbedder, "__call__", bf16_on_any_cpu)
    fake_timings(monkeypatch, {"bf16": 10.0, "fp32": 30.0})
    monkeypatch.setattr(engines, "PARITY_COSINE", 0.9)  # bf16 rounding of a random tiny net, well within this
    fast = ReID.load(tiny_weights, "cpu", engine="torch")
    assert fast.embedder.amp and fast.engine.startswith("torch bf16 on cpu: the fastest within parity here (torch "
                                                        "bf16 10 ms, torch fp32 30 ms per 8 images; parity")
    fake_timings(monkeypatch, {"bf16": 50.0, "fp32": 30.0})
    assert not ReID.load(tiny_weights, "cpu", engine="torch").embedder.amp  # slower: fp32
    fake_timings(monkeypatch, {"bf16": 25.0, "fp32": 30.0})  # faster, but within timing noise: fp32, said
    close = ReID.load(tiny_weights, "cpu", engine="torch")
    assert not close.embedder.amp and "torch bf16 not used: not 1.25x faster than torch fp32" in close.engine
    monkeypatch.setenv("REID_CACHE_DIR", str(tmp_path / "cache"))  # against ONNX Runtime too, in "auto"
    fake_timings(monkeypatch, {"bf16": 9.0, "onnx": 10.0, "fp32": 30.0})
    auto = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(auto.embedder, OnnxEmbedder) and "not 1.25x faster than ONNX Runtime fp32" in auto.engine
    fake_timings(monkeypatch, {"bf16": 7.0, "onnx": 10.0, "fp32": 30.0})
    assert ReID.load(tiny_weights, "cpu", engine="auto").embedder.amp
    fake_timings(monkeypatch, {"bf16": 10.0, "fp32": 30.0})
    monkeypatch.setattr(engines, "PARITY_COSINE", 0.99999999)  # faster but outside parity: fp32, and it says so
    strict = ReID.load(tiny_weights, "cpu", engine="torch")
    assert not strict.embedder.amp and "torch bf16 failed parity (cosine 0.99" in strict.engine


def bf16_on_any_cpu(self: TorchEmbedder, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
        return self.model.embed(x).float().numpy()
