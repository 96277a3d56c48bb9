"""The reference searcher: scipy's distances from each query to every vector."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from mvr.errors import CatalogError
from mvr.index.base import SCALE_SAMPLE_ROWS, Exclusions, check_metric, exclusion_mask, top_k

SCAN_ROWS = 65_536
"""Rows of a matrix that is not float64 (a memory-mapped float32 one) converted at a time for scipy, which
computes in float64: the temporaries stay bounded however large the catalog."""


class ExactSearcher:
    """Every distance, exactly as :func:`scipy.spatial.distance.cdist` computes it.

    Parameters
    ----------
    ids : np.ndarray
        int64 ``(n,)``, ascending.
    matrix : np.ndarray
        ``(n, d)``. A float64 one is kept contiguous (cdist would otherwise convert it on every call); any other
        (a catalog's memory-mapped float32 rows) is kept as it is and converted :data:`SCAN_ROWS` rows at a time,
        which gives the same distances.
    metric : str
        One of :data:`mvr.index.base.METRICS`.
    """

    def __init__(self, ids: np.ndarray, matrix: np.ndarray, metric: str) -> None:
        self.metric = check_metric(metric)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.matrix = np.ascontiguousarray(matrix) if matrix.dtype == np.float64 else matrix
        self._sample: tuple[np.ndarray, np.ndarray] | None = None

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
            if self.matrix.dtype == np.float64:
                found = cdist(queries, self.matrix, metric=self.metric)
            else:
                found = np.empty((queries.shape[0], self.matrix.shape[0]))
                for start in range(0, self.matrix.shape[0], SCAN_ROWS):
                    rows = np.asarray(self.matrix[start:start + SCAN_ROWS], dtype=np.float64)
                    found[:, start:start + SCAN_ROWS] = cdist(queries, rows, metric=self.metric)
        found[~np.isfinite(found)] = np.nan
        if excluded is not None:
            found[np.broadcast_to(excluded, found.shape)] = np.nan
        return found

    def search(self, queries: np.ndarray, k: int, *, exclude: Exclusions = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of each query (see :class:`mvr.index.base.Searcher`)."""
        queries = np.atleast_2d(queries)
        return top_k(self.distances(queries, exclusion_mask(self.ids, exclude, len(queries))), self.ids, k)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed random sample of the rows (see :class:`mvr.index.base.Searcher`), drawn on the first call."""
        if self._sample is None:
            rows = np.sort(np.random.default_rng(0).choice(self.ids.size, min(self.ids.size, SCALE_SAMPLE_ROWS),
                                                           replace=False))
            self._sample = (self.ids[rows], np.asarray(self.matrix[rows], dtype=np.float64))
        return self._sample

    def subset(self, rows: np.ndarray) -> ExactSearcher:
        """The same search over the vectors at positions ``rows``."""
        return ExactSearcher(self.ids[rows], self.matrix[rows], self.metric)
