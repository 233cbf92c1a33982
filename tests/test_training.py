import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import person

from reid_core.train.config import TrainConfig
from reid_core.train.trainer import LOG_COLUMNS, Trainer


def tiny(market_big: Path, tmp_path: Path, **kw) -> TrainConfig:
    """timm's `test_resnet` (0.37 M parameters, a ResNet with layer4 like resnet18's 11 M): what these tests check
    (the log, resume, freezing, the schedule) does not depend on the network's size, and each step and each
    checkpoint is several times cheaper (BENCHMARKS.md section 20.1)."""
    base = TrainConfig(data=str(market_big), out=str(tmp_path), backbone="test_resnet", pretrained=False, height=64,
                       width=32, p=4, k=4, pair_batch=8, epochs=4, lr=1e-3, warmup_epochs=0, milestones=[100],
                       erasing=0.0, workers=0, amp=False, device="cpu")
    return replace(base, **kw)


def read_log(cfg: TrainConfig) -> list[dict[str, str]]:
    with open(cfg.run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["metric", "bce"])
def test_loss_decreases(market_big: Path, tmp_path: Path, loss: str) -> None:
    cfg = tiny(market_big, tmp_path, loss=loss, name=loss, epochs=5)
    Trainer(cfg).fit()
    rows = read_log(cfg)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.8 * first, (first, last)
    assert (cfg.run_dir / "model.safetensors").exists() and (cfg.run_dir / "model.json").exists()


@pytest.fixture(scope="module")
def logged_run(market_big: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """One finished two-epoch run with an evaluation, shared by the tests that only read what it wrote."""
    cfg = tiny(market_big, tmp_path_factory.mktemp("runs"), name="log", epochs=2, eval_every=2)
    Trainer(cfg).fit()
    return cfg


def test_log_csv_columns(logged_run: TrainConfig) -> None:
    cfg = logged_run
    with open(cfg.run_dir / "log.csv") as f:
        header = next(csv.reader(f))
    assert header == LOG_COLUMNS
    rows = read_log(cfg)
    assert rows[0]["rank1"] == "" and 0.0 <= float(rows[1]["rank1"]) <= 1.0  # eval only when it ran
    from reid_core.train.trainer import lr_at

    for e, row in enumerate(rows, start=1):  # the logged numbers are the ones training used
        assert float(row["lr"]) == pytest.approx(lr_at(cfg, e - 1e-9), rel=1e-4)
        parts = (cfg.id_weight * float(row["loss_id"]) + cfg.triplet_weight * float(row["loss_tri"])
                 + cfg.pair_weight * float(row["loss_pair"]))
        assert float(row["loss"]) == pytest.approx(parts, rel=1e-3)  # the total is the weighted sum of its terms
        assert 0 <= float(row["train_acc"]) <= 1 and float(row["images_per_s"]) > 0
    assert int(rows[1]["step"]) == 2 * int(rows[0]["step"]) > 0
    assert float(rows[1]["mAP"]) > 0 and 0 <= float(rows[1]["pair_auc"]) <= 1
    # the last evaluation's thresholds and calibration are recorded with the weights, by evaluate.record
    from reid_core.evaluation.thresholds import Thresholds

    extra = json.loads((cfg.run_dir / "model.json").read_text())["extra"]
    recorded = Thresholds.from_extra(extra)
    assert recorded.pair == extra["pair_threshold"] == pytest.approx(extra["metrics"]["pair_threshold"], abs=1e-4)
    assert recorded.calibration is not None and recorded.calibration.plain.a != 0
    assert extra["metrics"]["rank1"] == pytest.approx(float(rows[1]["rank1"]), abs=1e-4) and extra["curves"]["cmc"]


@pytest.fixture
def one_thread():
    """Bitwise-reproducible CPU runs: with several threads torch's parallel reductions round differently from
    run to run (~1e-5 relative, resumed or not), which made a tolerance-based comparison flaky."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("loss", ["metric", "bce"])
def test_resume_matches_unbroken_run(market_big: Path, tmp_path: Path, loss: str, one_thread: None) -> None:
    unbroken = tiny(market_big, tmp_path, loss=loss, name="a", epochs=2)
    Trainer(unbroken).fit()
    broken = replace(unbroken, name="b", epochs=1)
    Trainer(broken).fit()
    resumed = Trainer(replace(broken, epochs=2, resume=True))
    assert resumed.start_epoch == 1
    resumed.fit()
    a, b = read_log(unbroken), read_log(broken)
    assert len(b) == 2
    for col in ("loss", "loss_pair", "train_pair_acc"):
        assert a[1][col] == b[1][col], col  # the same digits: a resumed run takes exactly the same steps


def test_progress_bar_counts_the_real_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The epoch's bar ends full: its total is the steps the epoch runs (1 here, as one identity holds most
    images), not the --max-steps-per-epoch cap or an upper bound of the sampler (it showed 1/2)."""
    import reid_core.train.trainer as trainer

    root = tmp_path / "uneven"
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (root / d).mkdir(parents=True)
    for pid, n in ((1, 24), (2, 4), (3, 4), (4, 4), (5, 4)):
        for k in range(n):
            person(pid, k % 2, k).save(root / "bounding_box_train" / f"{pid:04d}_c{k % 2 + 1}s1_{k:06d}_00.jpg")
    person(6, 0, 0).save(root / "query" / "0006_c1s1_000000_00.jpg")
    person(6, 1, 0).save(root / "bounding_box_test" / "0006_c2s1_000000_00.jpg")
    bars: list[Any] = []

    def recorded(*args: Any, **kw: Any) -> Any:
        bars.append(real(*args, **kw))
        return bars[-1]

    real = trainer.progress_bar
    monkeypatch.setattr(trainer, "progress_bar", recorded)
    t = Trainer(tiny(root, tmp_path, name="bar", epochs=2, max_steps_per_epoch=5))
    t.fit()
    assert [(b.total, b.n) for b in bars] == [(1, 1), (1, 1)] and t.step == 2


def test_resume_without_checkpoint_is_an_error(market_big: Path, tmp_path: Path) -> None:
    from reid_core.model.errors import WeightsError

    with pytest.raises(WeightsError, match="no checkpoint"):
        Trainer(tiny(market_big, tmp_path, name="none", resume=True))


def test_lr_schedule_warms_up_then_steps_or_follows_a_cosine() -> None:
    from reid_core.train.trainer import lr_at

    step = TrainConfig(lr=1e-3, warmup_epochs=10, milestones=[40, 70], gamma=0.1, epochs=120)
    assert lr_at(step, 0) == pytest.approx(1e-5) and lr_at(step, 5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert [lr_at(step, e) for e in (10, 39.9, 40, 69, 70, 119)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    cos = replace(step, schedule="cosine")
    assert lr_at(cos, 10) == pytest.approx(1e-3) and lr_at(cos, 65) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert lr_at(cos, 120) == pytest.approx(1e-5) and lr_at(cos, 500) == pytest.approx(1e-5)
    values = [lr_at(cos, e / 4) for e in range(40, 480)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # never rises after the warm-up


def test_in_batch_pairs_are_balanced_and_labelled_by_identity() -> None:
    from reid_core.train.losses import in_batch_pairs

    torch.manual_seed(0)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    feat = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    a, b, labels = in_batch_pairs(feat, pids)
    assert len(a) == len(b) == len(labels) == 4 * 8 and labels.sum() == 16  # per anchor 2 positives, 2 negatives
    assert torch.equal(labels.bool(), pids[a] == pids[b]) and not (a == b).any()
    dist = torch.cdist(feat, feat)
    hard_pos, hard_neg = b[:8], b[16:24]  # the hardest: farthest same id, nearest other id
    for i in range(8):
        same = (pids == pids[i]) & (torch.arange(8) != i)
        assert dist[i, hard_pos[i]] == pytest.approx(float(dist[i][same].max()), abs=1e-5)
        assert dist[i, hard_neg[i]] == pytest.approx(float(dist[i][pids != pids[i]].min()), abs=1e-5)


def test_train_transform_keeps_size_and_type_flips_and_erases() -> None:
    from PIL import Image

    from reid_core.data.augment import train_transform

    img = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (128, 1, 3)))  # left dark
    mean = (0.5, 0.25, 0.75)
    torch.manual_seed(0)
    outs = [train_transform((64, 32), mean, erasing=1.0, pad=0)(img) for _ in range(40)]
    assert all(o.shape == (3, 64, 32) and o.dtype == torch.uint8 for o in outs)
    left_dark = [bool(o[0, :, :8].float().mean() < o[0, :, -8:].float().mean()) for o in outs]
    assert 0 < sum(left_dark) < 40  # flipped about half the time
    fill = torch.tensor([round(255 * m) for m in mean], dtype=torch.uint8)[:, None]
    assert all((o.flatten(1) == fill).all(0).any() for o in outs)  # every one erased, with the mean colour
    plain = train_transform((64, 32), mean, erasing=0.0, pad=0)(img)
    assert not (plain.flatten(1) == fill).all(0).any()


def test_resume_takes_the_runs_own_config(market_big: Path, logged_run: TrainConfig) -> None:
    """--resume reads runs/<name>/config.json; flags that would change the trained model are refused by name,
    while --epochs (and the other RESUMABLE ones) may change. (Reads the shared run; the refused call trains
    nothing.)"""
    import train
    from reid_core.model.errors import WeightsError

    base = ["--data", str(market_big), "--out", logged_run.out, "--name", logged_run.name, "--resume"]
    cfg = train.parse_args([*base, "--epochs", "3"])
    saved = TrainConfig(**json.loads((logged_run.run_dir / "config.json").read_text()))
    assert cfg == replace(saved, epochs=3, resume=True)  # height 64, test_resnet ...: not the CLI defaults
    with pytest.raises(WeightsError, match=r"--height 128 \(the run was trained with 64\); --lr 0\.1 \(the run "):
        train.parse_args([*base, "--lr", "0.1", "--height", "128"])
    assert train.main([*base, "--lr", "0.1"]) == 2


def test_freeze_epochs_train_only_the_heads(market_big: Path, tmp_path: Path) -> None:
    import torch

    trainer = Trainer(tiny(market_big, tmp_path, name="freeze", epochs=2, freeze_epochs=1))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_epoch(0)
    after = trainer.model.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN statistics untouched
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(before["pair_head.weight"], after["pair_head.weight"])
    trainer.train_epoch(1)
    assert any(not torch.equal(before[k], trainer.model.state_dict()[k]) for k in backbone)


def test_train_cli_is_built_from_the_config() -> None:
    """train.py declares no setting of its own: each TrainConfig field is a flag with the field's help, the
    defaults are the dataclass's, and the short and switch spellings land in the right fields."""
    from dataclasses import fields

    import train

    parser = train.build_parser()
    dests = {a.dest for a in parser._actions} - {"help"}
    assert dests == {f.name for f in fields(TrainConfig)}
    assert all(a.help for a in parser._actions)
    assert train.parse_args(["--data", "d"]) == TrainConfig(data="d")
    cfg = train.parse_args(["--data", "d", "--p", "8", "--images-per-id", "2", "--raw-triplet", "--no-pretrained",
                            "--milestones", "5", "9", "--extra-data", "a", "b", "--no-amp", "--compile",
                            "--last-stride", "2", "--lr", "0.01"])
    assert (cfg.p, cfg.k, cfg.triplet_norm, cfg.pretrained, cfg.milestones, cfg.extra_data, cfg.amp, cfg.compile,
            cfg.last_stride, cfg.lr) == (8, 2, False, False, [5, 9], ["a", "b"], False, True, 2, 0.01)
    # a bool's help says what the field is; both switches exist, the last one typed wins
    text = " ".join(parser.format_help().split())
    assert "--pretrained start from timm's ImageNet weights" in text and "--no-pretrained not --pretrained" in text
    assert "--raw-triplet not --triplet-norm" in text and "--compile torch.compile" in text
    assert train.parse_args(["--data", "d", "--no-amp", "--amp", "--raw-triplet"]).amp is True


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["metric", "bce"])
def test_loader_workers_give_the_batches_of_the_main_process(market_big: Path, tmp_path: Path, loss: str) -> None:
    """Workers start from a fork server (trainer._loader: a fork copies locks other threads hold): they must
    unpickle the dataset and augment each image with its own seed exactly as the main process does."""
    batches = []
    for workers in (0, 2):
        trainer = Trainer(tiny(market_big, tmp_path / str(workers), loss=loss, erasing=0.5, workers=workers))
        loader = trainer._epoch_batches(1)
        if workers:
            assert loader.multiprocessing_context.get_start_method() == "forkserver"
        batches.append(next(iter(loader)))
    for a, b in zip(*batches, strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
