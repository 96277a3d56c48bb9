"""The searcher interface, shaped like FAISS's: ``search(queries (q, d), k) -> (distances, ids)``, batch first.

Every searcher holds the vectors of one feature space (or one concatenation of spaces) and answers for one
metric, with scipy's distances (:func:`scipy.spatial.distance.cdist`): an approximate searcher may shortlist
with its own numbers, but reranks with the exact distance before it answers. Rows are nearest first, ties broken
by id ascending, so that equal inputs always give equal answers; a row is padded with ``(inf, -1)`` when fewer
than ``k`` candidates have a finite distance.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import numpy as np

from mvr.errors import UsageError

METRICS = (
    "euclidean", "cityblock", "cosine", "correlation", "hamming", "jaccard",
    "jensenshannon", "chebyshev", "canberra", "braycurtis", "sokalsneath",
)
"""The study's eleven metrics, with scipy's names and semantics."""

Exclusions = Sequence[Collection[int]] | None
"""Per query, the ids it must never get back (itself, its near-copies); None: none."""

SCALE_SAMPLE_ROWS = 1024
"""Rows of a searcher's fixed random sample (:meth:`Searcher.sample`), whose distances to a query estimate the mean
and spread of its distances to the whole catalog (a fused search's z-scores). The mean's error shifts every
candidate of a space alike; only the spread's relative error, about ``1 / sqrt(2 m)`` (2% here), moves the spaces'
weights against each other (docs/performance.md measures the fused top 5 against the exhaustive one)."""


class Searcher(Protocol):
    """Nearest neighbours among one set of vectors, for one metric.

    Attributes
    ----------
    metric : str
        One of :data:`METRICS`.
    ids : np.ndarray
        int64 ``(n,)``: the ids of the vectors held, ascending.
    """

    metric: str
    ids: np.ndarray

    def search(self, queries: np.ndarray, k: int, *, exclude: Exclusions = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest vectors of each query.

        Parameters
        ----------
        queries : np.ndarray
            ``(q, d)``.
        k : int
            How many neighbours per query.
        exclude : sequence of collections of int, optional
            ``exclude[i]``: ids never returned for query ``i``.

        Returns
        -------
        distances : np.ndarray
            float64 ``(q, k)``, ascending per row; inf where padded.
        ids : np.ndarray
            int64 ``(q, k)``; -1 where padded.
        """
        ...

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed random sample of the vectors held (:data:`SCALE_SAMPLE_ROWS` of them, or all), the same on every
        call: ids int64 ``(m,)`` and rows float64 ``(m, d)``."""
        ...


def check_metric(metric: str) -> str:
    """``metric``, when it is one of :data:`METRICS`.

    Raises
    ------
    UsageError
        For any other name.
    """
    if metric not in METRICS:
        raise UsageError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
    return metric


def exclusion_mask(ids: np.ndarray, exclude: Exclusions, queries: int) -> np.ndarray | None:
    """bool ``(queries, n)``: where ``exclude`` forbids a candidate; None when it forbids nothing."""
    if not exclude or not any(exclude):
        return None
    if len(exclude) != queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {queries} queries")
    return np.stack([np.isin(ids, np.fromiter(found, dtype=np.int64, count=len(found))) for found in exclude])


def top_k(distances: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` smallest finite distances, ties by id, padded with ``(inf, -1)``.

    Parameters
    ----------
    distances : np.ndarray
        float64 ``(q, n)``; NaN or inf where a candidate is excluded or has no finite distance.
    ids : np.ndarray
        int64 ``(n,)``: the candidates' ids; or ``(q, n)``, each row's own (a shortlist per query).
    k : int
        How many per row.
    """
    key = np.where(np.isfinite(distances), distances, np.inf)
    ids = np.broadcast_to(ids, key.shape)
    order = np.lexsort((ids, key), axis=-1)[:, :k]
    found = np.take_along_axis(key, order, axis=1)
    chosen = np.where(np.isfinite(found), np.take_along_axis(ids, order, axis=1), -1)
    if order.shape[1] < k:  # fewer candidates than k
        padding = k - order.shape[1]
        found = np.pad(found, ((0, 0), (0, padding)), constant_values=np.inf)
        chosen = np.pad(chosen, ((0, 0), (0, padding)), constant_values=-1)
    return found, chosen
