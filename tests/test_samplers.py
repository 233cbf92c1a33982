from collections import Counter

import numpy as np
import pytest

from reid_core.data.datasets import Record
from reid_core.data.samplers import PairSampler, PKSampler


def records(n_ids: int = 10, per_id: int = 6, cams: int = 3, single_cam_ids: int = 2) -> list[Record]:
    out = []
    for pid in range(n_ids):
        for k in range(per_id):
            cam = 0 if pid < single_cam_ids else k % cams
            out.append(Record(f"{pid}_{k}.jpg", pid, cam))
    return out


def test_pairs_balanced_labelled_and_cross_camera() -> None:
    recs = records()
    pairs = PairSampler(recs, pairs_per_epoch=1000, seed=1).pairs(epoch=0)
    assert len(pairs) == 1000
    labels = [y for _, _, y in pairs]
    assert sum(labels) == 500  # exactly 50/50
    for a, b, y in pairs:
        ra, rb = recs[a], recs[b]
        assert a != b
        assert (ra.pid == rb.pid) == bool(y)
        if y and ra.pid >= 2:  # identity seen by several cameras: the positive crosses cameras
            assert ra.camid != rb.camid
    single = [(a, b) for a, b, y in pairs if y and recs[a].pid < 2]
    assert single and all(recs[a].camid == recs[b].camid for a, b in single)  # falls back to same camera


def test_pairs_seeded_and_vary_by_epoch() -> None:
    s = PairSampler(records(), pairs_per_epoch=200, seed=3)
    assert s.pairs(0) == PairSampler(records(), pairs_per_epoch=200, seed=3).pairs(0)
    assert s.pairs(0) != s.pairs(1)


def test_hard_negatives_come_from_neighbours() -> None:
    recs = records()
    s = PairSampler(recs, pairs_per_epoch=400, seed=0, hard_fraction=1.0)
    pids = np.array([r.pid for r in recs])
    # every image's "nearest" images: those of identity (pid + 1) % 10
    neighbours = np.stack([np.flatnonzero(pids == (p + 1) % 10) for p in pids])
    s.set_neighbours(neighbours)
    negs = [(a, b) for a, b, y in s.pairs(0) if not y]
    assert all(recs[b].pid == (recs[a].pid + 1) % 10 for a, b in negs)


def test_pair_sampler_needs_two_ids() -> None:
    with pytest.raises(ValueError, match="2 identities"):
        PairSampler([Record("a", 0, 0), Record("b", 0, 1)])


def test_pk_batches() -> None:
    recs = records(n_ids=10, per_id=6)
    recs += [Record("lonely.jpg", 10, 0)]  # fewer than K images: sampled with replacement
    s = PKSampler([r.pid for r in recs], p=4, k=4, seed=0)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 16
        counts = Counter(recs[i].pid for i in b)
        assert len(counts) == 4 and set(counts.values()) == {4}
    s.set_epoch(1)
    assert list(s) != batches  # new epoch, new batches
    s.set_epoch(0)
    assert list(s) == batches  # and the same epoch replays exactly (resume)


def test_pk_len_is_the_batches_an_epoch_yields() -> None:
    """One identity with many images runs out of partners: the epoch ends before its chunks do, and len says so
    (it said 3 here, the chunk count over P, while every epoch yields 1)."""
    pids = [0] * 40 + [i for i in range(1, 5) for _ in range(4)]  # 10 chunks of K=4 for pid 0, 1 for each other
    s = PKSampler(pids, p=4, k=4, seed=0)
    lengths = []
    for epoch in range(6):
        s.set_epoch(epoch)
        lengths.append(len(s))
        assert len(list(s)) == len(s) == len(s.batches(epoch)) and list(s) == s.batches(epoch)
    assert lengths == [1] * 6


def test_pk_needs_p_ids() -> None:
    with pytest.raises(ValueError, match="P=16"):
        PKSampler([0, 0, 1, 1], p=16, k=2)
