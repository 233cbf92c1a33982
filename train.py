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

from reid_core import DatasetError, TrainConfig, Trainer, WeightsError


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument_group("data")
    a.add_argument("--data", required=True, help="dataset root: Market-1501, DukeMTMC-reID, MSMT17, CUHK03 or "
                                                 "one folder per identity")
    a.add_argument("--extra-data", nargs="*", default=d.extra_data, metavar="DIR",
                   help="more training sets (any layout; their training identities join, kept apart from the "
                        "--data ones, e.g. ../shared/data/cuhk03); evaluation stays on --data")
    a.add_argument("--layout", default=d.layout,
                   help="auto | market | duke | msmt17 | cuhk03[-new|-classic][-detected|-labeled] | folders")
    a.add_argument("--height", type=int, default=d.height, help="input height in pixels")
    a.add_argument("--width", type=int, default=d.width, help="input width in pixels")
    a.add_argument("--max-ids", type=int, default=d.max_ids, help="train on this many identities (0: all)")
    a.add_argument("--max-images", type=int, default=d.max_images, help="train on at most this many images (0: all)")
    a.add_argument("--erasing", type=float, default=d.erasing, help="random-erasing probability")
    a.add_argument("--workers", type=int, default=d.workers, help="data-loader processes")
    m = ap.add_argument_group("model")
    m.add_argument("--backbone", default=d.backbone, help="any timm model name")
    m.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="start from random weights instead of timm's ImageNet weights (needs the HF hub)")
    m.add_argument("--init-weights", default=d.init_weights,
                   help="local ImageNet weights for the backbone (.safetensors, or a plain tensor .pth)")
    m.add_argument("--embed-dim", type=int, default=d.embed_dim, help="embedding width (0: the backbone's)")
    m.add_argument("--last-stride", type=int, default=d.last_stride, choices=[1, 2],
                   help="1: the last down-sampling stage keeps its input size (output stride 16; ResNets and "
                        "EfficientNets)")
    m.add_argument("--norm", choices=["auto", "imagenet", "tf"], default=d.norm,
                   help="input normalisation, applied inside the model: auto = what the backbone's ImageNet "
                        "weights were trained with; imagenet = ImageNet mean/std; tf = (x - 127) / 128")
    lo = ap.add_argument_group("loss")
    lo.add_argument("--loss", choices=["metric", "bce"], default=d.loss,
                    help="metric: ID (label smoothing) + batch-hard triplet + pair BCE on PK batches; "
                         "bce: pair BCE only on sampled pairs (the seed's recipe)")
    lo.add_argument("--ids-per-batch", "--p", dest="p", type=int, default=d.p, help="P: identities per PK batch")
    lo.add_argument("--images-per-id", "--k", dest="k", type=int, default=d.k,
                    help="K: images per identity in a PK batch (under torchrun spell these two long: torchrun "
                         "takes --p as its own option)")
    lo.add_argument("--pair-batch", type=int, default=d.pair_batch, help="pairs per batch with --loss bce")
    lo.add_argument("--hard-negatives", type=float, default=d.hard_negatives,
                    help="--loss bce: fraction of negatives mined with the current model each epoch")
    lo.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    lo.add_argument("--margin", type=float, default=d.margin, help="triplet margin")
    lo.add_argument("--raw-triplet", dest="triplet_norm", action="store_false",
                    help="triplet on raw (unnormalised) features, as in Bag-of-Tricks; the default measures it "
                         "between unit vectors, which trains faster (BENCHMARKS.md section 1)")
    lo.add_argument("--id-weight", type=float, default=d.id_weight, help="weight of the ID cross-entropy")
    lo.add_argument("--triplet-weight", type=float, default=d.triplet_weight, help="weight of the triplet loss")
    lo.add_argument("--pair-weight", type=float, default=d.pair_weight, help="weight of the pair BCE in metric mode")
    o = ap.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=d.epochs)
    o.add_argument("--freeze-epochs", type=int, default=d.freeze_epochs,
                   help="train only the new heads (BNNeck, classifier, pair head) for this many epochs first")
    o.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    o.add_argument("--lr", type=float, default=d.lr)
    o.add_argument("--weight-decay", type=float, default=d.weight_decay)
    o.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs, help="linear warm-up length")
    o.add_argument("--schedule", choices=["step", "cosine"], default=d.schedule)
    o.add_argument("--milestones", type=int, nargs="*", default=d.milestones, help="step schedule: epochs to x gamma")
    o.add_argument("--gamma", type=float, default=d.gamma)
    o.add_argument("--max-steps-per-epoch", type=int, default=d.max_steps_per_epoch, help="cap steps (0: none)")
    o.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 instead of bf16/fp16 autocast")
    o.add_argument("--compile", action="store_true", help="torch.compile the backbone (pays off on long GPU runs)")
    o.add_argument("--no-sync-bn", dest="sync_bn", action="store_false",
                   help="under torchrun: per-process BatchNorm statistics instead of global-batch ones")
    o.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    o.add_argument("--seed", type=int, default=d.seed)
    r = ap.add_argument_group("run")
    r.add_argument("--out", default=d.out, help="folder for runs")
    r.add_argument("--name", default=d.name, help="run name: runs/<name>/")
    r.add_argument("--resume", action="store_true", help="continue runs/<name>/last.safetensors with the run's own "
                   "config.json (only --epochs, --workers, --device, --eval-* and --compile may change)")
    r.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every N epochs (0: never)")
    r.add_argument("--eval-max-ids", type=int, default=d.eval_max_ids,
                   help="evaluate on this many test identities (0: the full query/gallery split)")
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
