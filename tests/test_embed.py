"""The batch embedding path: uint8 decode + resize (normalised inside the model), threads side by side, order kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import person
from PIL import Image
from torchvision import transforms as T

from reid_core.data import ImageError, eval_pixels, load_image
from reid_core.datasets import Record
from reid_core.embed import TorchEmbedder, embed_records, list_images
from reid_core.model import load_model


def reference(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """PIL's bilinear resize (torchvision's PIL path), as uint8 (3, H, W): what the uint8 path replaces."""
    return T.PILToTensor()(T.Resize(size)(img))


@pytest.mark.parametrize("src", [(32, 64), (13, 40), (100, 200), (77, 300), (64, 128)])
def test_pixels_match_the_pil_transform(src: tuple[int, int]) -> None:
    img = person(3, 1, 0, size=src)
    size = (128, 64)
    want = torch.stack([reference(img, size)])
    got = eval_pixels(img, size)[None]
    assert got.shape == want.shape and got.dtype == want.dtype == torch.uint8
    levels = (got.float() - want.float()).abs()  # difference in 8-bit levels
    if src[0] <= size[1] and src[1] <= size[0]:  # upscaling: the same pixels
        assert levels.max() < 1e-3
    else:  # downscaling: PIL and torchvision round a few pixels differently
        assert levels.max() <= 2.001 and levels.mean() < 0.05


def test_embed_records_keeps_order_and_skips_bad(people_folder: Path, tiny_weights: Path) -> None:
    embedder = TorchEmbedder(load_model(tiny_weights), amp=False)
    size = (embedder.cfg.height, embedder.cfg.width)
    files = list_images(people_folder)
    records = [Record(str(p), 0, 0) for p in files]
    good = [i for i, p in enumerate(files) if p.name != "broken.jpg"]
    assert len(good) == len(files) - 1 >= 12
    want = embedder(torch.stack([reference(load_image(files[i]), size) for i in good]))
    for batch, workers in ((5, 1), (4, 3), (64, 2)):
        emb, kept = embed_records(embedder, records, batch, workers, progress=False, skip_bad=True)
        assert kept.tolist() == good
        np.testing.assert_allclose(emb, want, atol=2e-5)
    with pytest.raises(ImageError, match="broken.jpg"):
        embed_records(embedder, records, 4, 2, progress=False)


class Counting(TorchEmbedder):
    calls = 0

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        self.calls += 1
        return super().__call__(x)


def test_an_unreadable_image_stops_the_rest(people_folder: Path, tiny_weights: Path) -> None:
    """Without skip_bad the first error ends the run: the queued batches are dropped, not embedded first."""
    embedder = Counting(load_model(tiny_weights), amp=False)
    good = [Record(str(p), 0, 0) for p in list_images(people_folder) if p.name != "broken.jpg"]
    records = [Record(str(people_folder / "broken.jpg"), 0, 0)] + good * 20
    with pytest.raises(ImageError):
        embed_records(embedder, records, 2, 1, progress=False)
    assert embedder.calls <= 2 < len(records) // 2
