"""The default engine: ONNX Runtime on a CPU when the export of these weights (cached by their hash) passes its
parity check against torch, else torch, and the choice is stated, never silent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import person

from reid_core import ReID, api
from reid_core.embed import OnnxEmbedder, TorchEmbedder
from reid_core.model import load_model


def test_auto_engine_exports_once_checks_parity_and_matches_torch(tmp_path: Path, tiny_weights: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_CACHE_DIR", str(tmp_path / "cache"))
    auto = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(auto.embedder, OnnxEmbedder) and auto.engine.startswith("ONNX Runtime on cpu, fp32 (parity")
    assert auto.info["engine"] == auto.engine
    cached = tmp_path / "cache" / f"{auto.weights_id}.onnx"
    assert sorted((tmp_path / "cache").iterdir()) == [cached]
    mtime = cached.stat().st_mtime_ns
    assert isinstance(ReID.load(tiny_weights, "cpu", engine="auto").embedder, OnnxEmbedder)
    assert cached.stat().st_mtime_ns == mtime  # the second load reuses the export

    plain = ReID.load(tiny_weights, "cpu", engine="torch")
    assert isinstance(plain.embedder, TorchEmbedder) and plain.engine.startswith("torch on cpu, ")
    crops = [person(pid, cam, 0) for pid in range(1, 4) for cam in range(2)]
    a, t = auto.embed(crops), plain.embed(crops)
    assert (a * t).sum(1).min() > 0.999  # unit vectors: the same embeddings
    assert auto.compare(crops[0], crops[1]).same == plain.compare(crops[0], crops[1]).same

    cached.write_bytes(b"not an onnx graph")  # a damaged cache file is exported again
    assert isinstance(ReID.load(tiny_weights, "cpu", engine="auto").embedder, OnnxEmbedder)
    assert cached.stat().st_size > 1000

    monkeypatch.setattr(api, "PARITY_COSINE", 1.01)  # an export that fails parity is not used, and it is said
    fallback = ReID.load(tiny_weights, "cpu", engine="auto")
    assert isinstance(fallback.embedder, TorchEmbedder) and "failed parity" in fallback.engine
    with pytest.raises(ValueError, match="engine must be one of"):
        ReID(load_model(tiny_weights), engine="fast")


def test_engine_comes_from_the_environment(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_ENGINE", "torch")
    assert isinstance(ReID.load(tiny_weights, "cpu").embedder, TorchEmbedder)
    assert np.isfinite(ReID.load(tiny_weights, "cpu").embed(person(1, 1, 0))).all()
