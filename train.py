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


def build_parser(typed_only: bool = False) -> argparse.ArgumentParser:
    """Every TrainConfig field is a flag, with the help its dataclass field carries (the network's fields are
    reid_core's Architecture, shared with the ModelConfig saved beside the weights): one source per setting.
    `typed_only`: a parser that returns only the flags typed on the command line (no defaults, none required)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=not typed_only)
    setting_flags(ap, TrainConfig, ("data", "model", "loss", "optimisation", "run"), typed_only=typed_only)
    return ap


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The config of a new run; with --resume, the run's own config.json with the flags typed here that may
    change (TrainConfig.resumed)."""
    cfg = TrainConfig(**vars(build_parser().parse_args(argv)))
    if not cfg.resume:
        return cfg
    return TrainConfig.resumed(vars(build_parser(typed_only=True).parse_args(argv)))


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
