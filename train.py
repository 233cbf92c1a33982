"""Train a Siamese re-id model.

    python train.py --data ../shared/data/market1501                       # resnet50, Bag-of-Tricks recipe
    python train.py --data DIR --loss bce                                  # the seed's pair-BCE recipe
    python train.py --data DIR --backbone efficientnet_lite0 --no-pretrained --init-weights W --epochs 12
    torchrun --nproc_per_node 4 train.py --data DIR                        # 4 GPUs (or CPU processes): DDP

Under torchrun, --p/--k/--pair-batch stay the GLOBAL batch; each process takes an equal share of it.

Writes runs/<name>/{config.json, log.csv, last.safetensors, model.safetensors + model.json}.
"""

from __future__ import annotations

import argparse
import sys

import torch

from reid_core import DatasetError, TrainConfig, Trainer, WeightsError, setting_flags


def build_parser() -> argparse.ArgumentParser:
    """Every TrainConfig field is a flag, with the help its dataclass field carries (the network's fields are
    reid_core's Architecture, shared with the ModelConfig saved beside the weights): one source per setting."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    setting_flags(ap, TrainConfig, ("data", "model", "loss", "optimisation", "run"))
    return ap


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    ap = build_parser()
    cfg = TrainConfig(**vars(ap.parse_args(argv)))
    if not cfg.resume:
        return cfg
    for action in ap._actions:  # parse again, defaults suppressed: only the flags typed on this command line
        action.default, action.required = argparse.SUPPRESS, False
    return cfg.resumed(vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        Trainer(cfg).fit()
    except (DatasetError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    print(f"saved {cfg.run_dir / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
