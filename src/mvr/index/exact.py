"""The reference searcher: scipy's distances from each query to every vector."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from mvr.errors import CatalogError
from mvr.index.base import Exclusions, check_metric, exclusion_mask, top_k


class ExactSearcher:
    """Every distance, exactly as :func:`scipy.spatial.distance.cdist` computes it.

    Parameters
    ----------
    ids : np.ndarray
        int64 ``(n,)``, ascending.
    matrix : np.ndarray
        ``(n, d)``; kept as contiguous float64, which cdist would otherwise convert on every call.
    metric : str
        One of :data:`mvr.index.base.METRICS`.
    """

    def __init__(self, ids: np.ndarray, matrix: np.ndarray, metric: str) -> None:
        self.metric = check_metric(metric)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float64)

    def distances(self, queries: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """Distances from each query to each vector.

        Parameters
        ----------
        queries : np.ndarray
            ``(q, d)``, or one vector of ``d``.
        excluded : np.ndarray, optional
            bool, broadcastable to ``(q, n)``: pairs left out.

        Returns
        -------
        np.ndarray
            float64 ``(q, n)``; NaN where a pair is excluded or its distance is not a finite number.

        Raises
        ------
        CatalogError
            When the queries' dimensions differ from the vectors'.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        if queries.shape[1] != self.matrix.shape[1]:
            raise CatalogError(f"query has {queries.shape[1]} dimensions, the catalog's vectors {self.matrix.shape[1]}")
        with np.errstate(divide="ignore", invalid="ignore"):
            found = cdist(queries, self.matrix, metric=self.metric)
        found[~np.isfinite(found)] = np.nan
        if excluded is not None:
            found[np.broadcast_to(excluded, found.shape)] = np.nan
        return found

    def search(self, queries: np.ndarray, k: int, *, exclude: Exclusions = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of each query (see :class:`mvr.index.base.Searcher`)."""
        queries = np.atleast_2d(queries)
        return top_k(self.distances(queries, exclusion_mask(self.ids, exclude, len(queries))), self.ids, k)

    def subset(self, rows: np.ndarray) -> ExactSearcher:
        """The same search over the vectors at positions ``rows``."""
        return ExactSearcher(self.ids[rows], self.matrix[rows], self.metric)
