"""Atomic file writes: write a temp file beside the target, then rename over it.

A process killed mid-write leaves the old file or the new one, never a torn one; this is what makes
checkpoints, weights, galleries and JSON safe to write while someone may kill the process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Delete temp files of `path` left by writers that were killed (kill -9 skips the cleanup below):
    a checkpoint's is as big as the checkpoint. Live writers' temp files are left alone."""
    for old in path.parent.glob(f".{path.name}.tmp*"):
        pid = old.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            old.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` then rename tmp over `path`; the temp file is removed if writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None,
                     ) -> None:
    """safetensors.torch.save_file, atomically."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))
