"""Pick the app's example people: real pedestrian crops from Market-1501's TEST split (query and
bounding_box_test: identities the shipped weights never trained on), a few identities, each seen by three cameras.

    python examples/make_examples.py [--data ../shared/data/market1501]   # rewrites examples/people/

Names say who and which of the person's cameras (`person-A_c1.png`), with text ids that never equal a dataset's
numeric ids, so the app can mark right and wrong matches; `examples/people/sources.csv` maps each to its Market
file. Identities are drawn with a seeded generator; a draw is kept only when the shipped weights give the right
verdict, by a clear margin, on every pair the app offers (app.EXAMPLE_PAIRS: same person across cameras, and
different people): the first thing a visitor tries must be right. Source and terms: examples/README.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PEOPLE, CAMERAS = 6, 3  # identities, and cameras each is seen by
MARGIN = 0.05  # every example pair's score at least this far from the threshold, on the right side


def example_name(slot: int, cam: int) -> str:
    return f"person-{chr(ord('A') + slot)}_c{cam}.png"


def identity(name: str) -> str:
    """`person-A` of `person-A_c1.png`: who an example shows."""
    return name.split("_c")[0]


def candidates(root: Path) -> dict[int, dict[int, list[Path]]]:
    """Test identities (query ids; 0 distractors and -1 junk aside) -> camera -> their crops."""
    sys.path.insert(0, str(ROOT))
    from reid_core.data.datasets import parse_market_name

    out: dict[int, dict[int, list[Path]]] = {}
    for folder in ("query", "bounding_box_test"):
        for p in sorted((root / folder).glob("*.jpg")):
            parsed = parse_market_name(p.name)
            if parsed and parsed[0] > 0:
                out.setdefault(parsed[0], {}).setdefault(parsed[1], []).append(p)
    return {pid: cams for pid, cams in out.items() if len(cams) >= CAMERAS}


def draw(pool: dict[int, dict[int, list[Path]]], rng: np.random.Generator) -> dict[str, Path]:
    """example name -> Market crop: PEOPLE identities, CAMERAS cameras each, one crop per camera."""
    chosen = {}
    for slot, pid in enumerate(rng.choice(sorted(pool), PEOPLE, replace=False)):
        cams = sorted(rng.choice(sorted(pool[int(pid)]), CAMERAS, replace=False))
        for k, cam in enumerate(cams, 1):
            crops = pool[int(pid)][int(cam)]
            chosen[example_name(slot, k)] = crops[int(rng.integers(len(crops)))]
    return chosen


def right_on_every_pair(chosen: dict[str, Path], pairs: list[tuple[str, str]]) -> bool:
    from reid_core import ReID

    reid = ReID.load(engine="fp32")  # the shipped weights, with test-time flip as the app runs them
    for a, b in pairs:
        c = reid.compare(Image.open(chosen[a]).convert("RGB"), Image.open(chosen[b]).convert("RGB"))
        if c.same != (identity(a) == identity(b)) or abs(c.score - c.threshold) < MARGIN:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "market1501"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "people"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root, out = Path(args.data), Path(args.out)
    if not (root / "query").is_dir():
        print(f"{root}: no Market-1501 query/ folder here; pass --data", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from app import EXAMPLE_PAIRS

    pool, rng = candidates(root), np.random.default_rng(args.seed)
    for tries in range(1, 101):  # noqa: B007 - the draw kept is reported below
        chosen = draw(pool, rng)
        if right_on_every_pair(chosen, EXAMPLE_PAIRS):
            break
    else:
        print("no draw of 100 gave the right verdict on every example pair", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    for name, src in chosen.items():
        Image.open(src).convert("RGB").save(out / name, optimize=True)  # the crop as it is, in PNG
    with open(out / "sources.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["example", "market1501_file"])
        w.writerows((name, f"{src.parent.name}/{src.name}") for name, src in sorted(chosen.items()))
    print(f"wrote {len(chosen)} crops of {PEOPLE} Market-1501 test identities to {out} (draw {tries} of the "
          f"seeded generator; a draw with a wrong or marginal verdict on an example pair is skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
