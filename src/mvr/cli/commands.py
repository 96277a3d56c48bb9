"""The verbs of the ``mvr`` command: each reads its options, calls the Python API, and prints the outcome.

Configuration is read here, once (:meth:`mvr.config.RuntimeSettings.from_environment`), and passed down. Each verb
imports the stages it runs when it runs, so that ``mvr features`` does not load the catalog, scipy or the web
stack. Only mvr's own errors become one-line messages; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mvr.cli.parser import build_parser
from mvr.config import RuntimeSettings, prepare_process_environment
from mvr.errors import MediaError, MissingSpaceError, MvrError, UsageError
from mvr.features import SpaceOptions, VisualSettings
from mvr.ingest.policy import MIB, SourcePolicy
from mvr.presets import Preset, get_preset
from mvr.progress import note

if TYPE_CHECKING:
    from mvr.retrieval.discovery import Walk
    from mvr.retrieval.fusion import Fusion
    from mvr.retrieval.query import Recommendation
    from mvr.retrieval.tuning import Tuning
    from mvr.store import Catalog, Video

EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 an item or the command failed, 2 bad usage)."""
    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)
    try:
        prepare_process_environment()
        args.runtime = RuntimeSettings.from_environment()
        return args.run(args)
    except MvrError as exc:
        print(f"mvr: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("mvr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mvr list --json | head`): nothing more to say, and nothing to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _one_line(text: str) -> str:
    """A message on one line, whatever a file name in it holds."""
    return " ".join(text.splitlines())


def _preset(args: argparse.Namespace) -> Preset:
    return get_preset(args.preset)


def _requested_options(args: argparse.Namespace) -> dict[str, SpaceOptions] | None:
    """The extractor options the command line asks for (a preset, then explicit options); None: the catalog's."""
    if args.preset is None and args.backbone is None and args.max_keyframes is None and args.weights is None:
        return None
    options = dict(_preset(args).options)
    visual = options.get("visual", VisualSettings())
    if args.backbone is not None:
        visual = replace(visual, backbone=args.backbone)
    if args.max_keyframes is not None:
        visual = replace(visual, max_keyframes=args.max_keyframes or None)
    options["visual"] = replace(visual, weights=args.weights)
    return options


def _policy(args: argparse.Namespace) -> SourcePolicy:
    """The command line fetches for its user on the user's machine: local and private addresses too."""
    return SourcePolicy(allow_private=True, max_bytes=args.max_download_mb * MIB, deadline_s=args.download_deadline)


def run_index(args: argparse.Namespace) -> int:
    """``mvr index``: add sources to the catalog, one line per item, a summary at the end."""
    from mvr.ingest.pipeline import index_sources, update_spaces
    from mvr.ingest.sources import Outcome
    from mvr.store import Catalog

    def show(outcome: Outcome) -> None:
        if outcome.status == "failed":
            note(_one_line(f"failed   {outcome.source}: {outcome.reason}"))
        elif not args.quiet:
            where = f"#{outcome.video.id} {outcome.video.title}" if outcome.video else outcome.source
            why = f" ({outcome.reason})" if outcome.reason else ""
            note(_one_line(f"{outcome.status:<8} {where}{why}"))

    if not args.sources and not args.update:
        raise UsageError("index: give at least one SOURCE, or --update")
    spaces = _preset(args).spaces if args.preset else None
    # Without a line per item, --quiet shows a count line every few seconds where no bar can be drawn.
    progress = True if args.quiet else None
    made = not args.catalog.exists()  # a folder this run creates is removed again if nothing lands in it
    kept = False
    try:
        with Catalog.open(args.catalog) as catalog:
            reports = []
            if args.sources:
                reports.append(index_sources(catalog, args.sources, label=args.label,
                                             options=_requested_options(args), spaces=spaces, on_outcome=show,
                                             progress=progress, jobs=args.jobs, engine=args.engine,
                                             runtime=args.runtime, policy=_policy(args),
                                             engine_options={"address": args.address,
                                                             "media_store": args.media_store}))
                if not reports[0].outcomes:
                    raise UsageError(f"{' '.join(args.sources)}: no media files found (looked for "
                                     "video and audio files, CSV and JSON manifests)")
            if args.update:
                reports.append(update_spaces(catalog, spaces=spaces, options=_requested_options(args),
                                             progress=progress, on_outcome=show, runtime=args.runtime))
            for report in reports:
                print(f"{report.summary()}; the catalog holds {len(catalog)} videos")
            kept = len(catalog) > 0
    finally:
        if made and not kept:
            shutil.rmtree(args.catalog, ignore_errors=True)
    return EXIT_FAILED if any(report.count("failed") for report in reports) else 0


def run_query(args: argparse.Namespace) -> int:
    """``mvr query``: print the top-k recommendations as a table or JSON."""
    from mvr.retrieval.query import recommend
    from mvr.store import Catalog

    def show(stage: str) -> None:
        if stage == "downloading":  # the one stage that can take minutes before anything else is said
            note(f"{args.source}: downloading (at most {args.max_download_mb} MiB, {args.download_deadline} s)")

    with Catalog.open(args.catalog, create=False) as catalog:
        try:
            found = recommend(catalog, args.source, k=args.k, options=_requested_options(args), exact=args.exact,
                              runtime=args.runtime, policy=_policy(args), on_stage=show,
                              **_search(args, _preset(args) if args.preset else None))
        except MissingSpaceError as exc:
            if not exc.available:
                raise
            instead = " or ".join(f"--modality {space}" for space in exc.available)
            raise MediaError(exc.item, f"{exc.reason}; search what it has: {instead}") from None
        pairs = _keyframe_pairs(args, catalog, found) if args.keyframes is not None else {}
    for said in found.notes:
        print(_one_line(f"note: {said}"), file=sys.stderr)
    if found.tied_at_cut:
        print(f"note: the result at rank {len(found.matches)} ties with candidates left out; ties go by video id"
              " ascending", file=sys.stderr)
    if args.json:
        answer = found.to_dict(True if args.explain else None)
        for row in answer["results"]:
            if row["rank"] in pairs:
                row["keyframes"] = pairs[row["rank"]]
        print(json.dumps(answer, indent=2))
        return 0
    measure = _measure(found.fusion, found.metric, found.weights_from)
    if found.fusion is not None and found.fusion.method != "concat":
        # Late fusion adds standardised distances: the score is relative to this query's candidates.
        measure += "; similarity: the share of candidates farther away"
        rows = [(str(m.rank), m.video.title, m.video.label or "", f"{100 * m.similarity:.0f}%",
                 "; ".join(filter(None, [_why_text(m.why), _pair_text(pairs.get(m.rank))]))) for m in found.matches]
        header = ("rank", "title", "label", "similarity", "why")
    elif pairs:
        rows = [(str(m.rank), m.video.title, m.video.label or "", f"{m.distance:.6g}", _pair_text(pairs.get(m.rank)))
                for m in found.matches]
        header = ("rank", "title", "label", "distance", "why")
    else:
        rows = [(str(m.rank), m.video.title, m.video.label or "", f"{m.distance:.6g}") for m in found.matches]
        header = ("rank", "title", "label", "distance")
    print(f"{found.modality} recommendations for {found.query['title']} ({measure})")
    _print_table(header, rows)
    return 0


def _keyframe_pairs(args: argparse.Namespace, catalog: Catalog, found: Recommendation) -> dict[int, dict]:
    """``mvr query --keyframes DIR``: each result's nearest keyframe pair, its two pictures written to DIR; rank ->
    the pair's JSON, the pictures named by path. The query's media is the catalog's copy or the file given."""
    from mvr.features import build_extractors
    from mvr.retrieval.keyframe_match import matching_keyframes_of
    from mvr.store import catalog_options

    if "visual" not in (found.fusion.spaces if found.fusion is not None else (found.modality,)):
        raise UsageError(f"--keyframes: a {found.modality} search does not read the pictures; search --modality"
                         " visual or fused")
    known = found.query.get("id")
    query = catalog.get(known).media_path if known is not None else Path(args.source)
    if not query.is_file():
        raise UsageError(f"--keyframes: {args.source}: the query's media is neither a catalog video nor a local"
                         " file (a downloaded one is gone once it is searched)")
    extractor = build_extractors(catalog_options(catalog, ["visual"]), args.runtime)["visual"]
    pairs = matching_keyframes_of(query, [match.video.media_path for match in found.matches], extractor)
    args.keyframes.mkdir(parents=True, exist_ok=True)
    written = {}
    for match, pair in zip(found.matches, pairs, strict=True):
        row = pair.to_dict()
        for side, jpeg in (("query", pair.query_jpeg), ("result", pair.result_jpeg)):
            path = args.keyframes / f"rank-{match.rank}-{side}.jpg"
            path.write_bytes(jpeg)
            row[f"{side}_image"] = str(path)
        written[match.rank] = row
    return written


def _pair_text(pair: dict | None) -> str:
    """A result's keyframe pair in the why column."""
    if pair is None:
        return ""
    return (f"frames {pair['query_keyframe'] + 1}~{pair['result_keyframe'] + 1} (cosine {pair['similarity']:.2f})")


def _search(args: argparse.Namespace, preset: Preset | None = None) -> dict:
    """The search the options ask for, as the API's ``modality``, ``metric``, ``fusion`` and ``weights``.

    A preset's own metric (the study's, for the fused search) counts as named; without one, the tuned metrics
    stay in place.
    """
    from mvr.retrieval.targets import FUSED
    from mvr.retrieval.tuning import parse_weights

    weights = parse_weights(args.fusion_weights) if args.fusion_weights else None
    if weights and args.modality != FUSED:
        raise UsageError("--fusion-weights weighs the spaces of a fused search: add --modality fused")
    return {"modality": args.modality, "metric": args.metric or (preset.metrics[args.modality] if preset else None),
            "fusion": args.fusion or (preset or get_preset(None)).fusion, "weights": weights}


def _measure(fusion: Fusion | None, metric: str, weights_from: str) -> str:
    """What a search's distances are, in a few words."""
    if fusion is None or fusion.method == "concat":
        return f"{metric} distance"
    weights_text = ", ".join(f"{space} {weight:.2g}" for space, weight in fusion.weights.items())
    metrics_text = "/".join(dict.fromkeys(fusion.metric_of(space, metric) for space in fusion.spaces))
    projected = "".join(f", {space} in its {found.method.upper()} projection"
                        for space, found in fusion.projections.items())
    return f"{fusion.method} fusion of {metrics_text} distances, {weights_from} weights {weights_text}{projected}"


def run_mix(args: argparse.Namespace) -> int:
    """``mvr mix``: a play queue that flows from the seeds, as a table, JSON or an M3U playlist."""
    from mvr.retrieval.discovery import build_mix, find_video
    from mvr.store import Catalog

    with Catalog.open(args.catalog, create=False) as catalog:
        seeds = [find_video(catalog, name, policy=_policy(args)).id for name in args.seeds]
        avoid = [find_video(catalog, name, policy=_policy(args)).id for name in args.avoid]
        found = build_mix(catalog, seeds=seeds, avoid=avoid, n=args.n, **_search(args))
    title = f"{found.modality} mix from {_titles(found.seeds)}"
    if found.avoid:
        title += f", away from {_titles(found.avoid)}"
    _show_walk(args, found, title, ("#", "title", "label", "group", "distance"),
               [(str(step.position), step.video.title, step.video.label or "", step.video.group or "",
                 _number_text(step.distance)) for step in found.items])
    return 0


def run_path(args: argparse.Namespace) -> int:
    """``mvr path``: videos from A to B, each near the one before, as a table, JSON or an M3U playlist."""
    from mvr.retrieval.discovery import build_path, find_video
    from mvr.store import Catalog

    with Catalog.open(args.catalog, create=False) as catalog:
        start, end = (find_video(catalog, name, policy=_policy(args)).id for name in (args.start, args.end))
        found = build_path(catalog, start=start, end=end, n=args.n, **_search(args))
    _show_walk(args, found, f"{found.modality} path from {_titles([found.start])} to {_titles([found.end])}",
               ("#", "title", "label", "distance", "to end"),
               [(str(step.position), step.video.title, step.video.label or "", _number_text(step.distance),
                 _number_text(step.to_end)) for step in found.items])
    return 0


def _show_walk(args: argparse.Namespace, found: Walk, title: str, header: Sequence[str],
               rows: Sequence[Sequence[str]]) -> None:
    """A mix's or a path's notes (on stderr), then its JSON, or its table and, with ``--m3u``, its playlist."""
    for said in found.notes:
        print(_one_line(f"note: {said}"), file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    if args.m3u is not None:
        try:
            args.m3u.write_text(found.to_m3u(), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.m3u}: cannot write the playlist ({exc.strerror or exc})") from None
        print(f"wrote {args.m3u} ({len(found.items)} videos)", file=sys.stderr)
    print(f"{title} ({_measure(found.fusion, found.metric, found.weights_from)}; distance: from the previous video)")
    _print_table(header, rows)


def _titles(videos: Sequence[Video]) -> str:
    return ", ".join(f"#{video.id} {video.title}" for video in videos)


def _number_text(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _why_text(why: dict[str, dict]) -> str:
    """A fused match's reasons in a few words: each space's similarity, and the group that weighs most in it."""
    words = []
    for space, reason in why.items():
        text = f"{space} {100 * reason['similarity']:.0f}%"
        if reason["groups"]:
            group, share = max(reason["groups"].items(), key=lambda item: item[1])
            kind = "of similarity" if reason["groups_measure"].endswith("similarity") else "of distance"
            text += f" ({group} {100 * share:.0f}% {kind})"
        words.append(text)
    return "; ".join(words)


def run_tune(args: argparse.Namespace) -> int:
    """``mvr tune``: choose the fused search's weights and metrics from the labels, and keep them in the catalog."""
    from mvr.retrieval.tuning import TUNING_METRICS, store_tuning, tune_catalog
    from mvr.store import Catalog

    with Catalog.open(args.catalog, create=False) as catalog:
        found = tune_catalog(catalog, k=args.k, metrics=TUNING_METRICS if args.choose_metrics else None,
                             projections=args.projections, progress=True)
        if found.tuned:
            store_tuning(catalog, found)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return 0
    print(found.reason)
    _print_table(("space", "weight", "metric", "projection"),
                 [(space, f"{weight:.2f}", found.metrics[space], _projection_text(found, space))
                  for space, weight in found.weights.items()])
    if found.tuned:
        print(f"leave-one-out precision@{found.k} on these labels: {found.score:.3f} (equal weights"
              f" {found.equal_score:.3f}); fused queries now use these weights (mvr evaluate measures them by"
              " cross-validation)")
    return 0


def _projection_text(found: Tuning, space: str) -> str:
    """A space's learned projection in ``mvr tune``'s table: kept or not, and the out-of-fold figures."""
    scores = found.projection_scores.get(space)
    if scores is None:
        return "-"
    verdict = "lda" if space in found.projections else "none"
    return f"{verdict} (P@{found.k} out of fold {scores['lda']:.3f}, stored vectors {scores['stored']:.3f})"


def run_map(args: argparse.Namespace) -> int:
    """``mvr map``: the catalog's videos placed in 2-D, as a table or JSON, and with ``--out`` as a PNG."""
    from mvr.retrieval.collection_map import collection_map, draw_map
    from mvr.store import Catalog

    def show(videos: int) -> None:
        note(f"{args.space}: laying out {videos} videos (t-SNE), kept in the catalog for the next map")

    with Catalog.open(args.catalog, create=False) as catalog:
        found = collection_map(catalog, args.space, on_compute=show)
    if args.out is not None:
        draw_map(found, args.out)
        print(f"wrote {args.out} ({len(found.points)} videos)", file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return 0
    measure = _measure(found.fusion, found.metric, found.weights_from)
    print(f"{found.target} map of {len(found.points)} videos ({measure}; {found.method['name']},"
          f" {found.method['library']})")
    _print_table(("id", "title", "label", "x", "y"),
                 [(str(p.video.id), p.video.title, p.video.label or "", f"{p.x:.3f}", f"{p.y:.3f}")
                  for p in found.points])
    return 0


def run_reindex(args: argparse.Namespace) -> int:
    """``mvr reindex``: build the catalog's search indexes afresh, one line per index as it is built."""
    from mvr.index.build import Rebuilt, reindex
    from mvr.retrieval.query import catalog_fusion
    from mvr.retrieval.targets import FUSED, default_metrics
    from mvr.store import Catalog

    def show(done: Rebuilt) -> None:
        note(f"{done.space} {done.metric}: {done.kind}, {done.rows} vectors, {done.seconds:.1f} s", file=sys.stdout)

    with Catalog.open(args.catalog, create=False) as catalog:
        # The fused search's searchers too (cosine, or the tuned metrics), lest its first query build them.
        fusion, _ = catalog_fusion(catalog, FUSED)
        fused = {space: {fusion.searcher_metric(space, default_metrics()[FUSED])}
                 for space, weight in fusion.weights.items() if weight > 0}
        reindex(catalog, (args.space,) if args.space else None, threads=args.runtime.threads, progress=True,
                on_rebuilt=show, metrics=fused)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """``mvr list``: the catalog's videos."""
    from mvr.store import Catalog

    with Catalog.open(args.catalog, create=False) as catalog:
        videos = catalog.videos(label=args.label)
    if args.json:
        print(json.dumps([video.to_dict() for video in videos], indent=2))
        return 0
    rows = [(str(v.id), v.title, v.label or "", f"{v.duration:.1f}", ",".join(v.spaces)) for v in videos]
    _print_table(("id", "title", "label", "duration", "vectors"), rows)
    return 0


def run_features(args: argparse.Namespace) -> int:
    """``mvr features``: one file's aggregated vector in one feature space."""
    from mvr.features import build_extractors, extract_features, get_space
    from mvr.media import is_url

    if is_url(args.source):
        raise UsageError(f"{args.source}: mvr features reads local files; download it first"
                         " (mvr query and mvr index take URLs)")
    space = get_space(args.modality)
    options = (_requested_options(args) or {}).get(space.name, space.default_options)
    extractors = build_extractors({space.name: options}, args.runtime)
    features = extract_features(Path(args.source), extractors, threads=args.runtime.threads)
    extractor, vector = features.vectors[space.name]
    if args.json:
        backbone = options.backbone if isinstance(options, VisualSettings) else None
        print(json.dumps({"modality": space.name, "backbone": backbone, "extractor": extractor,
                          "dims": int(vector.size), "vector": [float(x) for x in vector]}))
    else:
        print(" ".join(f"{x:.8g}" for x in vector))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """``mvr serve``: the dashboard and REST API, until interrupted."""
    try:
        from mvr.web import ServiceSettings, serve
    except ImportError as exc:
        raise MvrError(f"mvr serve needs the web extra ({exc}); install it with: pip install 'mvr[web]'") from None

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mvr: warning: listening on {args.host}: anyone who reaches it can use the API (no login)",
              file=sys.stderr)
    limit = args.max_upload_mb * MIB
    serve(ServiceSettings(catalog=args.catalog, allow_private_urls=args.allow_private_urls, workers=args.workers,
                          queue_limit=args.queue_limit, max_upload_bytes=limit, max_download_bytes=limit,
                          runtime=args.runtime, allowed_hosts=tuple(args.allowed_host or ()),
                          allow_indexing=args.allow_indexing),
          host=args.host, port=args.port)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``mvr evaluate``: score the catalog's own labels; the results are also kept in the catalog folder."""
    from mvr.evaluation import plots, report
    from mvr.evaluation.run import evaluate
    from mvr.store import Catalog

    protocol = args.protocol or (None if args.queries else _preset(args).protocol)
    with Catalog.open(args.catalog, create=False) as catalog, contextlib.ExitStack() as stack:
        queries = stack.enter_context(Catalog.open(args.queries, create=False)) if args.queries else None
        found = evaluate(catalog, k=args.k, protocol=protocol, queries=queries, progress=True)
    written = [report.save(found, args.catalog)]
    if args.csv:
        written.append(report.write_csv(found, args.csv))
    if args.plots:
        written += plots.plot(found, args.plots)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        print(report.title(found))
        _print_table(*report.metric_table(found))
        print("\n* mvr's default, s the study's choice; tie: the metric gives every candidate the same distance\n")
        _print_table(*report.summary_table(found))
        print(report.ties_line(found))
        if found.tuned is not None:
            print("\nthe tuned fusion's folds (weights chosen on the other folds' labels):")
            _print_table(*report.folds_table(found))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run_dataset_build(args: argparse.Namespace) -> int:
    """``mvr dataset build``: the labelled benchmark collection and its manifest."""
    from mvr.dataset.build import build_collection

    manifest = build_collection(args.out, mode=args.mode, size=args.size, cache_dir=args.runtime.cache_dir)
    print(f"manifest: {manifest}")
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


COMMANDS = {
    "index": run_index, "query": run_query, "list": run_list, "features": run_features, "serve": run_serve,
    "evaluate": run_evaluate, "tune": run_tune, "dataset build": run_dataset_build, "reindex": run_reindex,
    "mix": run_mix, "path": run_path, "map": run_map,
}
"""What runs each verb."""


if __name__ == "__main__":
    sys.exit(main())
