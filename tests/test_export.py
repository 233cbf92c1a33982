"""ONNX export: onnxruntime must give the torch embeddings (cosine >= 0.999 per image) at any batch size."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from reid_core import export  # noqa: E402
from reid_core.api import ReID  # noqa: E402
from reid_core.cli import main as cli  # noqa: E402
from reid_core.data.datasets import Record  # noqa: E402
from reid_core.embed import (  # noqa: E402
    Mirrored,
    OnnxEmbedder,
    TorchEmbedder,
    embed_records,
    flip_average,
    load_embeddings,
)
from reid_core.evaluation.evaluate import extract  # noqa: E402
from reid_core.export import (  # noqa: E402
    PARITY_COSINE,
    ParityError,
    export_onnx,
    parity,
    parity_batch,
)
from reid_core.model.errors import WeightsError
from reid_core.model.network import ModelConfig, create_model, load_model, save_model


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert cli(["export", "--weights", str(tiny_weights), "--out", str(out)]) == 0
    return out


def test_onnx_parity(onnx_file: Path, tiny_weights: Path) -> None:
    model = load_model(tiny_weights)
    ort = OnnxEmbedder(onnx_file)
    assert (ort.cfg.height, ort.cfg.width, ort.dim) == (64, 32, 32)  # the config travels inside the file
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randint(0, 256, (batch, 3, 64, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(batch))
        cos = parity(model, ort, x)
        assert cos.shape == (batch,) and cos.min() >= PARITY_COSINE
    other = torch.randint(0, 256, (4, 3, 64, 32), dtype=torch.uint8)
    assert parity(model, ort, other).min() >= PARITY_COSINE
    assert np.abs(ort(other) - ort(other.flip(0))[::-1]).max() < 1e-5  # per-image, not per-batch


@pytest.mark.slow
def test_onnx_engine_in_embed_cli(tmp_path: Path, tiny_weights: Path, people_folder: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("REID_CACHE_DIR", str(tmp_path / "cache"))
    out = {}
    for engine in ("torch", "onnx"):
        path = tmp_path / f"{engine}.safetensors"
        assert cli(["embed", str(people_folder), "--out", str(path), "--weights", str(tiny_weights), "--engine",
                    engine, "--threads", "2", "--batch-size", "5"]) == 0
        out[engine] = load_embeddings(path)
    assert "ONNX Runtime fp32" in capsys.readouterr().out
    assert out["torch"][1] == out["onnx"][1] and len(out["onnx"][1]) == 12
    assert (out["torch"][0] * out["onnx"][0]).sum(1).min() >= PARITY_COSINE


def test_export_checks_parity_itself_and_keeps_no_file_that_fails(tmp_path: Path, tiny_weights: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    model = load_model(tiny_weights)
    cosine = export_onnx(model, tmp_path / "m.onnx")  # the least cosine over the seeded parity batch
    again = parity(model, OnnxEmbedder(tmp_path / "m.onnx"), parity_batch(model.cfg))
    assert cosine == pytest.approx(float(again.min()))
    assert PARITY_COSINE <= cosine <= 1 + 1e-6
    monkeypatch.setattr(export, "PARITY_COSINE", 1.01)  # no export can pass
    with pytest.raises(ParityError, match=r"^the ONNX export differs from torch fp32 \(cosine") as e:
        export_onnx(model, tmp_path / "off.onnx")
    assert e.value.cosine == pytest.approx(cosine) and list(tmp_path.iterdir()) == [tmp_path / "m.onnx"]
    assert cli(["export", "--weights", str(tiny_weights), "--out", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ONNX export differs from torch fp32") and err.count("\n") == 1
    assert not (tmp_path / "o.onnx").exists()


def test_export_leaves_the_model_as_it_was(tmp_path: Path, tiny_weights: Path) -> None:
    """The exporter restores the training flag it found on the module it was given: the model must come back in
    eval mode, embedding as before (it came back in training mode once, with BatchNorm on batch statistics)."""
    model = load_model(tiny_weights)
    x = torch.randint(0, 256, (8, 3, 64, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    before = TorchEmbedder(model)(x)
    export_onnx(model, tmp_path / "m.onnx")
    assert not any(m.training for m in model.modules())
    np.testing.assert_allclose(TorchEmbedder(model)(x), before, atol=1e-6)


def test_onnx_calls_take_the_threads_of_their_caller(onnx_file: Path) -> None:
    """One session per thread count: a call from a thread with a 1-thread share runs on 1 thread."""
    ort = OnnxEmbedder(onnx_file)
    x = torch.randint(0, 256, (3, 3, 64, 32), dtype=torch.uint8)
    want = ort(x)
    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        got = pool.submit(ort, x).result()
    assert 1 in ort.sessions and torch.get_num_threads() in ort.sessions
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bad_onnx_files(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a loadable ONNX model"):
        OnnxEmbedder(bad)
    with pytest.raises(WeightsError, match="not a loadable ONNX model"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    assert cli(["export", "--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o.onnx")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "o.onnx").exists()


def test_onnx_asked_for_but_unavailable_is_one_line(tmp_path: Path, tiny_weights: Path, people_folder: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
                                                    ) -> None:
    (tmp_path / "file").write_text("a file where the cache folder would go")
    monkeypatch.setenv("REID_CACHE_DIR", str(tmp_path / "file" / "reid"))
    out = tmp_path / "o.safetensors"
    assert cli(["embed", str(people_folder), "--out", str(out), "--weights", str(tiny_weights), "--engine",
                "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: engine onnx: ONNX Runtime unavailable: ") and err.count("\n") == 1
    assert not out.exists()


def test_one_image_one_embedding_through_api_onnx_and_evaluation(tmp_path: Path, people_folder: Path) -> None:
    """Normalisation is inside the model, so the API, the ONNX graph and the evaluation path cannot disagree,
    even with an unusual mean/std (a path that normalised on its own, or forgot to, would differ)."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", height=64, width=32, embed_dim=32, mean=(0.2, 0.5, 0.8), std=(0.1, 0.3, 0.5))
    weights = tmp_path / "odd.safetensors"
    save_model(create_model(cfg), weights, inference_only=True)
    model = load_model(weights)
    export_onnx(model, tmp_path / "odd.onnx")
    image = sorted(people_folder.rglob("*.png"))[0]
    api = ReID.load(weights, device="cpu", flip=False).embed(str(image))[0]
    onnx = embed_records(OnnxEmbedder(tmp_path / "odd.onnx"), [Record(str(image), 0, 0)], progress=False)[0][0]
    evaluation = extract(TorchEmbedder(model), [Record(str(image), 0, 0)], progress=False)[0]
    assert float(api @ onnx) > 0.9999 and float(api @ evaluation) > 0.9999
    assert np.abs(api - evaluation).max() < 1e-5
    # the API's default, test-time flip, is evaluation's flip figure: the mean with the mirror image's embedding
    mirror = extract(Mirrored(TorchEmbedder(model)), [Record(str(image), 0, 0)], progress=False)
    flipped = ReID.load(weights, device="cpu").embed(str(image))
    np.testing.assert_allclose(flipped, flip_average(evaluation[None], mirror), atol=1e-5)
    assert float(flipped[0] @ api) < 0.99999
    # the same graph without the model's normalisation gives another embedding: the check can fail
    other = ModelConfig(**{**cfg.__dict__, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
    unnormalised = create_model(other)
    unnormalised.load_state_dict(model.state_dict())
    moved = extract(TorchEmbedder(unnormalised.eval()), [Record(str(image), 0, 0)], progress=False)[0]
    assert float(api @ moved) < 0.999
