"""Synthetic re-id data: each identity is a shirt/trousers colour pair, each camera a lighting shift.

Small enough to train on in seconds, structured enough that a model can learn it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


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

    from reid_core.model import ModelConfig, create_model, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(create_model(ModelConfig(backbone="resnet18", height=64, width=32, embed_dim=32)), path,
               inference_only=True)
    return path


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
