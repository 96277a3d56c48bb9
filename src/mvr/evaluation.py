"""Retrieval evaluation: precision@k and mean average precision by label, for every modality and metric.

A catalog whose videos carry labels (a music genre or style) is its own benchmark: each labelled video is a query,
and a recommendation is correct when it has the query's label. Two protocols:

``loo`` (leave one out)
    Every labelled video queries all the others.
``holdout`` (the study's, section 4)
    :data:`HOLDOUT_PER_LABEL` videos per label are held out as queries (chosen by :func:`holdout_queries`, the same
    ones on every machine), and only the other videos are ranked.
``queries``
    The labelled videos of another catalog (the study's validation videos, say) query this one.

In both, a query's own group (two excerpts of one song, say) is never ranked for it: a near-copy is not a
recommendation. Precision@k is the study's number, correct recommendations / (queries x k); the mean average
precision also weighs where in the whole ranking the same-label videos come. A metric that gives a query every
candidate the same distance (or none finite) has not answered it: that query scores 0, and a metric that answers
no query at all is marked ``degenerate`` and has no precision.

Every run is scored twice, for mvr's own method and for the study's (raw vectors, raw concatenation for ``fused``,
see :mod:`mvr.search`), so that the two can be compared on the same data.

The latest run is stored in the catalog folder as ``DIR/evaluation.json`` (:data:`RESULTS_FILE`, replaced whole
by each run): the JSON that ``mvr evaluate --json`` prints::

    {
      "k": 5,
      "protocol": "loo",                        # or "holdout", or "queries"
      "catalog": "/path/to/DIR",
      "queries": null,                          # with protocol "queries": the catalog the queries came from
      "videos": 215,                            # videos in the catalog at the time
      "created": "2025-01-31T12:00:00+00:00",   # UTC, ISO 8601
      "defaults": {"mvr": {"audio": "braycurtis", "visual": "cosine", "fused": "cosine"},
                   "study": {"audio": "euclidean", "visual": "euclidean", "fused": "braycurtis"}},
      "fusion": {"mvr": "late", "study": "concat", "weights": {"audio": 0.5, "visual": 0.5}},
      "results": [                              # every method x modality x metric of mvr.search.METRICS
        {"method": "mvr",                       # or "study"
         "modality": "audio",                   # audio, visual or fused
         "metric": "braycurtis",
         "precision": 0.598,                    # precision@k; null when degenerate
         "map": 0.441,                          # mean average precision; null when degenerate
         "queries": 215,                        # queries scored
         "degenerate": false,                   # true: the metric tied every candidate of every query
         "labels": {"ambient": 0.667, ...},     # precision@k of each label's queries; null when degenerate
         "chance": 0.25},                       # the precision of a random ranking
        ...
      ]
    }

``defaults`` names each method's own metric per modality: the row to show for "mvr" against "the study".
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mvr.catalog import Catalog, Video
from mvr.errors import CatalogError, MvrError
from mvr.search import (
    DEFAULT_FUSION, DEFAULT_METRICS, FUSION_WEIGHTS, METRICS, SEARCH_MODALITIES, STUDY_METRICS, Candidates,
    candidates, distance_matrix,
)

PROTOCOLS = ("loo", "holdout", "queries")
HOLDOUT_PER_LABEL = 5
RESULTS_FILE = "evaluation.json"


@dataclass(frozen=True)
class QueryScores:
    """How well each query of one ranking was answered.

    Attributes
    ----------
    hits : np.ndarray
        int, ``(q,)``: same-label videos among the first k.
    average_precision : np.ndarray
        float, ``(q,)``: the average, over the same-label candidates, of the precision at each one's rank.
    degenerate : np.ndarray
        bool, ``(q,)``: the metric gave every candidate the same distance, or none a finite one.
    answerable : np.ndarray
        bool, ``(q,)``: at least one candidate has the query's label (a query without is not scored).
    """

    hits: np.ndarray
    average_precision: np.ndarray
    degenerate: np.ndarray
    answerable: np.ndarray


def score_rankings(distances: np.ndarray, relevant: np.ndarray, pool_ids: np.ndarray, k: int) -> QueryScores:
    """Score the rankings of many queries at once.

    Parameters
    ----------
    distances : np.ndarray
        ``(q, n)`` distances from each query to each candidate; NaN where a candidate is excluded for that query
        (itself, its group) or its distance is not a finite number.
    relevant : np.ndarray
        bool, ``(q, n)``: the candidate has the query's label and is not excluded.
    pool_ids : np.ndarray
        ``(n,)`` video ids: equal distances are ranked by id, as :func:`mvr.search.rank` does.
    k : int
        How many recommendations each query gets.
    """
    finite = np.isfinite(distances)
    key = np.where(finite, distances, np.inf)
    highest = np.where(finite, distances, -np.inf).max(axis=1, initial=-np.inf)
    count = finite.sum(axis=1)
    degenerate = (count == 0) | ((count > 1) & (key.min(axis=1, initial=np.inf) == highest))
    order = np.lexsort((np.broadcast_to(pool_ids, distances.shape), key), axis=-1)
    # Only ranked candidates (finite distance) can be hits; a degenerate ranking answers nothing.
    found = np.take_along_axis(relevant & finite, order, axis=1) & ~degenerate[:, None]
    hits = found[:, :k].sum(axis=1)
    total = relevant.sum(axis=1)
    precision_at = np.cumsum(found, axis=1) / np.arange(1, found.shape[1] + 1)
    average_precision = (precision_at * found).sum(axis=1) / np.maximum(total, 1)
    return QueryScores(hits=hits, average_precision=average_precision, degenerate=degenerate, answerable=total > 0)


def excluded_pairs(
    query_keys: np.ndarray, query_groups: np.ndarray, pool_keys: np.ndarray, pool_groups: np.ndarray
) -> np.ndarray:
    """bool ``(q, n)``: candidates never ranked for a query, namely itself and the videos of its group.

    Keys identify the videos (content hashes, so that a query from another catalog is recognised too). Groups are
    strings, or None for a video with no group (then only the video itself is excluded).
    """
    same_group = (query_groups[:, None] == pool_groups[None, :]) & np.not_equal(query_groups, None)[:, None]
    return same_group | (query_keys[:, None] == pool_keys[None, :])


def holdout_queries(
    keys: np.ndarray, labels: np.ndarray, groups: np.ndarray, per_label: int = HOLDOUT_PER_LABEL
) -> np.ndarray:
    """Indices of the held-out queries: ``per_label`` videos of each label, from as many groups as possible.

    The choice depends only on ``keys`` (content hashes), never on indexing order, so the same media give the same
    queries in any catalog. Each label's videos are taken in order of the SHA-256 of their key, skipping a video
    whose group already gave a query until every group has given one: two excerpts of one song would be one query
    asked twice.

    Raises
    ------
    ValueError
        When a label has fewer than ``per_label + 1`` videos (one must stay in the pool).
    """
    chosen = []
    for label in sorted({str(label) for label in labels if label is not None}):
        members = np.flatnonzero(labels == label)
        if members.size <= per_label:
            raise ValueError(
                f"holdout needs more than {per_label} videos per label; '{label}' has {members.size}"
                " (use --protocol loo)"
            )
        members = sorted(members, key=lambda i: hashlib.sha256(str(keys[i]).encode()).hexdigest())
        seen: dict[object, int] = {}
        # The n-th video of a group comes after the first videos of all groups.
        rounds = []
        for index in members:
            group = groups[index] if groups[index] is not None else ("video", index)
            rounds.append((seen.get(group, 0), len(rounds), index))
            seen[group] = seen.get(group, 0) + 1
        chosen += [index for _, _, index in sorted(rounds)[:per_label]]
    return np.array(sorted(chosen), dtype=np.int64)



@dataclass(frozen=True)
class Result:
    """The scores of one method, modality and metric over all queries (see the module's JSON format).

    ``chance`` is the precision a random ranking would have on average: the share of same-label videos among each
    query's candidates, averaged over the queries.
    """

    method: str
    modality: str
    metric: str
    precision: float | None
    map: float | None
    queries: int
    degenerate: bool
    labels: dict[str, float | None]
    chance: float

    def to_dict(self) -> dict:
        """The JSON form of one result."""
        return {
            "method": self.method, "modality": self.modality, "metric": self.metric,
            "precision": _round(self.precision), "map": _round(self.map), "queries": self.queries,
            "degenerate": self.degenerate, "labels": {label: _round(p) for label, p in self.labels.items()},
            "chance": _round(self.chance),
        }


@dataclass
class Evaluation:
    """Every result of one ``mvr evaluate`` run, with what was measured and when."""

    k: int
    protocol: str
    catalog: str
    videos: int
    created: str
    results: list[Result]
    queries: str | None = None

    def result(self, method: str, modality: str, metric: str | None = None) -> Result:
        """One result; ``metric`` defaults to the method's own choice for the modality."""
        metric = metric or METHODS[method].metrics[modality]
        return next(r for r in self.results if (r.method, r.modality, r.metric) == (method, modality, metric))

    def to_dict(self) -> dict:
        """The JSON of ``mvr evaluate --json`` and of ``DIR/evaluation.json``."""
        return {
            "k": self.k, "protocol": self.protocol, "catalog": self.catalog, "queries": self.queries,
            "videos": self.videos, "created": self.created,
            "defaults": {name: dict(method.metrics) for name, method in METHODS.items()},
            "fusion": {**{name: method.fusion for name, method in METHODS.items()}, "weights": dict(FUSION_WEIGHTS)},
            "results": [result.to_dict() for result in self.results],
        }


@dataclass(frozen=True)
class Method:
    """How a method searches: its fusion and its metric per modality."""

    fusion: str
    metrics: dict[str, str]


METHODS = {
    "mvr": Method(fusion=DEFAULT_FUSION, metrics=DEFAULT_METRICS),
    "study": Method(fusion="concat", metrics=STUDY_METRICS),
}

# Queries are scored this many at a time, so that memory stays bounded on a large catalog.
_CHUNK = 256


def evaluate(
    catalog: Catalog, k: int = 5, protocol: str | None = None, queries: Catalog | None = None
) -> Evaluation:
    """Score every method, modality and metric on the catalog's labelled videos, from their stored vectors.

    Parameters
    ----------
    catalog : Catalog
        The videos to rank (and, for ``loo`` and ``holdout``, the queries).
    k : int
        Recommendations per query.
    protocol : str, optional
        One of :data:`PROTOCOLS`; by default ``queries`` when ``queries`` is given, else ``loo``.
    queries : Catalog, optional
        For the ``queries`` protocol: a catalog of labelled query videos, indexed with the same extractors.

    Raises
    ------
    MvrError
        When there is no labelled query, or no query has a same-label video outside its group; CatalogError when
        the queries' vectors come from other extractors than the catalog's.
    ValueError
        For an unknown protocol, k below 1, ``queries`` without its protocol or the reverse, or a label with too
        few videos for ``holdout``.
    """
    protocol = protocol or ("queries" if queries is not None else "loo")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; choose one of: {', '.join(PROTOCOLS)}")
    if (protocol == "queries") != (queries is not None):
        raise ValueError("a catalog of queries goes with the 'queries' protocol, and that protocol needs one")
    if k < 1:
        raise ValueError("k must be at least 1")
    videos = {video.id: video for video in catalog.videos()}
    asking = catalog if queries is None else queries
    if not any(video.label for video in asking.videos()):
        raise MvrError(f"{asking.root}: no labelled video to evaluate with (give labels with --label or a"
                       " manifest's label column when indexing)")
    if queries is not None:
        _check_extractors(catalog, queries)
        query_videos = {video.id: video for video in queries.videos()}
    results = []
    for modality in SEARCH_MODALITIES:
        # Both methods search the same raw vectors of one modality; they differ only in how they fuse them.
        scored: dict[str, list[Result]] = {}
        for name, method in METHODS.items():
            fusion = method.fusion if modality == "fused" else "single"
            if fusion not in scored:
                pool = candidates(catalog, modality, method.fusion)
                asked = None if queries is None else (candidates(queries, modality, method.fusion), query_videos)
                scored[fusion] = score_candidates(pool, videos, modality, k, protocol, queries=asked)
            results += [replace(result, method=name) for result in scored[fusion]]
    return Evaluation(k=k, protocol=protocol, catalog=str(catalog.root), videos=len(videos),
                      created=datetime.now(UTC).isoformat(timespec="seconds"), results=results,
                      queries=None if queries is None else str(queries.root))


def _check_extractors(catalog: Catalog, queries: Catalog) -> None:
    for modality in ("audio", "visual"):
        ours, theirs = catalog.setting(f"extractor.{modality}"), queries.setting(f"extractor.{modality}")
        if ours and theirs and ours != theirs:
            raise CatalogError(
                f"{queries.root}: its {modality} vectors come from '{theirs}', those of {catalog.root} from"
                f" '{ours}'; index the queries with the catalog's settings (the same --preset or --backbone)"
            )


def score_candidates(
    pool: Candidates,
    videos: dict[int, Video],
    modality: str,
    k: int = 5,
    protocol: str = "loo",
    metrics: tuple[str, ...] = METRICS,
    queries: tuple[Candidates, dict[int, Video]] | None = None,
) -> list[Result]:
    """Score one set of candidates (one modality, one fusion) with each metric; ``method`` is left empty.

    :func:`evaluate` calls this for each method; call it with candidates of your own making (other fusion weights,
    say) to measure them the same way.

    Parameters
    ----------
    pool : Candidates
        From :func:`mvr.search.candidates`, or built by hand.
    videos : dict
        Video id -> :class:`mvr.catalog.Video`, for the labels, groups and content hashes.
    modality : str
        The modality the results are reported under.
    k : int
        Recommendations per query.
    protocol : str
        One of :data:`PROTOCOLS`.
    metrics : tuple of str
        The metrics to score.
    queries : tuple, optional
        For the ``queries`` protocol: the query videos' candidates (same fusion) and their videos by id.

    Raises
    ------
    MvrError
        When no query has a same-label candidate outside its own group.
    ValueError
        When ``holdout`` finds too few videos of a label.
    """
    labels, groups, keys = _describe(pool, videos)
    ranked = np.arange(pool.ids.size)
    if protocol == "queries":
        query_pool, query_videos = queries
        query_matrix = query_pool.matrix
        query_labels, query_groups, query_keys = _describe(query_pool, query_videos)
    else:
        query_matrix, query_labels, query_groups, query_keys = pool.matrix, labels, groups, keys
    asked = np.flatnonzero(np.not_equal(query_labels, None))
    if protocol == "holdout":
        asked = asked[holdout_queries(keys[asked], labels[asked], groups[asked])]
        ranked = np.setdiff1d(ranked, asked)
    query_labels, query_groups, query_keys = query_labels[asked], query_groups[asked], query_keys[asked]
    ranked_pool = pool if ranked.size == pool.ids.size else pool.subset(ranked)
    excluded = excluded_pairs(query_keys, query_groups, keys[ranked], groups[ranked])
    relevant = (query_labels[:, None] == labels[ranked][None, :]) & ~excluded
    answerable = relevant.any(axis=1)
    if not answerable.any():
        raise MvrError(f"{modality}: no query has a same-label video outside its own group to find")
    chance = float(np.mean(relevant.sum(axis=1)[answerable] / (~excluded).sum(axis=1)[answerable]))
    scored_labels = query_labels[answerable]
    results = []
    for metric in metrics:
        parts = [
            score_rankings(distance_matrix(query_matrix[asked[chunk]], ranked_pool, metric, excluded[chunk]),
                           relevant[chunk], ranked_pool.ids, k)
            for chunk in (slice(start, start + _CHUNK) for start in range(0, query_labels.size, _CHUNK))
        ]
        hits = np.concatenate([part.hits for part in parts])[answerable]
        average_precision = np.concatenate([part.average_precision for part in parts])[answerable]
        degenerate = bool(np.concatenate([part.degenerate for part in parts])[answerable].all())
        per_label = {str(label): None if degenerate else float(hits[scored_labels == label].mean() / k)
                     for label in sorted(set(scored_labels))}
        results.append(Result(
            method="", modality=modality, metric=metric,
            precision=None if degenerate else float(hits.sum() / (hits.size * k)),
            map=None if degenerate else float(average_precision.mean()),
            queries=int(hits.size), degenerate=degenerate, labels=per_label, chance=chance,
        ))
    return results


def _describe(pool: Candidates, videos: dict[int, Video]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels, groups (None where missing) and content hashes of the candidates, as arrays."""
    found = [videos[i] for i in pool.ids]
    return (np.array([video.label or None for video in found], dtype=object),
            np.array([video.group or None for video in found], dtype=object),
            np.array([video.content_hash for video in found], dtype=object))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# output ---------------------------------------------------------------------------------------------------------


def save(evaluation: Evaluation, folder: Path) -> Path:
    """Write ``folder / RESULTS_FILE`` whole or not at all (the dashboard may read it at any time)."""
    path = Path(folder) / RESULTS_FILE
    staged = path.with_name(f".{RESULTS_FILE}.{os.getpid()}.part")
    staged.write_text(json.dumps(evaluation.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(staged, path)
    return path


def write_csv(evaluation: Evaluation, path: Path) -> Path:
    """One row per method, modality and metric, with a ``precision_<label>`` column per label."""
    labels = sorted({label for result in evaluation.results for label in result.labels})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["k", "protocol", "method", "modality", "metric", "precision", "map", "queries",
                         "degenerate", "chance", *(f"precision_{label}" for label in labels)])
        for r in evaluation.results:
            row = r.to_dict()
            writer.writerow([evaluation.k, evaluation.protocol, r.method, r.modality, r.metric,
                             _cell(row["precision"]), _cell(row["map"]), r.queries, r.degenerate,
                             _cell(row["chance"]), *(_cell(row["labels"].get(label)) for label in labels)])
    return Path(path)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def title(evaluation: Evaluation) -> str:
    """One line: what was measured, how, and on what."""
    return (f"precision@{evaluation.k} / mean average precision, {_PROTOCOL_NAMES[evaluation.protocol]},"
            f" {evaluation.results[0].queries} queries, {evaluation.videos} videos in {evaluation.catalog}")


def metric_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: precision@k / mAP of each metric (rows) and modality (columns), the chance level last.

    ``tie`` marks a degenerate metric; ``*`` mvr's default, ``s`` the study's choice. Audio and visual have one
    column (both methods rank the same vectors), fused one per method.
    """
    columns = [("mvr", m) for m in SEARCH_MODALITIES] + [("study", "fused")]
    header = ["metric"] + [_column_name(method, modality) for method, modality in columns]
    rows = []
    for metric in METRICS:
        cells = [metric]
        for method, modality in columns:
            marks = "".join(mark for name, mark in (("mvr", "*"), ("study", "s"))
                            if METHODS[name].metrics[modality] == metric and (modality != "fused" or name == method))
            cells.append(f"{_score(evaluation.result(method, modality, metric))} {marks}".rstrip())
        rows.append(cells)
    rows.append(["(chance)"] + [f"{evaluation.result(method, m).chance:.2f}" for method, m in columns])
    return header, rows


def summary_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: each modality searched mvr's way and the study's way, side by side."""
    header = ["modality", "mvr", "the study's method"]
    return header, [[modality] + [_described(evaluation.result(method, modality)) for method in METHODS]
                    for modality in SEARCH_MODALITIES]


_PROTOCOL_NAMES = {"loo": "leave-one-out", "holdout": f"holdout ({HOLDOUT_PER_LABEL} queries per label)",
                   "queries": "queries from another catalog"}


def _column_name(method: str, modality: str) -> str:
    if modality != "fused":
        return modality
    return f"fused ({METHODS[method].fusion}{', study' if method == 'study' else ''})"


def _score(result: Result) -> str:
    return "tie" if result.degenerate else f"{result.precision:.3f} / {result.map:.3f}"


def _described(result: Result) -> str:
    fusion = f" {METHODS[result.method].fusion}" if result.modality == "fused" else ""
    return f"{result.metric}{fusion}: {_score(result)}"


def plot(evaluation: Evaluation, folder: Path) -> list[Path]:
    """Draw ``folder/<protocol>-<modality>.png``: precision@k per metric, like the study's figures 2-4.

    The audio and visual charts have one bar per metric (both methods rank the same vectors); the fused chart has
    mvr's fusion and the study's side by side. A degenerate metric gets no bar, only the word ``tie``.

    Raises
    ------
    MvrError
        When matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MvrError("mvr evaluate --plots needs matplotlib: pip install 'mvr[plots]'") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for modality in SEARCH_MODALITIES:
        methods = list(METHODS) if modality == "fused" else ["mvr"]
        figure, axes = pyplot.subplots(figsize=(7.5, 3.4), dpi=80)
        width = 0.8 / len(methods)
        for offset, method in enumerate(methods):
            found = [evaluation.result(method, modality, metric) for metric in METRICS]
            positions = np.arange(len(METRICS)) + (offset - (len(methods) - 1) / 2) * width
            heights = [0.0 if r.degenerate else r.precision for r in found]
            label = _column_name(method, modality) if modality == "fused" else None
            bars = axes.bar(positions, heights, width, label=label, color=_COLOURS[offset])
            for bar, result in zip(bars, found, strict=True):
                # A fused bar is one method's; a single-modality bar stands for both methods.
                chosen = [name for name in ((method,) if modality == "fused" else METHODS)
                          if METHODS[name].metrics[modality] == result.metric]
                text = "\n".join(["tie" if result.degenerate else f"{result.precision:.2f}", *chosen])
                axes.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                              va="bottom", fontsize=6, fontweight="bold" if chosen else "normal")
        axes.axhline(found[0].chance, color="grey", linestyle=":", linewidth=1, label="chance")
        axes.set_xticks(np.arange(len(METRICS)), METRICS, rotation=35, ha="right", fontsize=8)
        axes.set_ylim(0, 1.08)
        axes.set_ylabel(f"precision@{evaluation.k}")
        axes.set_title(f"{modality} retrieval, {_PROTOCOL_NAMES[evaluation.protocol]}, {found[0].queries} queries"
                       " (mvr, study: each one's choice)", fontsize=9)
        axes.legend(fontsize=7, loc="upper right")
        figure.tight_layout()
        path = folder / f"{evaluation.protocol}-{modality}.png"
        figure.savefig(path)
        pyplot.close(figure)
        written.append(path)
    return written


_COLOURS = ("tab:blue", "tab:orange")
