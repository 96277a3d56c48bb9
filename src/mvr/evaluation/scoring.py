"""Scoring rankings: precision@k and average precision of many queries at once, and the candidates' relevance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvr.errors import MvrError
from mvr.evaluation.protocols import holdout_queries
from mvr.index.base import METRICS
from mvr.retrieval.fusion import Fusion, Pool, distances
from mvr.retrieval.ranking import excluded_pairs, first_k
from mvr.retrieval.tuning import labelled_rows
from mvr.store import Video

# Queries are scored this many at a time, so that memory stays bounded on a large catalog.
_CHUNK = 256


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
    tied_at_cut : np.ndarray
        bool, ``(q,)``: the k-th candidate ties with one left out (ranked by mvr's rule: video id ascending).
    """

    hits: np.ndarray
    average_precision: np.ndarray
    degenerate: np.ndarray
    answerable: np.ndarray
    tied_at_cut: np.ndarray

    @staticmethod
    def concatenate(parts: list[QueryScores]) -> QueryScores:
        """The scores of several batches of queries, in order."""
        return QueryScores(*(np.concatenate([getattr(part, name) for part in parts])
                             for name in QueryScores.__dataclass_fields__))

    def subset(self, rows: np.ndarray) -> QueryScores:
        """The scores of the queries at ``rows`` (indices or a mask)."""
        return QueryScores(*(getattr(self, name)[rows] for name in QueryScores.__dataclass_fields__))


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
        ``(n,)`` video ids: equal distances are ranked by id, as :func:`mvr.retrieval.rank` does.
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
    return QueryScores(hits=hits, average_precision=average_precision, degenerate=degenerate, answerable=total > 0,
                       tied_at_cut=first_k(distances, k).tied_at_cut & ~degenerate)


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
    tied_at_cut: int = 0

    def to_dict(self) -> dict:
        """The JSON form of one result."""
        return {
            "method": self.method, "modality": self.modality, "metric": self.metric,
            "precision": _round(self.precision), "map": _round(self.map), "queries": self.queries,
            "degenerate": self.degenerate, "labels": {label: _round(p) for label, p in self.labels.items()},
            "chance": _round(self.chance), "tied_at_cut": self.tied_at_cut,
        }



@dataclass(frozen=True)
class QuerySet:
    """Who asks and what is ranked under one protocol: the queries, the candidates and which of them count.

    Attributes
    ----------
    vectors : dict
        space -> ``(q, dims)``: the queries' vectors.
    ranked : Pool
        The candidates.
    labels : np.ndarray
        object ``(q,)``: the queries' labels.
    rows : np.ndarray
        int ``(q,)``: each query's row in the catalog's pool (-1 for a query from another catalog).
    excluded, relevant : np.ndarray
        bool ``(q, n)``: candidates never ranked for the query (itself, its group); same-label candidates not
        excluded.
    answerable : np.ndarray
        bool ``(q,)``: the query has a relevant candidate (only those are scored).
    """

    vectors: dict[str, np.ndarray]
    ranked: Pool
    labels: np.ndarray
    rows: np.ndarray
    excluded: np.ndarray
    relevant: np.ndarray
    answerable: np.ndarray

    def chance(self, k: int) -> float:
        """The precision@k of a random ranking, averaged over the answerable queries (:func:`chance_precision`)."""
        return chance_precision(self.relevant[self.answerable], self.excluded[self.answerable], k)


def chance_precision(relevant: np.ndarray, excluded: np.ndarray, k: int) -> float:
    """The expected precision@k of a random ranking, averaged over the queries: the chance line of a chart.

    A query with ``m`` eligible candidates (not excluded: itself, its group), ``r`` of them relevant, expects
    ``min(k, m) * r / m`` relevant videos among its first k when they come in random order, so its precision@k is
    that over k: the share of relevant candidates, less when there are fewer than k candidates.

    Parameters
    ----------
    relevant : np.ndarray
        bool, ``(q, n)``: the candidate has the query's label and is not excluded.
    excluded : np.ndarray
        bool, ``(q, n)``: the candidate is never ranked for the query.
    k : int
        Recommendations per query.
    """
    eligible = (~excluded).sum(axis=1)
    expected = np.minimum(k, eligible) * relevant.sum(axis=1) / np.maximum(eligible, 1)
    return float(np.mean(expected / k))


def query_set(
    pool: Pool,
    videos: dict[int, Video],
    modality: str,
    protocol: str = "loo",
    queries: tuple[Pool, dict[int, Video]] | None = None,
) -> QuerySet:
    """The queries and candidates of ``protocol`` on ``pool`` (see :func:`score_candidates`).

    Raises
    ------
    MvrError
        When no query has a same-label candidate outside its own group.
    UsageError
        When ``holdout`` finds too few videos of a label.
    """
    described = labelled_rows(pool, videos)
    labels, groups, keys = described.labels, described.groups, described.keys
    ranked = np.arange(pool.ids.size)
    if protocol == "queries":
        query_pool, query_videos = queries
        described = labelled_rows(query_pool, query_videos)
        query_labels, query_groups, query_keys = described.labels, described.groups, described.keys
    else:
        query_pool, query_labels, query_groups, query_keys = pool, labels, groups, keys
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
    return QuerySet(vectors={space: matrix[asked] for space, matrix in query_pool.matrices.items()},
                    ranked=ranked_pool, labels=query_labels, rows=asked if protocol != "queries" else
                    np.full(asked.size, -1), excluded=excluded, relevant=relevant, answerable=answerable)


def score_queries(found: QuerySet, metric: str, fusion: Fusion | None, k: int,
                  rows: np.ndarray | None = None) -> QueryScores:
    """Rank the candidates for the queries at ``rows`` of ``found`` (by default all) and score the rankings."""
    rows = np.arange(found.labels.size) if rows is None else np.asarray(rows)
    return QueryScores.concatenate([
        score_rankings(distances({space: vectors[chunk] for space, vectors in found.vectors.items()},
                                 found.ranked, metric, fusion, found.excluded[chunk]).total,
                       found.relevant[chunk], found.ranked.ids, k)
        for chunk in (rows[start:start + _CHUNK] for start in range(0, rows.size, _CHUNK))
    ])


def summarise(scores: QueryScores, labels: np.ndarray, modality: str, metric: str, k: int, chance: float,
              method: str = "") -> Result:
    """One :class:`Result` from the scores of the answerable queries and their labels."""
    degenerate = bool(scores.degenerate.all())
    per_label = {str(label): None if degenerate else float(scores.hits[labels == label].mean() / k)
                 for label in sorted(set(labels))}
    return Result(
        method=method, modality=modality, metric=metric,
        precision=None if degenerate else float(scores.hits.sum() / (scores.hits.size * k)),
        map=None if degenerate else float(scores.average_precision.mean()),
        queries=int(scores.hits.size), degenerate=degenerate, labels=per_label, chance=chance,
        tied_at_cut=int(scores.tied_at_cut.sum()),
    )


def score_candidates(
    pool: Pool,
    videos: dict[int, Video],
    modality: str,
    k: int = 5,
    protocol: str = "loo",
    metrics: tuple[str, ...] = METRICS,
    queries: tuple[Pool, dict[int, Video]] | None = None,
    fusion: Fusion | None = None,
) -> list[Result]:
    """Score one pool (one search target, one fusion) with each metric; ``method`` is left empty.

    :func:`mvr.evaluation.evaluate` calls this for each method; call it with pools or fusions of your own making
    (other fusion weights, say) to measure them the same way.

    Parameters
    ----------
    pool : Pool
        From :meth:`mvr.retrieval.SearcherCache.pool`, or built by hand.
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
        For the ``queries`` protocol: the query videos' pool (same spaces) and their videos by id.
    fusion : Fusion, optional
        How the pool's spaces are combined; None for one space.

    Raises
    ------
    MvrError
        When no query has a same-label candidate outside its own group.
    UsageError
        When ``holdout`` finds too few videos of a label.
    """
    found = query_set(pool, videos, modality, protocol, queries)
    scored_labels = found.labels[found.answerable]
    return [summarise(score_queries(found, metric, fusion, k).subset(found.answerable), scored_labels, modality,
                      metric, k, found.chance(k))
            for metric in metrics]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


