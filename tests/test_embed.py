"""The batch embedding path: uint8 decode + resize (normalised inside the model), threads side by side, order kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import person
from PIL import Image
from torchvision import transforms as T

from reid_core.data.datasets import Record
from reid_core.data.images import ImageError, eval_pixels, load_image
from reid_core.embed import TorchEmbedder, embed_records, list_images
from reid_core.model.network import load_model


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
    embedder = TorchEmbedder(load_model(tiny_weights))
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
    embedder = Counting(load_model(tiny_weights))
    good = [Record(str(p), 0, 0) for p in list_images(people_folder) if p.name != "broken.jpg"]
    records = [Record(str(people_folder / "broken.jpg"), 0, 0)] + good * 20
    with pytest.raises(ImageError):
        embed_records(embedder, records, 2, 1, progress=False)
    assert embedder.calls <= 2 < len(records) // 2


def test_flip_test_is_the_mean_of_the_image_and_its_mirror(people_folder: Path, tiny_weights: Path) -> None:
    """Flip on any engine (the embed CLI's --flip) equals the mean computed by hand and evaluation's two passes
    (plain + mirrored), and differs from the plain embedding (the synthetic people are not mirror-symmetric)."""
    from reid_core.embed import Flipped, Mirrored, flip_average

    model = load_model(tiny_weights)
    x = torch.stack([eval_pixels(load_image(p), (64, 32)) for p in sorted(people_folder.rglob("*.png"))[:6]])
    plain = TorchEmbedder(model)(x)
    mirror = Mirrored(TorchEmbedder(model))(x)
    flipped = Flipped(TorchEmbedder(model))(x)
    np.testing.assert_allclose(flipped, flip_average(plain, mirror), atol=1e-5)
    by_hand = torch.nn.functional.normalize(model.embed(x) + model.embed(x.flip(3)), dim=1)
    np.testing.assert_allclose(flipped, by_hand.numpy(), atol=1e-5)
    np.testing.assert_allclose(mirror, TorchEmbedder(model)(x.flip(3)), atol=1e-6)
    assert (flipped * plain).sum(1).min() < 0.9999


def test_evaluate_reports_flip_and_rerank_beside_and_reuses_embeddings(market: Path, tiny_weights: Path,
                                                                      tmp_path: Path) -> None:
    """Headline figures stay the plain ones; flip and re-ranked figures come beside them, and a kept
    embeddings file re-scores without embedding again (a model that would give other embeddings is ignored)."""
    from reid_core.data.datasets import load_dataset
    from reid_core.evaluation.evaluate import EvalOptions, evaluate

    data = load_dataset(market)
    model = load_model(tiny_weights)
    cache = tmp_path / "feats.safetensors"
    quiet, kept = EvalOptions(progress=False), EvalOptions(progress=False, features=cache)
    first = evaluate(model, data.query, data.gallery, EvalOptions(progress=False, flip=True, features=cache)).figures()
    plain = evaluate(model, data.query, data.gallery, quiet).figures()
    assert {k: first[k] for k in ("rank1", "mAP")} == {k: plain[k] for k in ("rank1", "mAP")}
    assert "flip_mAP" in first and "rerank_mAP" not in first

    class Refusing(TorchEmbedder):  # the same weights and engine, but any embedding fails: the file is reused
        def __call__(self, x: torch.Tensor) -> np.ndarray:
            raise AssertionError("embedded again")

    again = evaluate(model, data.query, data.gallery, EvalOptions(progress=False, flip=True, rerank=True,
                                                                  features=cache), Refusing(model)).figures()
    assert again["mAP"] == first["mAP"] and again["flip_mAP"] == first["flip_mAP"]
    assert {"rerank_mAP", "flip_rerank_mAP"} <= set(again)
    with pytest.raises(ValueError, match="another query/gallery"):
        evaluate(model, data.query[:2], data.gallery, kept)
    with pytest.raises(ValueError, match="made by other weights or another engine .*torch fp32, not .*torch bf16"):
        evaluate(model, data.query, data.gallery, kept, TorchEmbedder(model, True))
    torch.nn.init.normal_(model.bnneck.weight)  # other weights: the kept embeddings are refused, not scored
    with pytest.raises(ValueError, match="made by other weights or another engine"):
        evaluate(model, data.query, data.gallery, kept)
    cache.write_bytes(cache.read_bytes()[:100])  # a torn file: one line, not a traceback
    with pytest.raises(ValueError, match="not an embeddings file"):
        evaluate(model, data.query, data.gallery, kept)


def test_one_embeddings_header_and_one_check(tmp_path: Path) -> None:
    """The embeddings file keeps what made it; check_embeddings takes the same weights and flip setting only,
    and says which of the two differs in one line."""
    from reid_core.embed import EmbeddingsHeader, check_embeddings, load_embeddings, save_embeddings

    path = tmp_path / "e.safetensors"
    header = EmbeddingsHeader("abc+flip", "ONNX Runtime fp32", "w.safetensors")
    save_embeddings(path, np.eye(2, dtype=np.float32), ["a.png", "b.png"], header)
    emb, paths, read = load_embeddings(path)
    assert (emb.shape, paths, read) == ((2, 2), ["a.png", "b.png"], header)
    check_embeddings(read, "abc+flip", path)  # the same weights and flip: taken
    check_embeddings(None, "anything", path)  # no header (an older file): taken as it is
    with pytest.raises(ValueError, match=r"other test-time flip setting \(--no-flip"):
        check_embeddings(read, "abc", path)
    with pytest.raises(ValueError, match=r"e.safetensors: embedded by other weights \(w.safetensors\)$"):
        check_embeddings(read, "xyz+flip", path)
