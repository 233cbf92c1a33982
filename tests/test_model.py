import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from reid_core.model.errors import WeightsError
from reid_core.model.network import ModelConfig, create_model, load_model, save_model


@pytest.mark.parametrize("backbone,dim", [("resnet18", 512), ("efficientnet_lite0", 1280)])
def test_shapes(backbone: str, dim: int) -> None:
    torch.manual_seed(0)
    m = create_model(ModelConfig(backbone=backbone, height=64, width=32, num_classes=7))
    x = torch.randn(4, 3, 64, 32)
    m.train()
    out = m(x)
    assert out["feat"].shape == (4, dim) and out["emb"].shape == (4, dim) and out["logits"].shape == (4, 7)
    m.eval()
    e = m.embed(x)
    assert e.shape == (4, dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    assert "logits" not in m(x)
    logit_ab, logit_ba = m.pair_logit(e[:2], e[2:]), m.pair_logit(e[2:], e[:2])
    assert logit_ab.shape == (2,) and torch.allclose(logit_ab, logit_ba)  # symmetric by construction


@pytest.mark.parametrize("backbone", ["resnet18", "tf_efficientnet_lite0", "efficientnet_lite0"])
def test_last_stride_1_gives_output_stride_16(backbone: str) -> None:
    """Last stride 1 doubles the final map for ResNets and EfficientNets alike (a 16x8 map at 256x128)."""
    for last_stride, os_ in ((1, 16), (2, 32)):
        m = create_model(ModelConfig(backbone=backbone, last_stride=last_stride)).eval()
        assert m.output_stride() == os_
        assert m.feature_map(torch.zeros(1, 3, 256, 128)).shape[2:] == (256 // os_, 128 // os_)


def test_last_stride_1_refused_where_unsupported() -> None:
    with pytest.raises(ValueError, match="not supported"):
        create_model(ModelConfig(backbone="vit_tiny_patch16_224", height=224, width=224, last_stride=1))


def test_normalisation_lives_in_the_model() -> None:
    """Raw pixels in: the model subtracts its own mean and divides by its own std (buffers from the config)."""
    cfg = ModelConfig(backbone="resnet18", height=64, width=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    m = create_model(cfg).eval()
    pixels = torch.randint(0, 256, (2, 3, 64, 32), dtype=torch.uint8)
    by_hand = (pixels.float() / 255 - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    want = m.backbone.forward_features(by_hand)
    assert torch.allclose(m.feature_map(pixels), want, atol=1e-4)
    assert torch.allclose(m.feature_map(pixels.float()), want, atol=1e-4)  # uint8 or 0..255 float alike
    assert "pixel_mean" not in m.state_dict()  # the JSON's mean/std are the one source


def test_projection_and_last_stride() -> None:
    m = create_model(ModelConfig(backbone="resnet18", height=64, width=32, embed_dim=128, last_stride=1))
    m.eval()
    assert m.embed(torch.randn(2, 3, 64, 32)).shape == (2, 128)
    fm = m.feature_map(torch.randn(1, 3, 64, 32))
    assert fm.shape[2:] == (4, 2)  # stride 16 instead of 32
    m2 = create_model(ModelConfig(backbone="resnet18", height=64, width=32, last_stride=2))
    assert m2.feature_map(torch.randn(1, 3, 64, 32)).shape[2:] == (2, 1)


def test_bnneck_bias_frozen() -> None:
    m = create_model(ModelConfig(backbone="resnet18"))
    assert not m.bnneck.bias.requires_grad and m.bnneck.weight.requires_grad


def test_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = create_model(ModelConfig(backbone="resnet18", height=64, width=32, num_classes=5)).eval()
    save_model(m, tmp_path / "m.safetensors", inference_only=True, extra={"pair_threshold": 0.42})
    cfg = json.loads((tmp_path / "m.json").read_text())
    assert cfg["backbone"] == "resnet18" and cfg["num_classes"] == 0 and cfg["extra"]["pair_threshold"] == 0.42
    m2 = load_model(tmp_path / "m.safetensors")
    x = torch.randn(3, 3, 64, 32)
    assert torch.allclose(m.embed(x), m2.embed(x), atol=1e-6)
    save_model(m, tmp_path / "h.safetensors", half=True, inference_only=True)
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * (tmp_path / "m.safetensors").stat().st_size
    half = load_model(tmp_path / "h.safetensors")
    assert torch.nn.functional.cosine_similarity(m.embed(x), half.embed(x)).min() > 0.999
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def test_bad_weights_give_one_line_errors(tmp_path: Path) -> None:
    m = create_model(ModelConfig(backbone="resnet18", height=64, width=32))
    save_model(m, tmp_path / "m.safetensors")
    cfg, data = (tmp_path / "m.json").read_text(), (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "torn.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "torn.json").write_text(cfg)
    (tmp_path / "gone.json").write_text(cfg)
    (tmp_path / "nojson.safetensors").write_bytes(data)
    (tmp_path / "m.pt").write_bytes(b"\x80\x04junk")  # m.json beside it: only the pickle refusal can stop it
    other = json.loads(cfg) | {"backbone": "resnet34"}
    (tmp_path / "other.safetensors").write_bytes(data)
    (tmp_path / "other.json").write_text(json.dumps(other))
    cases = {"torn": "not a valid safetensors", "gone": "not found", "nojson": "missing nojson.json",
             "other": "another backbone"}
    for name, pattern in cases.items():
        with pytest.raises(WeightsError, match=pattern) as e:
            load_model(tmp_path / f"{name}.safetensors")
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(WeightsError, match="pickle"):
        load_model(tmp_path / "m.pt")


def no_network(monkeypatch: pytest.MonkeyPatch, calls: list[float]) -> None:
    """urlopen as on a machine without a network: each call waits for its timeout, then fails."""
    def refuse(request: Any, timeout: float) -> None:
        calls.append(timeout)
        raise urllib.error.URLError("timed out")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", "/nonexistent/hub-cache")


def test_pretrained_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub: one line at once (HF_HUB_OFFLINE, or a 2 s check), never timm's minute of "Retrying" lines."""
    calls: list[float] = []
    no_network(monkeypatch, calls)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="--init-weights") as e:
        create_model(ModelConfig(backbone="resnet18"), pretrained=True)
    assert "HF_HUB_OFFLINE is set" in str(e.value) and calls == []  # known offline: not even the check runs
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # fast by construction, not by a stopwatch: one check with a 2 s timeout, and timm (whose downloads retry
    # for a minute) is never asked to build a pretrained network
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm asked for the network"))
    with pytest.raises(WeightsError) as e:
        create_model(ModelConfig(backbone="resnet18"), pretrained=True)
    assert calls == [2.0]
    assert "\n" not in str(e.value) and "https://huggingface.co did not answer within 2 s" in str(e.value)
    assert "--no-pretrained" in str(e.value)


def test_pretrained_from_the_hubs_cache_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights the hub's cache already holds load offline, as timm itself would load them."""
    calls: list[float] = []
    no_network(monkeypatch, calls)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    torch.manual_seed(3)
    imagenet = timm.create_model("resnet18").state_dict()
    save_file(imagenet, repo / "snapshots" / "abc" / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    m = create_model(ModelConfig(backbone="resnet18", height=64, width=32), pretrained=True)
    assert calls == []
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, imagenet[k]), k


def test_fine_tune_from_a_reid_model(tmp_path: Path) -> None:
    """--init-weights with one of our re-id models: everything but the ID classifier (another set of
    identities) is taken; a model of another backbone is refused in one line."""
    torch.manual_seed(0)
    src = create_model(ModelConfig(backbone="resnet18", height=64, width=32, num_classes=5))
    torch.nn.init.normal_(src.bnneck.weight)
    save_model(src, tmp_path / "m.safetensors")
    m = create_model(ModelConfig(backbone="resnet18", height=64, width=32, num_classes=9),
                     init_weights=str(tmp_path / "m.safetensors"))
    for k, v in src.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(m.state_dict()[k], v), k
    assert m.classifier.weight.shape == (9, 512)
    with pytest.raises(WeightsError, match="does not fit backbone resnet34"):
        create_model(ModelConfig(backbone="resnet34", height=64, width=32),
                     init_weights=str(tmp_path / "m.safetensors"))


def test_the_weights_lookup_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """$REID_WEIGHTS is the entry points' to read (cli.main, app.Settings.resolve), then passed in."""
    from reid_core.model.weights import DEFAULT_WEIGHTS, resolve_weights

    monkeypatch.setenv("REID_WEIGHTS", "elsewhere.safetensors")
    assert resolve_weights() == DEFAULT_WEIGHTS
    assert resolve_weights("mine.safetensors") == Path("mine.safetensors")
