"""`kill -9` a real `python train.py` at several moments (one of them in the middle of writing a checkpoint),
`--resume` it each time, and the final weights equal an uninterrupted run's with the same seed.

Bitwise equality needs one CPU thread: with several, torch's parallel reductions differ by ~1e-5 between any
two runs, resumed or not. So every run here uses one thread (also the fastest on a busy 2-core machine)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from reid_core.figures import plots
from reid_core.train.config import TrainConfig
from reid_core.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3


def config(data: Path, out: Path, name: str) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), name=name, backbone="resnet18", pretrained=False, height=64,
                       width=32, p=4, k=4, epochs=EPOCHS, lr=1e-3, warmup_epochs=1, milestones=[2], erasing=0.5,
                       workers=0, amp=False, device="cpu", max_steps_per_epoch=2, seed=3)


def command(cfg: TrainConfig, resume: bool) -> list[str]:
    return [sys.executable, "train.py", "--data", cfg.data, "--out", cfg.out, "--name", cfg.name, "--backbone",
            cfg.backbone, "--no-pretrained", "--height", str(cfg.height), "--width", str(cfg.width), "--p",
            str(cfg.p), "--k", str(cfg.k), "--epochs", str(cfg.epochs), "--lr", str(cfg.lr), "--warmup-epochs",
            str(cfg.warmup_epochs), "--milestones", *map(str, cfg.milestones), "--erasing", str(cfg.erasing),
            "--workers", "0", "--no-amp", "--device", "cpu", "--max-steps-per-epoch", str(cfg.max_steps_per_epoch),
            "--seed", str(cfg.seed)] + (["--resume"] if resume else [])


# Run as `python -c`: train.py whose second checkpoint write stops half-way with a SIGKILL, a torn write on demand
TORN_WRITE = """
import os, signal, sys, runpy
import reid_core.base.files as files
from safetensors.torch import save
calls = []
def torn(tensors, path, metadata=None):
    calls.append(path)
    if len(calls) < 2:
        return save_file(tensors, path, metadata=metadata)
    data = save(tensors, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
save_file, files.save_file = files.save_file, torn
sys.argv = sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint holds; reading every tensor proves the file is whole."""
    load_file(str(path))
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["epoch"])


def start(cfg: TrainConfig, resume: bool = False, torn: bool = False) -> subprocess.Popen:
    cmd = command(cfg, resume)
    if torn:
        cmd = [sys.executable, "-c", TORN_WRITE, *cmd[1:]]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err.decode()[-2000:]


@pytest.mark.slow
def test_kill_9_and_resume_reach_the_same_weights(market_big: Path, tmp_path: Path) -> None:
    reference = config(market_big, tmp_path, "unbroken")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(reference).fit()
    finally:
        torch.set_num_threads(threads)
    cfg = replace(reference, name="killed")
    ckpt = cfg.run_dir / "last.safetensors"

    # 1. killed in the middle of writing the second checkpoint: the first one is still whole
    rc, err = finish(start(cfg, torn=True))
    assert rc == -signal.SIGKILL, err
    temps = list(cfg.run_dir.glob(".last.safetensors.tmp*"))
    assert len(temps) == 1 and 0 < temps[0].stat().st_size < ckpt.stat().st_size  # the torn half-file
    assert checkpoint_epoch(ckpt) == 0

    # 2. resumed, then killed at a random moment after its first new checkpoint (mid-epoch, mid-write or later)
    proc = start(cfg, resume=True)
    while proc.poll() is None and checkpoint_epoch_or_none(ckpt) == 0:
        time.sleep(0.01)
    time.sleep(random.Random(0).uniform(0, 1.5))
    proc.send_signal(signal.SIGKILL)
    rc, err = finish(proc)
    assert rc in (0, -signal.SIGKILL), err
    assert checkpoint_epoch(ckpt) >= 1

    # 3. resumed to the end, after a kill in the middle of a log row: the torn row does not survive
    with open(cfg.run_dir / "log.csv", "a") as f:
        f.write(f"{EPOCHS},99,0.001,4.2")
    rc, err = finish(start(cfg, resume=True))
    assert rc == 0, err
    assert list(cfg.run_dir.glob(".*.tmp*")) == []  # the killed writers' temp files were cleared

    a = load_file(str(reference.run_dir / "model.safetensors"))
    b = load_file(str(cfg.run_dir / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 100
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    assert all(torch.equal(a[k], b[k]) for k in a), {k: d for k, d in diff.items() if d}
    rows = plots.read_log(cfg.run_dir / "log.csv")  # one whole row per epoch: none lost, none twice
    assert rows["epoch"].tolist() == list(range(1, EPOCHS + 1)) and rows["loss"].notna().all()


def checkpoint_epoch_or_none(path: Path) -> int | None:
    """While a run may be writing: the checkpoint's epoch, or None when there is none (yet)."""
    return checkpoint_epoch(path) if path.exists() else None
