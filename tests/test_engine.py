"""The engine follows a fixed rule (engines.py): ONNX Runtime fp32 on a CPU where the cached export of these
weights passed parity with torch fp32, else torch fp32; bf16 only when asked for and within parity. The choice is
a value (EngineChoice), the same on every load, and nothing is timed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import person

from reid_core import ReID, WeightsError, engines, export
from reid_core.cli import main as cli
from reid_core.embed import OnnxEmbedder, TorchEmbedder, load_embeddings
from reid_core.engines import ENGINES, EngineChoice
from reid_core.model.network import load_model


def test_auto_exports_once_records_parity_and_gives_the_same_choice_on_every_load(tmp_path: Path,
                                                                                   small_weights: Path) -> None:
    cache = tmp_path / "cache"
    first = ReID.load(small_weights, "cpu", cache_dir=cache)  # the production default: "auto"
    assert isinstance(first.embedder, OnnxEmbedder)
    assert first.choice == EngineChoice("onnx", "fp32", "cpu", first.choice.parity,
                                        "the cached export of these weights passed parity")
    assert export.PARITY_COSINE <= first.choice.parity <= 1.0 + 1e-6
    assert first.info["engine"] == first.engine == str(first.choice)
    key = engines.export_key(first.weights_id)
    onnx_file, record_file = cache / f"{key}.onnx", cache / f"{key}.json"
    assert sorted(cache.iterdir()) == [record_file, onnx_file]
    record = json.loads(record_file.read_text())
    assert record["key"] == key and record["parity"] == first.choice.parity
    made = onnx_file.stat().st_mtime_ns

    again = ReID(load_model(small_weights), cache_dir=cache)  # ReID() has the same default as ReID.load
    assert again.choice == first.choice  # the same engine and the same parity figure, read from the record
    assert onnx_file.stat().st_mtime_ns == made  # nothing exported again (the record's mtime marks the use)
    assert json.loads(record_file.read_text()) == record
    x = torch.stack([torch.from_numpy(np.array(person(p, 1, 0).resize((32, 64)))).permute(2, 0, 1)
                     for p in range(1, 5)])
    torch_emb = TorchEmbedder(again.model)(x)
    assert ((again.embedder(x) * torch_emb).sum(1) >= export.PARITY_COSINE).all()


def test_without_onnx_runtime_or_with_a_failed_export_torch_fp32_runs_and_says_why(
        tmp_path: Path, small_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    bare = ReID.load(small_weights, "cpu", cache_dir=tmp_path / "none")
    assert isinstance(bare.embedder, TorchEmbedder) and bare.choice.engine == "torch"
    assert (bare.choice.dtype, bare.choice.parity) == ("fp32", None)
    assert bare.choice.reason.startswith("ONNX Runtime unavailable: ")
    with pytest.raises(WeightsError, match="^engine onnx: ONNX Runtime unavailable: "):
        ReID.load(small_weights, "cpu", engine="onnx", cache_dir=tmp_path / "none")
    monkeypatch.undo()

    cache = tmp_path / "cache"
    monkeypatch.setattr(export, "PARITY_COSINE", 1.01)  # no export can pass: it is recorded as failed
    monkeypatch.setattr(engines, "PARITY_COSINE", 1.01)
    failed = ReID.load(small_weights, "cpu", cache_dir=cache)
    assert isinstance(failed.embedder, TorchEmbedder)
    assert failed.choice.reason.startswith("the ONNX export failed parity (cosine ")
    assert sorted(p.suffix for p in cache.iterdir()) == [".json"]  # the record, no graph
    monkeypatch.setattr(engines, "export_onnx", lambda *a, **k: pytest.fail("exported again"))
    assert ReID.load(small_weights, "cpu", cache_dir=cache).choice == failed.choice
    with pytest.raises(WeightsError, match=r"^engine onnx: the ONNX export differs from torch fp32 \(cosine"):
        ReID.load(small_weights, "cpu", engine="onnx", cache_dir=cache)


def test_an_unwritable_cache_falls_back_to_torch_and_says_why(tmp_path: Path, small_weights: Path) -> None:
    """A Space or a locked-down machine whose cache folder cannot be written still starts, on torch."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    reid = ReID.load(small_weights, "cpu", cache_dir=blocker / "reid")
    assert isinstance(reid.embedder, TorchEmbedder)
    assert reid.choice.reason.startswith("ONNX Runtime unavailable: ") and "file" in reid.choice.reason
    with pytest.raises(WeightsError, match="^engine onnx: ONNX Runtime unavailable: .*file"):
        ReID.load(small_weights, "cpu", engine="onnx", cache_dir=blocker / "reid")  # asked for: an error


def test_fp32_asked_for_exports_nothing_and_bad_names_are_refused(tmp_path: Path, small_weights: Path) -> None:
    for name in ("fp32", "torch"):
        reid = ReID.load(small_weights, "cpu", engine=name, cache_dir=tmp_path / "cache")
        assert reid.choice == EngineChoice("torch", "fp32", "cpu", None, "asked for")
        assert str(reid.choice) == "torch fp32 on cpu (asked for)"
    assert not (tmp_path / "cache").exists()
    assert set(ENGINES) == {"auto", "onnx", "fp32", "torch", "bf16"}
    with pytest.raises(ValueError, match="engine must be one of"):
        ReID(load_model(small_weights), engine="fast")


def test_the_library_reads_no_environment_the_cli_does(tmp_path: Path, small_weights: Path, people_folder: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_ENGINE", "fp32")
    monkeypatch.setenv("REID_CACHE_DIR", str(tmp_path / "env_cache"))
    assert ReID.load(small_weights, "cpu", cache_dir=tmp_path / "cache").choice.engine == "onnx"
    assert not (tmp_path / "env_cache").exists()
    monkeypatch.setenv("REID_WEIGHTS", str(small_weights))
    out = tmp_path / "e.safetensors"
    assert cli(["embed", str(people_folder), "--out", str(out), "--threads", "1"]) == 0  # weights, engine: env
    header = load_embeddings(out)[2]
    assert header.engine == "torch fp32" and header.weights == str(small_weights)
    monkeypatch.setenv("REID_ENGINE", "auto")
    assert cli(["embed", str(people_folder), "--out", str(out), "--threads", "1"]) == 0
    assert load_embeddings(out)[2].engine == "ONNX Runtime fp32" and (tmp_path / "env_cache").is_dir()


def bf16_on_any_cpu(self: TorchEmbedder, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
        return self.model.embed(x).float().numpy()


def test_bf16_only_when_asked_for_and_within_parity(small_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 changes the numbers: never the default, and asked for it runs only within parity on this device. Here
    the native-bf16 flag is forced on any CPU, where autocast emulates bf16: it runs, and its real parity is
    checked."""
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)
    with pytest.raises(WeightsError, match="^engine bf16: this CPU has no native bf16"):
        ReID.load(small_weights, "cpu", engine="bf16")
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(engines.TorchEmbedder, "__call__", bf16_on_any_cpu)
    monkeypatch.setattr(engines, "PARITY_COSINE", 0.9)  # bf16 rounding of a random tiny net, well within this
    reid = ReID.load(small_weights, "cpu", engine="bf16")
    assert reid.embedder.amp and (reid.choice.engine, reid.choice.dtype) == ("torch", "bf16")
    assert 0.9 <= reid.choice.parity < 1.0  # measured: bf16 rounding shows
    assert ReID.load(small_weights, "cpu", engine="bf16").choice == reid.choice  # the same figure on every load
    monkeypatch.setattr(engines, "PARITY_COSINE", 0.99999999)  # outside parity: an error, not a silent switch
    with pytest.raises(WeightsError, match=r"^engine bf16: torch bf16 on cpu differs from torch fp32 \(cosine"):
        ReID.load(small_weights, "cpu", engine="bf16")


def test_a_damaged_cached_export_is_made_again(tmp_path: Path, small_weights: Path) -> None:
    first = ReID.load(small_weights, "cpu", cache_dir=tmp_path)
    (tmp_path / f"{engines.export_key(first.weights_id)}.onnx").write_bytes(b"torn")
    again = ReID.load(small_weights, "cpu", cache_dir=tmp_path)
    assert isinstance(again.embedder, OnnxEmbedder) and again.choice == first.choice


def test_the_cache_key_covers_everything_the_graph_bakes_in(tmp_path: Path, small_weights: Path) -> None:
    """The same tensors under another normalisation, input size or last stride are another graph: each gets its
    own export, and each embeds as its own torch model does (they once shared the first one's cached graph)."""
    from dataclasses import replace

    from reid_core.model.network import create_model

    base = load_model(small_weights)
    variants = {"base": base.cfg, "mean": replace(base.cfg, mean=(0.2, 0.5, 0.8), std=(0.1, 0.3, 0.5)),
                "size": replace(base.cfg, height=96, width=48), "stride": replace(base.cfg, last_stride=2)}
    keys, x = set(), None
    for name, cfg in variants.items():
        model = create_model(cfg)
        model.load_state_dict(base.state_dict())  # the very same tensors
        reid = ReID(model.eval(), cache_dir=tmp_path)
        assert isinstance(reid.embedder, OnnxEmbedder), name
        keys.add(engines.export_key(reid.weights_id))
        x = torch.randint(0, 256, (3, 3, cfg.height, cfg.width), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(3))
        cos = (reid.embedder(x) * TorchEmbedder(reid.model)(x)).sum(1)
        assert cos.min() >= export.PARITY_COSINE, name
    assert len(keys) == len(variants) == len(list(tmp_path.glob("*.onnx")))
    assert engines.export_key("a") != engines.export_key("b")


def test_the_cache_folder_is_bounded_least_recently_used_first(tmp_path: Path, small_weights: Path) -> None:
    """Three exports into a folder with room for two: the least recently used goes, the one just used stays
    (adapting the same weights over and over once added an export each time, without end)."""
    import os

    from reid_core.model.network import create_model

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(create_model(load_model(small_weights).cfg).eval())
    ids = [engines.weights_hash(m) for m in models]
    engines.cached_export(models[0], ids[0], tmp_path)
    one = sum(p.stat().st_size for p in tmp_path.iterdir())
    engines.cached_export(models[1], ids[1], tmp_path, budget=int(2.5 * one))
    os.utime(tmp_path / f"{engines.export_key(ids[0])}.json", (1, 1))  # the first made long ago, the second later
    os.utime(tmp_path / f"{engines.export_key(ids[1])}.json", (2, 2))
    engines.cached_export(models[0], ids[0], tmp_path, budget=int(2.5 * one))  # the first used again: now newest
    engines.cached_export(models[2], ids[2], tmp_path, budget=int(2.5 * one))  # no room for three
    left = {p.stem for p in tmp_path.glob("*.onnx")}
    assert left == {engines.export_key(ids[0]), engines.export_key(ids[2])}
    assert {p.stem for p in tmp_path.glob("*.json")} == left


def test_the_suite_keeps_its_caches_out_of_the_home_folder(small_weights: Path, temporary_home: Path) -> None:
    """An export made with the default cache folder lands in the run's temporary home, never the user's: one
    run's leftovers once answered for another model in the next run."""
    from conftest import REAL_HOME

    assert not temporary_home.is_relative_to(REAL_HOME) and Path.home() == temporary_home
    reid = ReID.load(small_weights, "cpu")  # no cache_dir: the library's default
    made = temporary_home / ".cache" / "reid" / f"{engines.export_key(reid.weights_id)}.onnx"
    assert engines.default_cache_dir().is_relative_to(temporary_home) and made.exists()
