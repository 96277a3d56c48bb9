"""Scoring rankings: precision@k and average precision of many queries at once, and the candidates' relevance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvr.errors import MvrError
from mvr.evaluation.protocols import holdout_queries
from mvr.index.base import METRICS
from mvr.retrieval.fusion import Fusion, Pool, distances
from mvr.retrieval.ranking import excluded_pairs
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
    return QueryScores(hits=hits, average_precision=average_precision, degenerate=degenerate, answerable=total > 0)


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
    labels, groups, keys = _describe(pool, videos)
    ranked = np.arange(pool.ids.size)
    if protocol == "queries":
        query_pool, query_videos = queries
        query_labels, query_groups, query_keys = _describe(query_pool, query_videos)
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
    chance = float(np.mean(relevant.sum(axis=1)[answerable] / (~excluded).sum(axis=1)[answerable]))
    scored_labels = query_labels[answerable]
    results = []
    for metric in metrics:
        parts = [
            score_rankings(distances({space: matrix[asked[chunk]] for space, matrix in query_pool.matrices.items()},
                                     ranked_pool, metric, fusion, excluded[chunk]).total,
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


def _describe(pool: Pool, videos: dict[int, Video]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels, groups (None where missing) and content hashes of the candidates, as arrays."""
    found = [videos[i] for i in pool.ids]
    return (np.array([video.label or None for video in found], dtype=object),
            np.array([video.group or None for video in found], dtype=object),
            np.array([video.content_hash for video in found], dtype=object))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


