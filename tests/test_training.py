import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from reid_core.trainer import LOG_COLUMNS, TrainConfig, Trainer


def tiny(market_big: Path, tmp_path: Path, **kw) -> TrainConfig:
    base = TrainConfig(data=str(market_big), out=str(tmp_path), backbone="resnet18", pretrained=False, height=64,
                       width=32, p=4, k=4, pair_batch=8, epochs=4, lr=1e-3, warmup_epochs=0, milestones=[100],
                       erasing=0.0, workers=0, amp=False, device="cpu")
    return replace(base, **kw)


def read_log(cfg: TrainConfig) -> list[dict[str, str]]:
    with open(cfg.run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("loss", ["metric", "bce"])
def test_loss_decreases(market_big: Path, tmp_path: Path, loss: str) -> None:
    cfg = tiny(market_big, tmp_path, loss=loss, name=loss, epochs=5)
    Trainer(cfg).fit()
    rows = read_log(cfg)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.8 * first, (first, last)
    assert (cfg.run_dir / "model.safetensors").exists() and (cfg.run_dir / "model.json").exists()


def test_log_csv_columns(market_big: Path, tmp_path: Path) -> None:
    cfg = tiny(market_big, tmp_path, name="log", epochs=2, eval_every=2)
    Trainer(cfg).fit()
    with open(cfg.run_dir / "log.csv") as f:
        header = next(csv.reader(f))
    assert header == LOG_COLUMNS
    rows = read_log(cfg)
    assert rows[0]["rank1"] == "" and 0.0 <= float(rows[1]["rank1"]) <= 1.0  # eval only when it ran
    for col in ("lr", "loss", "loss_id", "loss_tri", "loss_pair", "train_acc", "images_per_s", "seconds"):
        assert float(rows[0][col]) >= 0.0
    assert float(rows[1]["mAP"]) > 0 and 0 <= float(rows[1]["pair_auc"]) <= 1


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


def test_resume_without_checkpoint_is_an_error(market_big: Path, tmp_path: Path) -> None:
    from reid_core.model import WeightsError

    with pytest.raises(WeightsError, match="no checkpoint"):
        Trainer(tiny(market_big, tmp_path, name="none", resume=True))


def test_train_cli_help_documents_every_flag() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    for flag in ("--data", "--backbone", "--loss", "--resume", "--max-images", "--max-ids", "--eval-every",
                 "--init-weights", "--no-pretrained", "--epochs", "--lr", "--schedule", "--p", "--k"):
        assert flag in out, flag


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
