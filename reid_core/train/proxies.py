"""Camera-aware proxies for pseudo-label self-training (CAP, Wang et al. AAAI 2021; ICE, Chen et al. ICCV 2021).

A cluster of a camera network's crops mixes cameras, and its one centroid is pulled towards the camera most of
its crops came from. Here each cluster keeps one proxy per camera it was seen in (the mean of its crops from that
camera), and a crop is trained with two terms: intra-camera, its own proxy against the other proxies of its
camera (so telling people apart does not lean on what a camera looks like); inter-camera, every proxy of its
cluster, whatever the camera, against the hardest proxies of other clusters (so one person's crops gather
across cameras, which is the matching the network is used for).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CameraProxies:
    def __init__(self, emb: torch.Tensor, labels: torch.Tensor, cams: torch.Tensor, temperature: float = 0.07,
                 momentum: float = 0.2, hard: int = 50, inter_weight: float = 0.5):
        """`emb` (n, d) the crops' embeddings, `labels` (n,) their clusters (-1: none), `cams` (n,) cameras."""
        kept = labels >= 0
        key = labels.long() * (int(cams.max()) + 1) + cams.long()
        uniq, inverse = torch.unique(key[kept], return_inverse=True)
        self.proxy_of = torch.full_like(labels.long(), -1)
        self.proxy_of[kept] = inverse
        self.proxy_cluster, self.proxy_cam = uniq // (int(cams.max()) + 1), uniq % (int(cams.max()) + 1)
        sums = torch.zeros(len(uniq), emb.shape[1], dtype=emb.dtype, device=emb.device)
        sums.index_add_(0, inverse, F.normalize(emb[kept], dim=1))
        self.bank = F.normalize(sums, dim=1)
        self.labels, self.cams = labels.long(), cams.long()
        self.temperature, self.momentum, self.hard, self.inter_weight = temperature, momentum, hard, inter_weight

    def loss(self, emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Intra- plus inter_weight x inter-camera loss of a batch of crops (their positions `idx`); then each
        crop's proxy moves towards it (momentum)."""
        f = F.normalize(emb, dim=1)
        own, cluster, cam = self.proxy_of[idx], self.labels[idx], self.cams[idx]
        sims = f @ self.bank.clone().T / self.temperature  # the bank moves below
        same_cam = self.proxy_cam[None] == cam[:, None]
        intra = F.cross_entropy(sims.masked_fill(~same_cam, float("-inf")), own)
        pos = self.proxy_cluster[None] == cluster[:, None]
        hard = sims.masked_fill(pos, float("-inf")).topk(min(self.hard, sims.shape[1]), dim=1).values
        denom = torch.logsumexp(torch.cat([sims.masked_fill(~pos, float("-inf")), hard], dim=1), dim=1)
        inter = -((sims - denom[:, None]) * pos).sum(1) / pos.sum(1)
        with torch.no_grad():
            for i, p in enumerate(own.tolist()):
                self.bank[p] = F.normalize(self.momentum * self.bank[p] + (1 - self.momentum) * f[i], dim=0)
        return intra + self.inter_weight * inter.mean()
