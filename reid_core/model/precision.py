"""Which number format to compute in: bf16 autocast only where the hardware does bf16 natively."""

from __future__ import annotations

import contextlib

import torch


def cpu_has_bf16() -> bool:
    """Native bf16 (AVX512-BF16 or AMX). Without it bf16 autocast is emulated, several times slower than
    fp32 (BENCHMARKS §3)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPUs with native bf16 and on Ampere+ GPUs, fp16 on older GPUs; else a no-op."""
    if not enabled or (device.type == "cpu" and not cpu_has_bf16()):
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16)
