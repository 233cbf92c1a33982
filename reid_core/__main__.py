"""Command line for the library: `python -m reid_core compare A B [--weights W] [--allow-pickle]` prints the
same-person probability of two crops (what the app's Compare tab shows), or one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import sys

from .api import ReID
from .images import ImageError, load_image
from .model import WEIGHTS_HELP, WeightsError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reid_core", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="print the same-person probability, cosine and verdict of two images")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--weights", help=WEIGHTS_HELP)
    cmp.add_argument("--allow-pickle", action="store_true", help="also accept a trusted .pth/.pt state dict")
    args = ap.parse_args(argv)
    try:
        reid = ReID.load(args.weights, "cpu", args.allow_pickle)
        c = reid.compare(load_image(args.a), load_image(args.b))
    except (WeightsError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verdict = "same person" if c.same else "different people"
    print(f"probability {c.probability:.4f}  cosine {c.cosine:.4f}  threshold {c.threshold:.4f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
