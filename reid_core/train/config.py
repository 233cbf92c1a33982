"""`TrainConfig`: every setting of a training run, declared once with its help (train.py's flags are built from
it), and the one rule for resuming a run with its own settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..base.flag_fields import setting
from ..data.datasets import LAYOUTS
from ..model.errors import WeightsError
from ..model.network import Architecture


@dataclass
class TrainConfig(Architecture):
    """Every setting of a training run (its flags: train.py); the network's own fields come from Architecture."""

    data: str = setting("", "dataset root: Market-1501, DukeMTMC-reID, MSMT17, CUHK03 or one folder per identity",
                        "data", required=True)
    extra_data: list[str] = setting([], "more training sets (any layout; their training identities join, kept apart "
                                    "from the --data ones, e.g. ../shared/data/cuhk03); evaluation stays on --data",
                                    "data", metavar="DIR")
    layout: str = setting("auto", LAYOUTS, "data")
    max_ids: int = setting(0, "train on this many identities (0: all)", "data")
    max_images: int = setting(0, "train on at most this many images (0: all)", "data")
    erasing: float = setting(0.5, "random-erasing probability", "data")
    workers: int = setting(2, "data-loader processes", "data")
    device_crops: bool = setting(False, "decode the training crops once to uint8 on the device and augment them there "
                                 "(a GPU run: the CPU loader bounds it otherwise; BENCHMARKS.md section 8)", "data")
    pretrained: bool = setting(True, "start from timm's ImageNet weights (needs the HF hub; --init-weights names local "
                               "ones); off: random weights", "model")
    init_weights: str = setting("", "local ImageNet weights for the backbone (.safetensors, or a plain tensor .pth), "
                                "or a re-id model to fine-tune", "model")
    norm: str = setting("auto", "input normalisation, applied inside the model: auto = what the backbone's ImageNet "
                        "weights were trained with; imagenet = ImageNet mean/std; tf = (x - 127) / 128", "model",
                        choices=["auto", "imagenet", "tf"])
    loss: str = setting("metric", "metric: ID (label smoothing) + batch-hard triplet + pair BCE on PK batches; bce: "
                        "pair BCE only on sampled pairs (the seed's recipe)", "loss", choices=["metric", "bce"])
    p: int = setting(16, "P: identities per PK batch", "loss", "--ids-per-batch", "--p")
    k: int = setting(4, "K: images per identity in a PK batch (under torchrun spell these two long: torchrun takes "
                     "--p as its own option)", "loss", "--images-per-id", "--k")
    pair_batch: int = setting(32, "pairs per batch with --loss bce (2x images)", "loss")
    hard_negatives: float = setting(0.0, "--loss bce: fraction of negatives mined with the current model each epoch",
                                    "loss")
    label_smoothing: float = setting(0.1, "ID cross-entropy label smoothing", "loss")
    margin: float = setting(0.3, "triplet margin", "loss")
    triplet_norm: bool = setting(True, "the triplet loss between unit vectors, which trains faster (BENCHMARKS.md "
                                 "section 1); off (--raw-triplet): on raw features, as in Bag-of-Tricks", "loss",
                                 "--raw-triplet")
    id_weight: float = setting(1.0, "weight of the ID cross-entropy", "loss")
    triplet_weight: float = setting(1.0, "weight of the triplet loss", "loss")
    pair_weight: float = setting(1.0, "weight of the pair BCE in metric mode", "loss")
    epochs: int = setting(120, "epochs", "optimisation")
    freeze_epochs: int = setting(0, "train only the new heads (BNNeck, classifier, pair head) for this many epochs "
                                 "first", "optimisation")
    optimizer: str = setting("adam", "optimiser", "optimisation", choices=["adam", "sgd"])
    lr: float = setting(3.5e-4, "peak learning rate", "optimisation")
    weight_decay: float = setting(5e-4, "weight decay", "optimisation")
    warmup_epochs: int = setting(10, "linear warm-up length", "optimisation")
    schedule: str = setting("step", "learning-rate schedule after the warm-up", "optimisation",
                            choices=["step", "cosine"])
    milestones: list[int] = setting([40, 70], "step schedule: epochs to x gamma", "optimisation")
    gamma: float = setting(0.1, "step schedule: the factor at each milestone", "optimisation")
    max_steps_per_epoch: int = setting(0, "cap steps (0: none)", "optimisation")
    amp: bool = setting(True, "bf16/fp16 autocast where the device has it; off: fp32", "optimisation")
    compile: bool = setting(False, "torch.compile the backbone (pays off on long GPU runs)", "optimisation")
    sync_bn: bool = setting(True, "under torchrun: BatchNorm statistics of the global batch; off: per process",
                            "optimisation")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N", "optimisation")
    seed: int = setting(0, "random seed", "optimisation")
    out: str = setting("runs", "folder for runs", "run")
    name: str = setting("exp", "run name: runs/<name>/", "run")
    resume: bool = setting(False, "continue runs/<name>/last.safetensors with the run's own config.json (only "
                           "--epochs, --workers, --device, --eval-* and --compile may change)", "run")
    eval_every: int = setting(0, "evaluate every N epochs (0: never)", "run")
    eval_max_ids: int = setting(0, "evaluate on this many test identities (0: the full query/gallery split)", "run")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    @classmethod
    def resumed(cls, typed: dict[str, Any]) -> TrainConfig:
        """The config to resume runs/<name>/ with (`typed`: the flags typed on the command line; --out and
        --name find the run): the run's own config.json, plus the typed flags that may change on resume
        (RESUMABLE); any other typed flag that differs from the run's is an error naming both values, never a
        silent change of what the checkpoint was trained with."""
        name = typed.get("name", cls.name)
        saved_file = Path(typed.get("out", cls.out)) / name / "config.json"
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, ValueError) as e:
            raise WeightsError(f"--resume: no readable {saved_file} ({type(e).__name__})") from e
        saved = {k: v for k, v in saved.items() if k in {f.name for f in fields(TrainConfig)}}

        def same(key: str, a: Any, b: Any) -> bool:
            if key == "data":
                return Path(a).resolve() == Path(b).resolve()
            return (list(a) if isinstance(a, (list, tuple)) else a) == (list(b) if isinstance(b, (list, tuple)) else b)

        clash = [f"--{k.replace('_', '-')} {typed[k]!r} (the run was trained with {saved[k]!r})"
                 for k in sorted(typed) if k in saved and k not in RESUMABLE and not same(k, saved[k], typed[k])]
        if clash:
            raise WeightsError(f"--resume {name}: {'; '.join(clash)}. Resume with the run's own settings "
                               "(drop these flags), or start a new --name")
        return TrainConfig(**{**saved, **{k: v for k, v in typed.items() if k in RESUMABLE}, "resume": True})


RESUMABLE = {"resume", "epochs", "workers", "device", "eval_every", "eval_max_ids", "compile", "out", "name"}
