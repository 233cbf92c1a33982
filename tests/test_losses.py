"""Losses against hand computations."""

import pytest
import torch

from reid_core.train import losses


def test_batch_hard_triplet_by_hand() -> None:
    # ids 0,0,1,1 on a line: anchor 0 at 0.0 has its positive at 1.0 and nearest negative at 1.5
    feat = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.5, 0.0], [4.0, 0.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # per anchor max(d_ap - d_an + .3, 0): (1-1.5+.3) -> 0, (1-.5+.3) = .8, (2.5-.5+.3) = 2.3, (2.5-3+.3) -> 0
    assert float(losses.triplet_loss(feat, pids, 0.3)) == pytest.approx((0 + 0.8 + 2.3 + 0) / 4)


def test_normalised_triplet_ignores_feature_scale() -> None:
    torch.manual_seed(0)
    feat, pids = torch.randn(16, 8), torch.arange(4).repeat_interleave(4)
    raw, raw10 = losses.triplet_loss(feat, pids), losses.triplet_loss(10 * feat, pids)
    unit, unit10 = losses.triplet_loss(feat, pids, normalize=True), losses.triplet_loss(10 * feat, pids, normalize=True)
    assert float(unit10) == pytest.approx(float(unit), rel=1e-5) and float(raw10) > 5 * float(raw)
    # and it is the raw loss of the unit vectors
    unit_feat = torch.nn.functional.normalize(feat, dim=1)
    assert float(unit) == pytest.approx(float(losses.triplet_loss(unit_feat, pids)), rel=1e-6)
