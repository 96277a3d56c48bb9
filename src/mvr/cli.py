"""The ``mvr`` command line: one verb per stage of the pipeline, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mvr import __version__
from mvr.errors import MvrError

EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 an item or the command failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (MvrError, ValueError) as exc:
        print(f"mvr: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("mvr: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    from mvr.features import DEFAULT_BACKBONE, DEFAULT_MAX_KEYFRAMES
    from mvr.search import DEFAULT_FUSION, DEFAULT_METRICS, FUSIONS, METRICS, SEARCH_MODALITIES

    parser = argparse.ArgumentParser(prog="mvr", description="Content-based music video retrieval.")
    parser.add_argument("--version", action="version", version=f"mvr {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def catalog_option(sub: argparse.ArgumentParser) -> None:
        default = os.environ.get("MVR_CATALOG")
        sub.add_argument("--catalog", type=Path, default=default, required=default is None,
                         help="catalog folder (default: $MVR_CATALOG)")

    def preset_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--preset", choices=("default", "paper"), default=None,
                         help="paper: the study's setup (ResNet-152 on every I-frame, raw concatenation, its"
                              " metrics, holdout protocol); explicit options override it")

    def visual_options(sub: argparse.ArgumentParser) -> None:
        preset_option(sub)
        sub.add_argument("--backbone", default=None,
                         help=f"visual CNN (default: the catalog's, or {DEFAULT_BACKBONE} for a new one)")
        sub.add_argument("--weights", type=Path, default=None, help="the backbone's weights file")
        sub.add_argument("--max-keyframes", type=int, default=None,
                         help=f"keyframes per video, spread evenly (default {DEFAULT_MAX_KEYFRAMES}; 0 = all)")

    index = verbs.add_parser("index", help="add videos (files, folders, URLs, manifests) to a catalog")
    index.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="video file, folder, http(s) URL, CSV manifest or the study's JSON manifest")
    catalog_option(index)
    index.add_argument("--label", help="label for items that have none from a manifest")
    visual_options(index)
    index.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    index.add_argument("--jobs", type=_positive_int, default=1,
                       help="videos processed at once, each in its own worker process (default 1)")
    index.set_defaults(run=run_index)

    query = verbs.add_parser("query", help="recommend the catalog videos most similar to a video")
    query.add_argument("source", metavar="SOURCE", help="video file or http(s) URL")
    catalog_option(query)
    query.add_argument("--modality", choices=SEARCH_MODALITIES, default="audio")
    query.add_argument("--metric", choices=METRICS, default=None,
                       help="distance metric (default per modality: "
                            + ", ".join(f"{m} {d}" for m, d in DEFAULT_METRICS.items()) + ")")
    query.add_argument("--fusion", choices=FUSIONS, default=None,
                       help=f"how fused search combines the modalities (default {DEFAULT_FUSION})")
    query.add_argument("--exact", action="store_true",
                       help="rank every candidate exactly (large catalogs otherwise use compact vectors first)")
    query.add_argument("-k", type=_positive_int, default=5, help="how many recommendations (default 5)")
    query.add_argument("--json", action="store_true", help="print JSON")
    visual_options(query)
    query.set_defaults(run=run_query)

    listing = verbs.add_parser("list", help="list the catalog's videos")
    catalog_option(listing)
    listing.add_argument("--label", help="only videos with this label")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=run_list)

    features = verbs.add_parser("features", help="print one video's aggregated feature vector")
    features.add_argument("source", metavar="SOURCE", help="video or audio file")
    features.add_argument("--modality", choices=("audio", "visual"), default="audio")
    features.add_argument("--json", action="store_true", help="print JSON")
    visual_options(features)
    features.set_defaults(run=run_features)

    serve = verbs.add_parser("serve", help="run the dashboard and REST API over a catalog")
    catalog_option(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; the API has no login)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--allow-private-urls", action="store_true",
                       help="let URL queries fetch from loopback, private and link-local addresses")
    serve.add_argument("--workers", type=_positive_int, default=2, help="queries processed at once (default 2)")
    serve.add_argument("--queue-limit", type=_positive_int, default=8,
                       help="queries that may wait for a worker before the server answers 503 (default 8)")
    serve.add_argument("--max-upload-mb", type=_positive_int, default=512,
                       help="largest uploaded file, and largest download of a URL query (default 512)")
    serve.set_defaults(run=run_serve)

    evaluate = verbs.add_parser("evaluate", help="precision@k of every modality and metric on the catalog's labels")
    catalog_option(evaluate)
    evaluate.add_argument("-k", type=_positive_int, default=5, help="recommendations per query (default 5)")
    preset_option(evaluate)
    evaluate.add_argument("--protocol", choices=("loo", "holdout"), default=None,
                          help="loo: every labelled video queries all others (default); holdout: the study's,"
                               " 5 held-out queries per label (default with --preset paper)")
    evaluate.add_argument("--queries", type=Path, metavar="DIR",
                          help="a catalog of labelled query videos (the study's validation set) to query this one"
                               " with, instead of a --protocol")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--csv", type=Path, metavar="FILE", help="also write the results as CSV")
    evaluate.add_argument("--plots", type=Path, metavar="DIR",
                          help="also draw one bar chart per modality (PNG), like the study's figures 2-4")
    evaluate.set_defaults(run=run_evaluate)

    dataset = verbs.add_parser("dataset", help="build a labelled benchmark collection from open media")
    dataset_verbs = dataset.add_subparsers(dest="dataset_verb", required=True, metavar="VERB")
    build = dataset_verbs.add_parser("build", help="assemble labelled music videos and a manifest.csv")
    build.add_argument("out", type=Path, metavar="DIR")
    build.add_argument("--mode", choices=("coupled", "mixed", "factorial"), default="coupled")
    build.add_argument("--size", choices=("small", "full"), default="small")
    build.set_defaults(run=run_dataset_build)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _open_catalog(folder: Path, create: bool = True):
    """``Catalog.open``, imported when a verb needs it: ``mvr features`` starts without sqlite."""
    from mvr.catalog import Catalog

    return Catalog.open(folder, create=create)


def _preset(args: argparse.Namespace):
    from mvr.presets import PRESETS

    return PRESETS[args.preset or "default"]


def _visual_settings(args: argparse.Namespace):
    """The visual settings the command line asks for (a preset, then explicit options), or None: the catalog's."""
    from dataclasses import replace

    if args.preset is None and args.backbone is None and args.max_keyframes is None and args.weights is None:
        return None
    chosen = _preset(args).visual
    if args.backbone is not None:
        chosen = replace(chosen, backbone=args.backbone)
    if args.max_keyframes is not None:
        chosen = replace(chosen, max_keyframes=args.max_keyframes or None)
    return replace(chosen, weights=args.weights)


def run_index(args: argparse.Namespace) -> int:
    """``mvr index``: add sources to the catalog, one line per item, a summary at the end."""
    from mvr.collection import Outcome, index_sources

    def show(outcome: Outcome) -> None:
        if outcome.status == "failed":
            print(f"failed   {outcome.source}: {outcome.reason}", file=sys.stderr)
        elif not args.quiet:
            where = f"#{outcome.video.id} {outcome.video.title}" if outcome.video else outcome.source
            note = f" ({outcome.reason})" if outcome.reason else ""
            print(f"{outcome.status:<8} {where}{note}", file=sys.stderr)

    with _open_catalog(args.catalog) as catalog:
        report = index_sources(catalog, args.sources, label=args.label, settings=_visual_settings(args),
                               on_outcome=show, jobs=args.jobs)
        print(f"{report.summary()}; the catalog holds {len(catalog)} videos")
    return EXIT_FAILED if report.count("failed") else 0


def run_query(args: argparse.Namespace) -> int:
    """``mvr query``: print the top-k recommendations as a table or JSON."""
    from mvr.search import recommend

    with _open_catalog(args.catalog, create=False) as catalog:
        preset = _preset(args)
        found = recommend(catalog, args.source, modality=args.modality,
                          metric=args.metric or preset.metrics[args.modality], k=args.k,
                          settings=_visual_settings(args), fusion=args.fusion or preset.fusion, exact=args.exact)
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return 0
    fusion = args.fusion or _preset(args).fusion
    if found.modality == "fused" and fusion == "late":
        # Late fusion adds standardised distances: the score is relative to this query's candidates.
        measure = f"late fusion of {found.metric} distances, standardised score: lower is closer"
    else:
        measure = f"{found.metric} distance"
    print(f"{found.modality} recommendations for {found.query['title']} ({measure})")
    rows = [(str(m.rank), m.video.title, m.video.label or "", f"{m.distance:.6g}") for m in found.matches]
    _print_table(("rank", "title", "label", "distance"), rows)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """``mvr list``: the catalog's videos."""
    with _open_catalog(args.catalog, create=False) as catalog:
        videos = catalog.videos(label=args.label)
    if args.json:
        print(json.dumps([video.to_dict() for video in videos], indent=2))
        return 0
    rows = [(str(v.id), v.title, v.label or "", f"{v.duration:.1f}", ",".join(v.modalities)) for v in videos]
    _print_table(("id", "title", "label", "duration", "vectors"), rows)
    return 0


def run_features(args: argparse.Namespace) -> int:
    """``mvr features``: one file's aggregated vector of one modality."""
    from mvr.features import VisualSettings, extract_features

    settings = _visual_settings(args) or VisualSettings()
    features = extract_features(Path(args.source), modalities=(args.modality,), settings=settings)
    extractor, vector = features.vectors[args.modality]
    if args.json:
        backbone = settings.backbone if args.modality == "visual" else None
        print(json.dumps({"modality": args.modality, "backbone": backbone, "extractor": extractor,
                          "dims": int(vector.size), "vector": [float(x) for x in vector]}))
    else:
        print(" ".join(f"{x:.8g}" for x in vector))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """``mvr serve``: the dashboard and REST API, until interrupted."""
    try:
        from mvr.web import MIB, ServiceSettings, serve
    except ImportError as exc:
        raise MvrError(f"mvr serve needs the web extra ({exc}); install it with: pip install 'mvr[web]'") from None

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mvr: warning: listening on {args.host}: anyone who reaches it can use the API (no login)",
              file=sys.stderr)
    limit = args.max_upload_mb * MIB
    serve(ServiceSettings(catalog=args.catalog, allow_private_urls=args.allow_private_urls, workers=args.workers,
                          queue_limit=args.queue_limit, max_upload_bytes=limit, max_download_bytes=limit),
          host=args.host, port=args.port)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``mvr evaluate``: score the catalog's own labels; the results are also kept in the catalog folder."""
    from mvr import evaluation

    protocol = args.protocol or (None if args.queries else _preset(args).protocol)
    with _open_catalog(args.catalog, create=False) as catalog, contextlib.ExitStack() as stack:
        queries = stack.enter_context(_open_catalog(args.queries, create=False)) if args.queries else None
        found = evaluation.evaluate(catalog, k=args.k, protocol=protocol, queries=queries)
    stored = evaluation.save(found, args.catalog)
    written = [stored]
    if args.csv:
        written.append(evaluation.write_csv(found, args.csv))
    if args.plots:
        written += evaluation.plot(found, args.plots)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        print(evaluation.title(found))
        _print_table(*evaluation.metric_table(found))
        print("\n* mvr's default, s the study's choice; tie: the metric gives every candidate the same distance\n")
        _print_table(*evaluation.summary_table(found))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run_dataset_build(args: argparse.Namespace) -> int:
    """``mvr dataset build``: the labelled benchmark collection and its manifest."""
    from mvr.dataset import build_collection

    manifest = build_collection(args.out, mode=args.mode, size=args.size)
    print(f"manifest: {manifest}")
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
