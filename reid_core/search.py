"""Build a gallery index from embeddings, then query it with an image.

    python -m reid_core.embed DIR --out gallery.safetensors
    python -m reid_core.search build --embeddings gallery.safetensors --out INDEXDIR [--approx ivf]
    python -m reid_core.search query --index INDEXDIR --image IMG [--k 10] [--rerank]

`--approx ivf` trains a FAISS IVF-Flat index (for galleries of ~10^5 images and more; exact search is the
default). `--rerank` re-ranks the top candidates with k-reciprocal encoding (exact for galleries up to
index.RERANK_POOL images, within the top RERANK_POOL candidates above that).
"""

from __future__ import annotations

import argparse
import sys
import time

from .api import ReID
from .data import ImageError
from .embed import load_embeddings
from .index import APPROX_KINDS, RERANK_POOL, GalleryIndex, IndexLoadError
from .model import WeightsError


def build(args: argparse.Namespace) -> int:
    emb, paths = load_embeddings(args.embeddings)
    index = GalleryIndex(emb.shape[1], args.approx, args.nlist, args.nprobe)
    index.add(emb, paths, [{"path": p} for p in paths])
    t0 = time.perf_counter()
    if args.approx:
        index.train()
    index.save(args.out)
    kind = f"IVF-Flat, nlist {index.nlist}, nprobe {index.nprobe}" if args.approx else "exact"
    print(f"{args.out}: {len(index)} x {index.dim} ({kind}), built and saved in {time.perf_counter() - t0:.1f} s")
    return 0


def query(args: argparse.Namespace) -> int:
    index = GalleryIndex.load(args.index)
    if args.nprobe:
        index.nprobe = args.nprobe
    reid = ReID.load(args.weights, "cpu")
    q = reid.embed(args.image)
    if q.shape[1] != index.dim:
        raise ValueError(f"{args.weights}: {q.shape[1]}-d embeddings, but {args.index} holds {index.dim}-d ones "
                         "(built with other weights?)")
    scores, meta = index.search(q, args.k, exact=args.exact, rerank=args.rerank)
    for rank, (score, row) in enumerate(zip(scores[0], meta[0], strict=False), start=1):
        print(f"{rank:3d}  {score:.4f}  {row.get('path', row['id'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="index a file written by python -m reid_core.embed")
    b.add_argument("--embeddings", required=True)
    b.add_argument("--out", required=True, help="index folder (created or replaced)")
    b.add_argument("--approx", choices=APPROX_KINDS, help="approximate FAISS index (default: exact search)")
    b.add_argument("--nlist", type=int, help="IVF cells (default ~sqrt(gallery size))")
    b.add_argument("--nprobe", type=int, help="IVF cells scanned per query (default nlist/16; stored)")
    q = sub.add_parser("query", help="the gallery images most like one query image")
    q.add_argument("--index", required=True)
    q.add_argument("--image", required=True)
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--rerank", action="store_true", help=f"k-reciprocal re-ranking of the top {RERANK_POOL}")
    q.add_argument("--exact", action="store_true", help="exact search even on an approximate index")
    q.add_argument("--nprobe", type=int, help="override the stored nprobe for this query")
    q.add_argument("--weights", default=None, help="the weights the gallery was embedded with (default: ReID's)")
    args = ap.parse_args(argv)
    try:
        return build(args) if args.command == "build" else query(args)
    except (IndexLoadError, ImageError, WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
