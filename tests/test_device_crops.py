"""The on-device augmentations match the CPU loader's transforms (images.train_transform), op by op."""

import torch
from torchvision.transforms.v2 import functional as F

from reid_core.device_crops import DeviceBatches, DeviceCrops, erase, erasing_boxes, flip, pad_crop


def _images(n: int = 6, h: int = 32, w: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_flip_mirrors_only_the_chosen_images():
    x = _images()
    which = torch.tensor([True, False, True, False, False, True])
    y = flip(x, which)
    for i in range(len(x)):
        assert torch.equal(y[i], F.horizontal_flip(x[i]) if which[i] else x[i])


def test_pad_crop_is_torchvisions_pad_then_crop_at_the_offsets():
    x, pad = _images(), 3
    offsets = torch.tensor([[0, 0], [6, 6], [2, 5], [6, 0], [0, 6], [3, 3]])
    y = pad_crop(x, pad, offsets)
    for i in range(len(x)):
        ref = F.crop(F.pad(x[i], [pad]), int(offsets[i, 0]), int(offsets[i, 1]), x.shape[2], x.shape[3])
        assert torch.equal(y[i], ref)
    assert torch.equal(y[5], x[5])  # the centred crop is the image itself


def test_erase_fills_the_box_and_nothing_else():
    x = _images()
    boxes = torch.tensor([[0, 0, 5, 4], [10, 3, 0, 0], [31, 15, 1, 1], [2, 2, 20, 10], [0, 0, 32, 16], [5, 1, 3, 2]])
    fill = torch.tensor([124, 116, 104], dtype=torch.uint8).view(1, 3, 1, 1)
    y = erase(x, boxes, fill)
    for i, (t, left, h, w) in enumerate(boxes.tolist()):
        ref = x[i].clone()
        ref[:, t:t + h, left:left + w] = fill[0]
        assert torch.equal(y[i], ref)


def test_erasing_boxes_fit_and_follow_torchvisions_area_and_probability():
    g = torch.Generator().manual_seed(1)
    h, w, n = 256, 128, 4000
    boxes = erasing_boxes(h, w, n, 0.5, g, torch.device("cpu"))
    erased = boxes[:, 2] > 0
    assert 0.45 < erased.float().mean() < 0.55
    b = boxes[erased]
    assert (b[:, 0] >= 0).all() and (b[:, 0] + b[:, 2] <= h).all()
    assert (b[:, 1] >= 0).all() and (b[:, 1] + b[:, 3] <= w).all()
    area = (b[:, 2] * b[:, 3]).float() / (h * w)
    assert area.min() > 0.015 and area.max() < 0.35
    assert (erasing_boxes(h, w, n, 0.0, g, torch.device("cpu"))[:, 2] == 0).all()


def test_a_batch_replays_from_its_seed_and_keeps_pids_with_images():
    x = _images(8)
    crops = DeviceCrops(x, torch.device("cpu"), fill=(0.5, 0.5, 0.5), erasing=0.5, pad=2)
    a, b, c = crops.batch([3, 1, 4], seed=7), crops.batch([3, 1, 4], seed=7), crops.batch([3, 1, 4], seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 32, 16)
    loader = DeviceBatches(crops, [[(5, 100), (2, 101)], [(7, 102), (0, 103)]], pids=[10, 11, 12, 13, 14, 15, 16, 17])
    got = list(loader)
    assert len(loader) == 2 and [p.tolist() for _, p in got] == [[15, 12], [17, 10]]
    plain = DeviceCrops(x, torch.device("cpu"), fill=(0.5, 0.5, 0.5), erasing=0.0, pad=0)
    out = plain.batch([5, 2], seed=3)
    for i, j in enumerate([5, 2]):  # without pad and erasing, each image is itself or its mirror
        assert torch.equal(out[i], x[j]) or torch.equal(out[i], F.horizontal_flip(x[j]))
