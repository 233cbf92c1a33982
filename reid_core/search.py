"""A search gallery on the command line: the same gallery file (SQLite, reid_core.gallery) as the app's.

    python -m reid_core.search add   --gallery G.sqlite FILES_OR_ZIPS...     # pictures stored in the gallery
    python -m reid_core.search build --gallery G.sqlite --embeddings E.safetensors [--approx ivf]
    python -m reid_core.search query --gallery G.sqlite --image IMG [--k 10] [--rerank]
    python -m reid_core.search info  --gallery G.sqlite
    python -m reid_core.search clear --gallery G.sqlite

`build` indexes a file written by `python -m reid_core.embed DIR --out E.safetensors` without re-embedding:
its rows point at the images where they are. `--approx ivf` keeps a FAISS IVF-Flat index in memory for
galleries of ~10^5 images and more (exact search is the default). `--rerank` re-ranks the top candidates
with k-reciprocal encoding. Opening a gallery with other weights than built it re-embeds it, in one
transaction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors import safe_open

from .api import ReID
from .embed import load_embeddings
from .gallery import Gallery, GalleryError
from .images import ImageError
from .index import APPROX_KINDS, RERANK_POOL
from .limits import Limits
from .model import WEIGHTS_HELP, WeightsError


def build(args: argparse.Namespace) -> int:
    emb, paths = load_embeddings(args.embeddings)
    with safe_open(str(args.embeddings), "np") as f:
        header = f.metadata() or {}
    reid = ReID.load(args.weights or header.get("weights"), "cpu")
    gallery = reid.gallery(args.gallery, approx=args.approx, nlist=args.nlist, nprobe=args.nprobe)
    if header.get("weights_id") not in (None, reid.weights_id):
        raise ValueError(f"{args.embeddings}: embedded by other weights than {args.weights or header.get('weights')}")
    added = gallery.add_paths(paths, emb)
    print(f"{args.gallery}: {added} rows added ({len(paths) - added} already there), {len(gallery)} in all")
    return 0


def add(args: argparse.Namespace) -> int:
    limits = Limits.from_env()
    gallery = ReID.load(args.weights, "cpu").gallery(args.gallery, limits)
    report = gallery.add_files(args.files)
    if report.skipped or report.warnings:
        print(report.describe(), file=sys.stderr)
    print(f"{args.gallery}: added {report.added}, skipped {len(report.skipped)}, {len(gallery)} in all")
    return 0 if report.added or not report.skipped else 1


def query(args: argparse.Namespace) -> int:
    reid = ReID.load(args.weights, "cpu")
    gallery = open_existing(reid, args.gallery)
    matches = gallery.search(reid.embed(args.image), args.k, rerank=args.rerank, exact=args.exact)
    for rank, m in enumerate(matches, start=1):
        print(f"{rank:3d}  {m.score:.4f}  {m.path or m.name}")
    return 0


def open_existing(reid: ReID, path: str) -> Gallery:
    if not Path(path).is_file():
        raise GalleryError(f"{path}: no gallery file (make one with `add` or `build`)")
    return reid.gallery(path)


def info(args: argparse.Namespace) -> int:
    gallery = open_existing(ReID.load(args.weights, "cpu"), args.gallery)
    rows = gallery.entries()
    stored = sum(r["path"] is None for r in rows)
    print(f"{args.gallery}: {len(rows)} images ({stored} stored pictures, {len(rows) - stored} paths), "
          f"index {gallery.index_settings or 'exact'}")
    return 0


def clear(args: argparse.Namespace) -> int:
    gone = open_existing(ReID.load(args.weights, "cpu"), args.gallery).clear()
    print(f"{args.gallery}: removed {gone} images")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    cmds = {}
    for name, fn, text in (("add", add, "add images and/or zips of images (pictures kept in the gallery)"),
                           ("build", build, "add the rows of a file written by python -m reid_core.embed"),
                           ("query", query, "the gallery images most like one query image"),
                           ("info", info, "what the gallery holds"), ("clear", clear, "remove every image")):
        cmds[name] = p = sub.add_parser(name, help=text)
        p.set_defaults(run=fn)
        p.add_argument("--gallery", required=True, help="the gallery file (created by add/build)")
        p.add_argument("--weights", help=WEIGHTS_HELP)
    cmds["add"].add_argument("files", nargs="+")
    b = cmds["build"]
    b.add_argument("--embeddings", required=True)
    b.add_argument("--approx", choices=APPROX_KINDS, help="approximate FAISS index (default: exact search)")
    b.add_argument("--nlist", type=int, help="IVF cells (default ~4 sqrt(gallery size))")
    b.add_argument("--nprobe", type=int, help="IVF cells scanned per query (default nlist/16)")
    q = cmds["query"]
    q.add_argument("--image", required=True)
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--rerank", action="store_true", help=f"k-reciprocal re-ranking of the top {RERANK_POOL}")
    q.add_argument("--exact", action="store_true", help="exact search even on an approximate index")
    args = ap.parse_args(argv)
    try:
        return args.run(args)
    except (GalleryError, ImageError, WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
