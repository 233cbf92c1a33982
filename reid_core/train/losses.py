"""Losses: pair BCE (the seed's Siamese objective) and the Bag-of-Tricks pair, ID + batch-hard triplet."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def id_loss(logits: torch.Tensor, pids: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    return F.cross_entropy(logits.float(), pids, label_smoothing=smoothing)


def pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances, clamped so the sqrt's gradient is finite on the diagonal."""
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.t()
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_mining(feat: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each anchor: distance and index of its farthest positive and nearest negative (Hermans et al.)."""
    dist = pairwise_distance(feat.float())
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=feat.device)
    pos = dist.masked_fill(~same | eye, -1.0)
    neg = dist.masked_fill(same, float("inf"))
    d_ap, i_ap = pos.max(1)
    d_an, i_an = neg.min(1)
    return d_ap, i_ap, d_an, i_an


def triplet_loss(feat: torch.Tensor, pids: torch.Tensor, margin: float = 0.3, normalize: bool = False) -> torch.Tensor:
    """Batch-hard triplet with a margin; anchors without a positive or a negative in the batch are skipped.

    `normalize` measures distances between unit vectors, so the margin means the same for every backbone;
    on raw features it is in the backbone's own units (BENCHMARKS.md section 1: on an ImageNet Lite0 the
    raw form held training back)."""
    if normalize:
        feat = F.normalize(feat.float(), dim=1)
    d_ap, _, d_an, _ = batch_hard_mining(feat, pids)
    ok = (d_ap >= 0) & torch.isfinite(d_an)
    if not ok.any():
        return feat.sum() * 0
    return F.relu(d_ap[ok] - d_an[ok] + margin).mean()


def in_batch_pairs(feat: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balanced pairs from a PK batch for the pair head: each anchor with its hardest and a random positive,
    and its hardest and a random negative. Hard pairs teach the boundary; random ones match the pairs users
    bring, so the probability stays calibrated for them."""
    d_ap, i_ap, d_an, i_an = batch_hard_mining(feat.detach(), pids)
    same = pids[:, None] == pids[None, :]
    same.fill_diagonal_(False)
    r_ap = torch.multinomial(same.float() + 1e-12, 1).squeeze(1)
    r_an = torch.multinomial((~same).float().fill_diagonal_(0) + 1e-12, 1).squeeze(1)
    anchors = torch.arange(len(pids), device=feat.device)
    has_pos, has_neg = d_ap >= 0, torch.isfinite(d_an)
    a = torch.cat([anchors[has_pos], anchors[has_pos], anchors[has_neg], anchors[has_neg]])
    b = torch.cat([i_ap[has_pos], r_ap[has_pos], i_an[has_neg], r_an[has_neg]])
    n_pos, n_neg = 2 * int(has_pos.sum()), 2 * int(has_neg.sum())
    labels = torch.cat([torch.ones(n_pos), torch.zeros(n_neg)]).to(feat.device)
    return a, b, labels
