"""Synthetic re-id data: each identity is a shirt/trousers colour pair, each camera a lighting shift.

Small enough to train on in seconds, structured enough that a model can learn it.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# no engine is forced: the tests run the production default ("auto", engines.py), whose ONNX export of each
# tiny test model is made once per run and cached under its key, in the run's own temporary home (below)

REAL_HOME = Path.home()
HOME_CACHES = {"HOME": "", "XDG_CACHE_HOME": ".cache", "HF_HOME": ".cache/huggingface", "TORCH_HOME": ".cache/torch",
               "REID_CACHE_DIR": ".cache/reid", "MPLCONFIGDIR": ".config/matplotlib"}


def pytest_configure(config: pytest.Config) -> None:
    """The run's own empty home folder, before any test module is imported (huggingface_hub, timm and torch read
    their cache paths at import): no test reads what an earlier run, or the user, left in the real home folder
    (a stale ONNX export once answered for another model), and none writes there. Child processes inherit it."""
    home = Path(tempfile.mkdtemp(prefix="reid-tests-home-"))
    config.stash[HOME_KEY] = home
    for var, sub in HOME_CACHES.items():
        os.environ[var] = str(home / sub)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(HOME_KEY, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


HOME_KEY = pytest.StashKey[Path]()


@pytest.fixture(autouse=True)
def temporary_home(request: pytest.FixtureRequest) -> Path:
    """Every test runs with HOME and every cache path the code or its libraries use ($REID_CACHE_DIR, the
    ONNX exports; the hub's, torch's) in the run's temporary home; a test that moved them fails here."""
    home = request.config.stash[HOME_KEY]
    for var, sub in HOME_CACHES.items():
        assert os.environ.get(var) == str(home / sub), f"${var} points outside the run's temporary home"
    return home


# --- slow tests (> ~10 s: real data, a browser, other processes, a training run) carry @pytest.mark.slow on the
# test itself; `pytest -m "not slow"` is the quick run (BENCHMARKS.md section 20 says how long each run takes)


def person(pid: int, cam: int, k: int, size: tuple[int, int] = (32, 64)) -> Image.Image:
    """A synthetic pedestrian crop: colours fixed by pid, lighting by camera, noise by k."""
    rng = np.random.default_rng([pid, cam, k])
    colours = np.random.default_rng(pid + 1000).integers(0, 256, (3, 3))
    w, h = size
    img = np.empty((h, w, 3), np.float32)
    img[: h // 5] = colours[0]  # head/hair
    img[h // 5: h // 2] = colours[1]  # shirt
    img[h // 2:] = colours[2]  # trousers
    img = img * (0.8 + 0.1 * cam) + rng.normal(0, 12, img.shape)
    shift = int(rng.integers(-2, 3))
    return Image.fromarray(np.roll(img, shift, axis=1).clip(0, 255).astype(np.uint8))


def make_market(root: Path, n_train: int = 8, n_test: int = 6, per_cam: int = 2, cams: int = 3) -> Path:
    """A Market-1501-style tree: train ids 1..n_train, test ids after them, a junk and a distractor."""
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for pid in range(1, n_train + 1):
        for c in range(cams):
            for k in range(per_cam):
                person(pid, c, k).save(root / "bounding_box_train" / f"{pid:04d}_c{c + 1}s1_{k:06d}_00.jpg")
    for pid in range(n_train + 1, n_train + n_test + 1):
        person(pid, 0, 99).save(root / "query" / f"{pid:04d}_c1s1_000099_00.jpg")
        for c in range(cams):
            for k in range(per_cam):
                person(pid, c, k).save(root / "bounding_box_test" / f"{pid:04d}_c{c + 1}s1_{k:06d}_00.jpg")
    person(900, 1, 0).save(root / "bounding_box_test" / "-1_c2s1_000001_00.jpg")
    person(901, 1, 0).save(root / "bounding_box_test" / "0000_c2s1_000001_00.jpg")
    return root


@pytest.fixture(scope="session")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_market(tmp_path_factory.mktemp("market") / "market1501")


@pytest.fixture(scope="session")
def market_big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough identities for PK batches of 4 x 4."""
    return make_market(tmp_path_factory.mktemp("market_big") / "market1501", n_train=12, n_test=6, per_cam=2)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised resnet18 at 64x32 with a 32-d embedding, saved as inference weights."""
    import torch

    from reid_core.model.network import ModelConfig, create_model, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(create_model(ModelConfig(backbone="resnet18", height=64, width=32, embed_dim=32)), path,
               inference_only=True)
    return path


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's `test_resnet` (0.37 M parameters) at 64x32, 32-d, for tests of the rules around a network (engine
    keys, the export cache's bound, parity records, fallbacks, adaptation's bookkeeping), which hold for any
    network: its ONNX exports took 3-5x less time than resnet18's (BENCHMARKS.md section 20.1); test_export.py
    keeps resnet18's parity."""
    return make_tiny_weights(tmp_path_factory.mktemp("small") / "small.safetensors", 32, backbone="test_resnet")


@pytest.fixture(scope="session")
def people_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nested folders of synthetic crops (4 ids x 3 cameras) plus one corrupt .jpg and one non-image file."""
    root = tmp_path_factory.mktemp("people")
    for pid in range(1, 5):
        sub = root / f"cam_group{pid % 2}"
        sub.mkdir(exist_ok=True)
        for cam in range(3):
            person(pid, cam, 0).save(sub / f"{pid:04d}_c{cam + 1}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


# --- shared helpers (tests import them from here, never from each other) ----------------------------------
PAIR_THRESHOLD = 0.5


def make_tiny_weights(path: Path, embed_dim: int = 0, seed: int = 0, backbone: str = "resnet18") -> Path:
    """A small random model: random features, and create_model's pair head, which starts as an increasing
    function of cosine similarity, so "itself beats a different person" holds for the probability too.
    `backbone="test_resnet"` (timm's 0.37 M-parameter ResNet) where only the rules around the network are
    checked: 30x fewer parameters, so its steps and ONNX exports are several times cheaper."""
    import torch

    from reid_core.model.network import ModelConfig, create_model, save_model

    torch.manual_seed(seed)
    model = create_model(ModelConfig(backbone=backbone, height=64, width=32, embed_dim=embed_dim))
    save_model(model, path, inference_only=True, extra={"pair_threshold": PAIR_THRESHOLD, "train_data": "synthetic",
                                                        "metrics": {"rank1": 0.5, "mAP": 0.25}})
    return path


def write_people(folder: Path, pids: range = range(1, 4), cams: range = range(1, 3)) -> list[Path]:
    """Synthetic Market-style crops: `PPPP_cC..._00.png`, one per (pid, camera)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for pid in pids:
        for cam in cams:
            p = folder / f"{pid:04d}_c{cam}s1_{cam:06d}_00.png"
            person(pid, cam, 0).resize((64, 128)).save(p)
            paths.append(p)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(settings: Any) -> Iterator[tuple[str, Any]]:
    """Run the app (app.Settings) on a free local port in a background thread for the duration of a fixture."""
    import app

    demo = app.build_demo(settings)
    url = app.launch(demo, "127.0.0.1", free_port(), block=False)
    try:
        yield url, demo
    finally:
        demo.close()


def rank1_at(epoch: int) -> float:
    return round(1 - 0.85**epoch, 4)


def write_log(path: Path, epochs: int = 6, eval_every: int = 3) -> Path:
    """A log.csv as the trainer writes it: metric cells empty on epochs without evaluation."""
    from reid_core.train.trainer import LOG_COLUMNS

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        w.writeheader()
        for e in range(1, epochs + 1):
            row = {"epoch": e, "step": 10 * e, "lr": 3.5e-4 * min(1, e / 3), "loss": 5 / e, "loss_id": 3 / e,
                   "loss_tri": 1.5 / e, "loss_pair": 0.5 / e, "train_acc": 1 - 1 / (e + 1),
                   "train_pair_acc": 1 - 0.5 / (e + 1), "images_per_s": 100.0, "seconds": 10.0}
            if e % eval_every == 0:
                row |= {"rank1": rank1_at(e), "rank5": min(1.0, 1.2 * rank1_at(e)), "mAP": 0.8 * rank1_at(e)}
            w.writerow(row)
    return path


BACKGROUND = 90  # the synthetic clips' grey floor


def make_clip(path: Path, pid: int = 1, frames: int = 16, size: tuple[int, int] = (160, 120), fps: float = 10.0,
              ) -> Path:
    """A short mp4 of one synthetic person (`person(pid, 1, 0)`, 32 x 64) walking right across a grey floor."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    body = np.asarray(person(pid, 1, 0))[:, :, ::-1]  # BGR
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), BACKGROUND, np.uint8)
        x = 10 + 4 * i
        frame[30:94, x:x + 32] = body
        writer.write(frame)
    writer.release()
    return path


def box_detector(rgb: np.ndarray) -> np.ndarray:
    """A detector for make_clip's frames: the box of everything off the grey floor (one person), score 0.9."""
    ys, xs = np.nonzero(np.abs(rgb.astype(np.int16) - BACKGROUND).max(axis=2) > 40)
    if len(xs) < 50:
        return np.zeros((0, 5), np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9]], np.float32)
