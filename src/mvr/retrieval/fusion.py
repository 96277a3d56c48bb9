"""The one fusion layer: how several feature spaces' distances become one ranking, keeping each space's part.

Two fusions (:data:`FUSIONS`):

``late`` (mvr's default)
    Each space's distances from the query to the candidates are put on a common scale, their z-scores over the
    candidates of that query, and added with the fusion's weights. No space drowns another whatever its number of
    dimensions or its units, and nothing is fitted to the catalog, so nothing goes stale as it grows. Each space's
    raw distances and weighted z-scores are kept, so that a result can say why it is close.
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
from mvr.index.exact import ExactSearcher
from mvr.retrieval.targets import DEFAULT_FUSION, EQUAL_WEIGHTS, FUSIONS


@dataclass(frozen=True)
class Fusion:
    """How a fused search combines spaces: the method and each space's weight (the spaces in fusing order)."""

    method: str = DEFAULT_FUSION
    weights: Mapping[str, float] = field(default_factory=lambda: dict(EQUAL_WEIGHTS))

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise UsageError(f"unknown fusion '{self.method}'; choose one of: {', '.join(FUSIONS)}")
        if not self.weights:
            raise UsageError("a fusion needs at least one space")

    @property
    def spaces(self) -> tuple[str, ...]:
        """The fused spaces, in order."""
        return tuple(self.weights)


@dataclass(frozen=True)
class Pool:
    """The vectors one search ranks: the same videos' rows in each space, as contiguous float64.

    Attributes
    ----------
    ids : np.ndarray
        int64 ``(n,)``: video ids, ascending.
    matrices : dict
        space -> float64 ``(n, dims)``; row ``i`` of each is video ``ids[i]``.
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
        One of :data:`mvr.index.METRICS`, used in every space.
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
    total = None
    for space in pool.spaces:
        part = ExactSearcher(pool.ids, pool.matrices[space], metric).distances(queries[space], excluded)
        if not np.isfinite(part).any():
            found.total = part  # the sum would be NaN everywhere: spare the other spaces (jensenshannon is slow)
            return found
        score = fusion.weights[space] * row_z_scores(part)
        found.parts[space], found.scores[space] = part, score
        total = score if total is None else total + score
    found.total = total
    return found


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
