"""Rung 1, AdaBN: every BatchNorm layer's statistics re-estimated on target crops by a forward pass (no labels, no
gradient, seconds on a CPU)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from ..model.network import SiameseReID
from .config import BN_LAYERS


def bn_modules(model: SiameseReID, layers: str = "all") -> list[nn.modules.batchnorm._BatchNorm]:
    if layers not in BN_LAYERS:
        raise ValueError(f"bn_layers must be one of {BN_LAYERS}, not {layers!r}")
    parts = {"all": [model], "backbone": [model.backbone], "neck": [model.bnneck]}[layers]
    return [m for part in parts for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_bn(model: SiameseReID, batches: Iterable[torch.Tensor], layers: str = "all",
             turn: Callable[[], AbstractContextManager[Any]] = nullcontext) -> int:
    """Re-estimate the chosen BatchNorm layers' running mean and variance on `batches` (uint8 pixels of target
    crops): each layer's statistics restart and become the cumulative average over the batches (AdaBN). The
    rest of the model stays in eval mode; the model is left in eval mode. Each batch's pass waits for a `turn`
    (the app's fair lane). Returns the images seen."""
    bns = bn_modules(model, layers)
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    seen, carry = 0, None
    try:
        for x in batches:
            if carry is not None:  # a lone image cannot give a batch's statistics: it joins the next batch
                x, carry = torch.cat([carry, x]), None
            if len(x) < 2:
                carry = x
                continue
            with turn():
                model(x.to(model.pixel_mean.device).contiguous(memory_format=torch.channels_last))
            seen += len(x)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.eval()
    if not seen:
        raise ValueError("BatchNorm adaptation needs at least 2 readable target crops")
    return seen
