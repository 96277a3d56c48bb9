"""The one fusion layer: how several feature spaces' distances become one ranking, keeping each space's part.

Three fusions (:data:`FUSIONS`):

``late`` (mvr's default)
    Each space's distances from the query to the candidates are put on a common scale, their z-scores over the
    candidates of that query, and added with the fusion's weights. No space drowns another whatever its number of
    dimensions or its units, and nothing is fitted to the catalog, so nothing goes stale as it grows. Each space's
    raw distances and weighted z-scores are kept, so that a result can say why it is close. Each space may have
    its own metric (:attr:`Fusion.metrics`, as :mod:`mvr.retrieval.tuning` chooses them), and a space may be
    measured in a projection learned from the catalog's labels (:attr:`Fusion.projections`,
    :mod:`mvr.retrieval.projection`): query and candidates are then mapped alike before the distance.
``adaptive``
    Late fusion whose weights are set per query, after Zheng et al. (CVPR 2015, "Query-adaptive late fusion"): a
    space whose sorted similarity curve for this query is L-shaped (a few candidates stand out, the rest fall
    away) is trusted more than one whose curve declines slowly (:func:`adaptive_weights`). It needs no labels.
``concat``
    The study's fusion: one distance over the concatenated raw vectors (136 audio + 2 x 1280 visual numbers with
    EfficientNet-Lite0), where the visual numbers outweigh the audio ones.

A *pool* holds the vectors searched: for one space, that space's; for a fusion, the rows of the videos that have
every fused space, aligned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from mvr.errors import UsageError
from mvr.index.base import check_metric
from mvr.index.exact import ExactSearcher
from mvr.retrieval.projection import PROJECTED_METRIC, Projection
from mvr.retrieval.targets import DEFAULT_FUSION, EQUAL_WEIGHTS, FUSIONS


@dataclass(frozen=True)
class Fusion:
    """How a fused search combines spaces: the method, each space's weight (the spaces in fusing order) and,
    optionally, each space's own metric.

    Attributes
    ----------
    method : str
        One of :data:`FUSIONS`.
    weights : mapping
        space -> weight; for ``adaptive``, the prior each query's own weights multiply.
    metrics : mapping, optional
        space -> metric, for ``late`` and ``adaptive``; a space left out (or all, when None) takes the search's
        metric.
    projections : mapping, optional
        space -> its learned projection, for ``late`` and ``adaptive``: such a space is measured by
        :data:`~mvr.retrieval.projection.PROJECTED_METRIC` between the projected vectors; its searcher (which
        shortlists a large catalog) keeps the space's own metric on the stored vectors.
    """

    method: str = DEFAULT_FUSION
    weights: Mapping[str, float] = field(default_factory=lambda: dict(EQUAL_WEIGHTS))
    metrics: Mapping[str, str] | None = None
    projections: Mapping[str, Projection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise UsageError(f"unknown fusion '{self.method}'; choose one of: {', '.join(FUSIONS)}")
        if not self.weights:
            raise UsageError("a fusion needs at least one space")
        for metric in (self.metrics or {}).values():
            check_metric(metric)
        if self.projections and self.method == "concat":
            raise UsageError("the study's concatenation compares the stored vectors: it takes no projection")

    @property
    def spaces(self) -> tuple[str, ...]:
        """The fused spaces, in order."""
        return tuple(self.weights)

    def metric_of(self, space: str, metric: str) -> str:
        """The metric that measures ``space`` in a search whose metric is ``metric`` (in its projection, if any)."""
        return PROJECTED_METRIC if space in self.projections else self.searcher_metric(space, metric)

    def searcher_metric(self, space: str, metric: str) -> str:
        """The metric of ``space``'s searcher over its stored vectors, which shortlists a large catalog."""
        return (self.metrics or {}).get(space, metric)

    def vectors_of(self, space: str, vectors: np.ndarray) -> np.ndarray:
        """``space``'s vectors ``(..., dims)`` as the fusion measures them: projected, if it has a projection."""
        projection = self.projections.get(space)
        return vectors if projection is None else projection.apply(vectors)


@dataclass(frozen=True)
class Pool:
    """The vectors one search ranks: the same videos' rows in each space.

    Attributes
    ----------
    ids : np.ndarray
        int64 ``(n,)``: video ids, ascending.
    matrices : dict
        space -> ``(n, dims)``; row ``i`` of each is video ``ids[i]``. float64 for small spaces; a large space's
        rows are float32, memory-mapped from its saved index's vectors file where it has one
        (:meth:`mvr.retrieval.search.SearcherCache.pool`).
    """

    ids: np.ndarray
    matrices: dict[str, np.ndarray]

    @property
    def spaces(self) -> tuple[str, ...]:
        """The spaces held, in order."""
        return tuple(self.matrices)

    @cached_property
    def concatenated(self) -> np.ndarray:
        """float64 ``(n, sum of dims)``: every space's columns side by side (the study's fused vectors)."""
        if len(self.matrices) == 1:
            return next(iter(self.matrices.values()))
        return np.hstack(list(self.matrices.values()))

    def subset(self, rows: np.ndarray) -> Pool:
        """The pool's videos at positions ``rows`` (indices or a boolean mask)."""
        return Pool(ids=self.ids[rows], matrices={space: matrix[rows] for space, matrix in self.matrices.items()})


@dataclass
class Distances:
    """Distances from each query to each candidate of a pool, and, for late fusion, each space's part.

    Attributes
    ----------
    total : np.ndarray
        float64 ``(q, n)``: what ranks the candidates (lower is closer); NaN where a pair is excluded or has no
        finite distance. For late fusion, the weighted sum of the spaces' z-scores.
    parts : dict
        Late fusion only: space -> float64 ``(q, n)``, that space's raw distances.
    scores : dict
        Late fusion only: space -> float64 ``(q, n)``, the space's weighted z-scores; they add up to ``total``.
    """

    total: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def distances(
    queries: Mapping[str, np.ndarray],
    pool: Pool,
    metric: str,
    fusion: Fusion | None = None,
    excluded: np.ndarray | None = None,
) -> Distances:
    """Every distance from the queries to the pool: one space's, or a fusion of the pool's spaces.

    Parameters
    ----------
    queries : mapping
        space -> ``(q, dims)`` (or one vector), for each of the pool's spaces.
    pool : Pool
        What to compare with.
    metric : str
        One of :data:`mvr.index.METRICS`, used in every space that the fusion gives no metric of its own.
    fusion : Fusion, optional
        How to combine the pool's spaces; None for a pool of one space.
    excluded : np.ndarray, optional
        bool, broadcastable to ``(q, n)``: pairs left out of the ranking (a query itself, its near-copies). Late
        fusion scales each query's distances over its candidates only.

    Raises
    ------
    UsageError
        For an unknown metric.
    CatalogError
        When the queries' and the pool's dimensions differ.
    """
    if fusion is None or fusion.method == "concat":
        stacked = np.hstack([np.atleast_2d(np.asarray(queries[space], dtype=np.float64)) for space in pool.spaces])
        return Distances(ExactSearcher(pool.ids, pool.concatenated, metric).distances(stacked, excluded))
    found = Distances(np.zeros(0))
    for space in pool.spaces:
        searcher = ExactSearcher(pool.ids, fusion.vectors_of(space, pool.matrices[space]),
                                 fusion.metric_of(space, metric))
        part = searcher.distances(fusion.vectors_of(space, np.asarray(queries[space])), excluded)
        if not np.isfinite(part).any():
            found.total = part  # the sum would be NaN everywhere: spare the other spaces (jensenshannon is slow)
            return found
        found.parts[space] = part
    return combine(found.parts, fusion)


def combine(parts: Mapping[str, np.ndarray], fusion: Fusion,
            statistics: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Distances:
    """Late (or adaptive) fusion of each space's raw distances ``(q, n)``: their weighted row z-scores, added.

    ``statistics`` (space -> each row's mean and spread) replaces the rows' own, as :func:`row_z_scores` says.
    """
    weights = adaptive_weights(parts, fusion.weights) if fusion.method == "adaptive" else fusion.weights
    found = Distances(np.zeros(0))
    total = None
    for space, part in parts.items():
        score = weights[space] * row_z_scores(part, None if statistics is None else statistics[space])
        found.parts[space], found.scores[space] = part, score
        total = score if total is None else total + score
    found.total = total
    return found


ADAPTIVE_HEAD = 0.1
"""The share of each query's candidates (at least :data:`_ADAPTIVE_MIN_HEAD`) whose curve :func:`adaptive_weights`
reads: the head of the ranking, where an L shape shows."""
_ADAPTIVE_MIN_HEAD = 10


def adaptive_weights(parts: Mapping[str, np.ndarray], prior: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Each query's weight of each space, by the shape of its sorted score curve (Zheng et al., CVPR 2015).

    Per query and space, the distances become similarities scaled to 0-1 over the candidates (1: the nearest,
    0: the farthest) and sorted, nearest first; the area under the head of that curve (its first
    :data:`ADAPTIVE_HEAD` of the candidates, the nearest excepted) is small when the curve is L-shaped, that is
    when a few candidates stand out. A space's weight is its prior divided by that area, and each query's weights
    are scaled to add up to the priors' sum. The paper also subtracts a reference curve of irrelevant images; the
    head's area alone is used here, since nothing in a catalog is known to be irrelevant.

    Returns
    -------
    dict
        space -> float64 ``(q, 1)``.
    """
    raw = {}
    for space, part in parts.items():
        finite = np.isfinite(part)
        low = np.where(finite, part, np.inf).min(axis=1, keepdims=True)
        high = np.where(finite, part, -np.inf).max(axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        similarity = np.where(finite, (high - part) / span, 0.0)
        head = min(part.shape[1] - 1, max(_ADAPTIVE_MIN_HEAD, int(ADAPTIVE_HEAD * part.shape[1])))
        if head < 2:
            raw[space] = np.full((part.shape[0], 1), float(prior[space]))
            continue
        # The head's values in any order give its area; the first (the nearest, always 1) tells nothing.
        top = -np.partition(-similarity, head, axis=1)[:, :head + 1]
        area = (top.sum(axis=1, keepdims=True) - top.max(axis=1, keepdims=True)) / head
        raw[space] = prior[space] / np.maximum(area, 1e-6)
    total = sum(raw.values())
    scale = sum(float(w) for w in prior.values())
    return {space: scale * weight / total for space, weight in raw.items()}


def row_z_scores(found: np.ndarray, statistics: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each row's values as z-scores over that row's finite values (NaN stays NaN); a constant row becomes zeros.

    ``statistics`` (the mean and spread of each row, ``(q, 1)`` each) replaces the row's own: for a shortlist whose
    scale was estimated over the whole catalog.
    """
    if statistics is None:
        statistics = row_statistics(found)
    mean, spread = statistics
    return (found - mean) / np.where(spread > 0, spread, 1.0)


def row_statistics(found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and (population) spread of each row's finite values, ``(q, 1)`` each."""
    finite = np.isfinite(found)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    values = np.where(finite, found, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    spread = np.sqrt((np.where(finite, found - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
    return mean, spread
