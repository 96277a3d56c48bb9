"""The argument parser: every verb and option, with the choices read from mvr's registries.

Every argument has a help text, and every option with a default ends its help with it, written one way,
``(default: VALUE)``, by :class:`HelpFormatter`. An option whose default is decided later (the catalog's backbone, a
modality's metric) has None as its value here and says in words what it will be.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvr import __version__
from mvr.dataset.spec import MODES, SIZES
from mvr.evaluation.protocols import PROTOCOLS
from mvr.features import space_names
from mvr.features.cnn import DEFAULT_BACKBONE, DEFAULT_MAX_KEYFRAMES, backbone_names
from mvr.index.base import METRICS
from mvr.ingest.executors import EXECUTORS
from mvr.presets import PRESETS
from mvr.progress import LINE_INTERVAL_S
from mvr.retrieval.targets import (
    DEFAULT_FUSION,
    DEFAULT_MIX_LENGTH,
    DEFAULT_PATH_LENGTH,
    FUSIONS,
    default_metrics,
    search_targets,
)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, where every argument that takes a value and has a default ends with ``(default: VALUE)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return f"{text} (default: %(default)s)" if text and shows_default(action) else text


def shows_default(action: argparse.Action) -> bool:
    """Whether an argument's help ends with its default: it takes a value and has a default (an empty list, as
    a repeatable option starts with, is none; its help says so in words where it matters)."""
    return (action.nargs != 0 and action.default is not None and action.default is not argparse.SUPPRESS
            and action.default != [])


class Parser(argparse.ArgumentParser):
    """mvr's parsers, the verbs' too (:meth:`add_subparsers` makes parsers of this class): :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(commands: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser of every verb; ``commands`` maps each verb (``index``, ``dataset build``...) to what runs it."""
    parser = Parser(prog="mvr", description="Content-based music video retrieval.")
    parser.add_argument("--version", action="version", version=f"mvr {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB", help="what to do")

    index = verbs.add_parser("index", help="add videos (files, folders, URLs, manifests) to a catalog")
    index.add_argument("sources", nargs="*", metavar="SOURCE",
                       help="video file, folder, http(s) URL, CSV manifest or the study's JSON manifest")
    index.add_argument("--update", action="store_true",
                       help="also compute the feature spaces the catalog's videos lack, from the media it holds")
    _catalog_option(index)
    index.add_argument("--label", help="label for items that have none from a manifest")
    _visual_options(index)
    index.add_argument("--quiet", action="store_true",
                       help="no line per item: only failures, the progress (a bar on a terminal, else a count"
                            f" line every {LINE_INTERVAL_S:.0f} s) and the summary")
    index.add_argument("--jobs", type=_positive_int, default=1,
                       help="videos processed at once, each in its own worker process")
    index.add_argument("--engine", choices=tuple(EXECUTORS), default="local",
                       help="where the work runs: local, this machine; ray, a Ray cluster with one extraction"
                            " actor per CPU slot, where --jobs is unused")
    index.add_argument("--address", default=None,
                       help="with --engine ray: the cluster's head HOST:PORT, or auto (default: Ray's own rule)")
    index.add_argument("--media-store", type=Path, default=None, metavar="DIR",
                       help="with --engine ray: a folder all nodes share; media go there, not through Ray"
                            " (default: through Ray)")
    _download_options(index)
    index.set_defaults(run=commands["index"])

    query = verbs.add_parser("query", help="recommend the catalog videos most similar to a video")
    query.add_argument("source", metavar="SOURCE", help="video file or http(s) URL")
    _catalog_option(query)
    _search_options(query)
    query.add_argument("--explain", action="store_true",
                       help="with --json: each result's similarity and why (always there for tuned or explicit"
                            " weights)")
    query.add_argument("--exact", action="store_true",
                       help="rank every candidate exactly (large catalogs otherwise use compact vectors first)")
    query.add_argument("-k", type=_positive_int, default=5, help="how many recommendations")
    query.add_argument("--json", action="store_true", help="print JSON")
    query.add_argument("--keyframes", type=Path, default=None, metavar="DIR",
                       help="for a search that reads the pictures: each result's keyframe nearest to one of the"
                            " query's, written to DIR as rank-N-query.jpg and rank-N-result.jpg and named in the"
                            " why column and the JSON (decodes every result's keyframes again: seconds)")
    _visual_options(query)
    _download_options(query)
    query.set_defaults(run=commands["query"])

    seed_help = ("a catalog video: its id, its source as mvr list shows it, or a file or URL whose content the"
                 " catalog holds")
    mix = verbs.add_parser("mix", help="a play queue that flows from seed videos of the catalog")
    mix.add_argument("seeds", nargs="+", metavar="SEED", help=f"{seed_help}; the queue starts with the first")
    mix.add_argument("--avoid", nargs="+", action="extend", default=[], metavar="SEED",
                     help="catalog videos to be less like (same forms as SEED; repeatable); never played, nor other"
                          " excerpts of their tracks (default: none)")
    mix.add_argument("-n", type=_positive_int, default=DEFAULT_MIX_LENGTH,
                     help="how many videos, the first seed included")
    _walk_options(mix)
    mix.set_defaults(run=commands["mix"])

    path = verbs.add_parser("path", help="a path of videos from one catalog video to another")
    path.add_argument("start", metavar="A", help=f"the first video: {seed_help}")
    path.add_argument("end", metavar="B", help="the last video, in the same forms")
    path.add_argument("-n", type=_at_least_two, default=DEFAULT_PATH_LENGTH,
                      help="how many videos, A and B included")
    _walk_options(path)
    path.set_defaults(run=commands["path"])

    reindex = verbs.add_parser("reindex", help="rebuild the catalog's saved search indexes")
    _catalog_option(reindex)
    reindex.add_argument("--space", choices=space_names(), default=None,
                         help="only this feature space's (default: every space the catalog holds)")
    reindex.set_defaults(run=commands["reindex"])

    listing = verbs.add_parser("list", help="list the catalog's videos")
    _catalog_option(listing)
    listing.add_argument("--label", help="only videos with this label")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=commands["list"])

    features = verbs.add_parser("features", help="print one video's aggregated feature vector")
    features.add_argument("source", metavar="SOURCE", help="video or audio file")
    features.add_argument("--modality", choices=space_names(), default="audio", help="feature space")
    features.add_argument("--json", action="store_true", help="print JSON")
    _visual_options(features)
    features.set_defaults(run=commands["features"])

    serve = verbs.add_parser("serve", help="run the dashboard and REST API over a catalog")
    _catalog_option(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 127.0.0.1 is this machine only (the API has no login)")
    serve.add_argument("--port", type=int, default=8000, help="port")
    serve.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                       help="a host name the server answers to besides this machine's (repeat it; '*' for any):"
                            " for a deliberate public deployment")
    serve.add_argument("--allow-private-urls", action="store_true",
                       help="let URL queries fetch from loopback, private and link-local addresses")
    serve.add_argument("--allow-indexing", action="store_true",
                       help="let the page and POST /api/videos add videos (uploads or URLs, under the query limits)"
                            " to the catalog; without it the server only reads the catalog")
    serve.add_argument("--workers", type=_positive_int, default=2, help="queries processed at once")
    serve.add_argument("--queue-limit", type=_positive_int, default=8,
                       help="queries that may wait for a worker before the server answers 503")
    serve.add_argument("--max-upload-mb", type=_positive_int, default=512,
                       help="largest uploaded file, and largest download of a URL query, in MiB")
    serve.set_defaults(run=commands["serve"])

    evaluate = verbs.add_parser("evaluate", help="precision@k of every modality and metric on the catalog's labels")
    _catalog_option(evaluate)
    evaluate.add_argument("-k", type=_positive_int, default=5, help="recommendations per query")
    _preset_option(evaluate)
    protocols = tuple(p for p in PROTOCOLS if p != "queries")  # that one is --queries
    evaluate.add_argument("--protocol", choices=protocols, default=None,
                          help="loo: every labelled video queries all others; holdout: the study's, 5 held-out"
                               " queries per label (default: loo, or the --preset's: holdout for paper)")
    evaluate.add_argument("--queries", type=Path, metavar="DIR",
                          help="a catalog of labelled query videos (the study's validation set) to query this one"
                               " with, instead of a --protocol")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--csv", type=Path, metavar="FILE", help="also write the results as CSV")
    evaluate.add_argument("--plots", type=Path, metavar="DIR",
                          help="also draw one bar chart per modality (PNG), like the study's figures 2-4")
    evaluate.set_defaults(run=commands["evaluate"])

    tune = verbs.add_parser("tune", help="choose the fused search's weights and metrics from the catalog's labels")
    _catalog_option(tune)
    tune.add_argument("-k", type=_positive_int, default=5, help="the precision@k to maximise")
    tune.add_argument("--choose-metrics", action="store_true",
                      help="also choose each space's metric from the labels (by default each keeps its own: on small"
                           " catalogs the choice costs precision, docs/evaluation.md)")
    tune.add_argument("--no-projections", dest="projections", action="store_false",
                      help="learn no projection in the audio spaces (by default each space whose registry entry"
                           " takes one gets an LDA projection where it ranks better out of fold)")
    tune.add_argument("--json", action="store_true", help="print JSON")
    tune.set_defaults(run=commands["tune"])

    collection_map = verbs.add_parser("map", help="a 2-D map of the catalog's videos (t-SNE of a search's distances)")
    _catalog_option(collection_map)
    collection_map.add_argument("--space", choices=search_targets(), default="audio",
                                help="whose distances place the videos: a feature space, or fused (the fused search's,"
                                     " with the catalog's tuned weights)")
    collection_map.add_argument("--out", type=Path, metavar="FILE", default=None,
                                help="also draw the map as a PNG, the videos coloured by label (default: none)")
    collection_map.add_argument("--json", action="store_true",
                                help="print JSON: the points (id, title, label, x, y) and how they were placed"
                                     " (default: a table)")
    collection_map.set_defaults(run=commands["map"])

    dataset = verbs.add_parser("dataset", help="build a labelled benchmark collection from open media")
    dataset_verbs = dataset.add_subparsers(dest="dataset_verb", required=True, metavar="VERB",
                                           help="what to do with the collections")
    build = dataset_verbs.add_parser("build", help="assemble labelled music videos and a manifest.csv")
    build.add_argument("out", type=Path, metavar="DIR",
                       help="where the items (DIR/items/) and DIR/manifest.csv go; a re-run finishes what is"
                            " missing")
    build.add_argument("--mode", choices=MODES, default="coupled",
                       help="how the pictures relate to the label (the music's style): coupled, they follow it;"
                            " mixed, mostly; factorial, never")
    build.add_argument("--size", choices=tuple(SIZES), default="small",
                       help=f"small: {SIZES['small']} items per label; full: up to {SIZES['full']}")
    build.set_defaults(run=commands["dataset build"])
    return parser


def _catalog_option(sub: argparse.ArgumentParser) -> None:
    default = os.environ.get("MVR_CATALOG")  # the parser is the command line's edge: it reads the environment
    sub.add_argument("--catalog", type=Path, default=default, required=default is None,
                     help="catalog folder; $MVR_CATALOG gives the default")


def _search_options(sub: argparse.ArgumentParser) -> None:
    targets = search_targets()
    sub.add_argument("--modality", choices=targets, default="audio",
                     help="what to compare: a feature space, or fused (several spaces at once)")
    sub.add_argument("--metric", choices=METRICS, default=None,
                     help="distance metric (default: the modality's, "
                          + ", ".join(f"{m} {d}" for m, d in default_metrics().items())
                          + "; for fused, the tuned ones after mvr tune)")
    sub.add_argument("--fusion", choices=FUSIONS, default=None,
                     help=f"how fused search combines the spaces (default: {DEFAULT_FUSION}, or the --preset's)")
    sub.add_argument("--fusion-weights", dest="fusion_weights", metavar="SPACE=W,...", default=None,
                     help="fused search's weights, e.g. " + ",".join(f"{s}=0.5" for s in space_names()[:2])
                          + " (default: the catalog's, from mvr tune, else equal)")


def _walk_options(sub: argparse.ArgumentParser) -> None:
    """The options of mix and path, after their own: the catalog, the search, the output, seeds' downloads."""
    _catalog_option(sub)
    _search_options(sub)
    output = sub.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON (default: a table)")
    output.add_argument("--m3u", type=Path, metavar="FILE", default=None,
                        help="also write an M3U playlist of the media files (absolute paths) to FILE (default: none)")
    _download_options(sub)


def _preset_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--preset", choices=tuple(PRESETS), default=None,
                     help="a named setup: default, mvr's; paper, the study's (ResNet-152 on every I-frame, raw"
                          " concatenation, its metrics, holdout protocol); explicit options override its parts"
                          " (default: mvr's, the catalog's extractor options kept)")


def _visual_options(sub: argparse.ArgumentParser) -> None:
    _preset_option(sub)
    sub.add_argument("--backbone", default=None,
                     help=f"visual CNN: {', '.join(backbone_names())} (default: the catalog's, else"
                          f" {DEFAULT_BACKBONE})")
    sub.add_argument("--weights", type=Path, default=None, metavar="FILE",
                     help="the backbone's weights file (default: the backbone's own ImageNet weights)")
    sub.add_argument("--max-keyframes", type=int, default=None, metavar="N",
                     help=f"keyframes per video, spread evenly, 0 for all (default: the catalog's, else"
                          f" {DEFAULT_MAX_KEYFRAMES})")


def _download_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--max-download-mb", type=_positive_int, default=1024,
                     help="largest download of a URL, every hop included, in MiB")
    sub.add_argument("--download-deadline", type=_positive_int, default=600, metavar="SECONDS",
                     help="longest a URL's download may take in all")


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _at_least_two(text: str) -> int:
    return _whole_number(text, 2)


def _whole_number(text: str, least: int) -> int:
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}")
    return value
