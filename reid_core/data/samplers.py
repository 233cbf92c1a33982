"""Which images go together: positive/negative pairs for the Siamese loss, P x K batches for metric losses.

Both are seeded per epoch (`seed`, `epoch`), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from .datasets import Record


def _by_pid(pids: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, pid in enumerate(pids):
        groups[int(pid)].append(i)
    return dict(groups)


class PairSampler:
    """Balanced 50/50 positive/negative index pairs.

    Positives share a pid and, where the identity was seen by another camera, come from a different camera
    (the re-id task is cross-camera). Negatives have different pids; with `hard_fraction` > 0 and
    `set_neighbours(...)` called, that fraction of negatives is drawn from each anchor's nearest
    other-identity images, the ones the model currently confuses.
    """

    def __init__(self, records: Sequence[Record], pairs_per_epoch: int | None = None, seed: int = 0,
                 hard_fraction: float = 0.0):
        self.pids = np.array([r.pid for r in records])
        self.camids = np.array([r.camid for r in records])
        self.groups = {p: np.array(ix) for p, ix in _by_pid(self.pids).items() if len(ix) >= 2}
        if not self.groups or len(_by_pid(self.pids)) < 2:
            raise ValueError("pair sampling needs at least 2 identities, one of them with 2+ images")
        self.anchors = np.concatenate(list(self.groups.values()))
        self.pairs_per_epoch = pairs_per_epoch or len(self.anchors)
        self.seed, self.hard_fraction = seed, hard_fraction
        self.neighbours: np.ndarray | None = None

    def set_neighbours(self, neighbours: np.ndarray) -> None:
        """neighbours[i] = indices of the images nearest to i (any identity), nearest first."""
        self.neighbours = neighbours

    def _positive(self, rng: np.random.Generator, a: int) -> int:
        same = self.groups[self.pids[a]]
        same = same[same != a]
        other_cam = same[self.camids[same] != self.camids[a]]  # the re-id task is cross-camera
        same = other_cam if len(other_cam) else same
        return int(rng.choice(same))

    def _negative(self, rng: np.random.Generator, a: int) -> int:
        if self.neighbours is not None and rng.random() < self.hard_fraction:
            cand = self.neighbours[a]
            cand = cand[self.pids[cand] != self.pids[a]]
            if len(cand):
                return int(cand[0] if len(cand) == 1 else rng.choice(cand[: max(1, len(cand) // 2)]))
        while True:
            j = int(rng.integers(len(self.pids)))
            if self.pids[j] != self.pids[a]:
                return j

    def pairs(self, epoch: int = 0) -> list[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        out = []
        for k, a in enumerate(rng.choice(self.anchors, self.pairs_per_epoch)):
            a = int(a)
            out.append((a, self._positive(rng, a), 1) if k % 2 == 0 else (a, self._negative(rng, a), 0))
        order = rng.permutation(len(out))
        return [out[i] for i in order]


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K images (torchreid's RandomIdentitySampler, as a batch sampler).

    Identities with fewer than K images are sampled with replacement. An epoch walks every identity's
    images in chunks of K until fewer than P identities have a chunk left; `len` is the number of batches the
    current epoch yields (drawn once per epoch, so a progress bar or schedule counts real steps).
    """

    def __init__(self, pids: Sequence[int], p: int = 16, k: int = 4, seed: int = 0):
        self.groups = _by_pid(pids)
        if len(self.groups) < p:
            raise ValueError(f"PK sampling needs at least P={p} identities, the data has {len(self.groups)}")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self._drawn: tuple[int, list[list[int]]] | None = None  # (epoch, its batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches, the same on every call (a resumed run replays them)."""
        if self._drawn is None or self._drawn[0] != epoch:
            self._drawn = epoch, self._draw(epoch)
        return self._drawn[1]

    def _draw(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        chunks: dict[int, list[list[int]]] = {}
        for pid, ix in self.groups.items():
            ix = np.array(ix)
            ix = rng.choice(ix, self.k, replace=True) if len(ix) < self.k else rng.permutation(ix)
            n = len(ix) // self.k
            chunks[pid] = [ix[c * self.k:(c + 1) * self.k].tolist() for c in range(n)]
        out: list[list[int]] = []
        while len(avail := [pid for pid, c in chunks.items() if c]) >= self.p:
            batch: list[int] = []
            for pid in rng.choice(avail, self.p, replace=False):
                batch += chunks[int(pid)].pop()
            out.append(batch)
        return out
