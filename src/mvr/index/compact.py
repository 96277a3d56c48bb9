"""Compact search vectors: find a query's nearest rows among wide vectors in a few milliseconds, then rerank exactly.

An exact scan reads every number: 10,000 visual vectors of 2,560 dimensions are 205 MB in float64, tens of
milliseconds per query on a small CPU. A :class:`CompactSearcher` keeps the rows projected on their leading
principal axes (128 float32 numbers a row instead of 2,560 float64), in the space the metric needs:

* ``euclidean`` and ``cityblock``: the rows as they are;
* ``cosine``: the rows divided by their norms, where the cosine distance is half the squared euclidean one;
* ``correlation``: the rows minus their own mean, then divided by their norms.

A query is compared with every row in that small space, the ``shortlist`` nearest rows are kept, and those are
ranked again with scipy's exact distance, so that the distances returned are scipy's to the last bit. The
principal axes keep the euclidean geometry; the cityblock distance is not theirs, but on these features the two
rank neighbours alike, and the exact rerank of a longer shortlist than the answer absorbs the difference
(``benchmarks/bench_query.py`` measures the recall against the exact ranking). A query the shortlist cannot
decide (too few finite distances, all of them equal, no direction for cosine) is answered by the exact scan.

The compact rows are built on the first query and kept. Queries use no multi-threaded BLAS call: on a busy machine
a second BLAS thread waiting for a core costs more than the whole product.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

from mvr.index.base import Exclusions, check_metric, exclusion_mask, top_k
from mvr.index.exact import ExactSearcher

COMPACT_METRICS = ("euclidean", "cityblock", "cosine", "correlation")
"""The metrics a compact searcher can shortlist for; the others are always computed exactly."""

RANK = 128
"""Principal axes kept: 128 keep the nearest neighbours of the visual vectors (bench_query.py)."""
SHORTLIST = 100
"""Rows reranked exactly; at least twice the number of answers asked for."""
CITYBLOCK_SHARE = 0.01
"""For cityblock, at least this share of the rows is reranked: recall@5 was 0.94 at 100k rows with 100, 1.0 with
1,000 (bench_query.py)."""
MIN_ROWS = 4096
"""Below this many rows the exact scan takes about a millisecond, and no compact searcher is built."""
MIN_DIMS = 4 * RANK
"""Narrower vectors are compared exactly: their compact form would save little."""

_FIT_ROWS = 2048  # rows sampled to find the principal axes; more change the axes little and cost time
_PROJECT_ROWS = 8192  # rows projected at once while building: bounds the temporaries


@dataclass(frozen=True)
class _Compact:
    """One block's rows, in one metric's space, projected on their leading principal axes.

    Attributes
    ----------
    centre : np.ndarray
        float64, ``(dims,)``: the mean of the transformed rows.
    axes : np.ndarray
        float64, ``(rank, dims)``: orthonormal principal axes.
    points : np.ndarray
        float32, ``(n, rank)``: each transformed, centred row's coordinates on the axes.
    sq_norms : np.ndarray
        float32, ``(n,)``: squared norm of each row of ``points``.
    left_out : np.ndarray
        float64, ``(n,)``: the squared norm of each centred row that the axes leave out.
    usable : np.ndarray
        bool, ``(n,)``: rows whose transform is defined (a zero row has no direction for cosine).
    all_usable : bool
        Whether every row is.
    """

    centre: np.ndarray
    axes: np.ndarray
    points: np.ndarray
    sq_norms: np.ndarray
    left_out: np.ndarray
    usable: np.ndarray
    all_usable: bool


class CompactSearcher:
    """Compact shortlist, exact rerank (see the module's text); a :class:`~mvr.index.base.Searcher`.

    Parameters
    ----------
    ids : np.ndarray
        int64 ``(n,)``, ascending.
    matrix : np.ndarray
        ``(n, d)`` vectors.
    metric : str
        One of :data:`COMPACT_METRICS`.
    rank : int
        Principal axes kept.
    shortlist : int
        Rows reranked exactly (at least ``2 * k`` are, and for cityblock :data:`CITYBLOCK_SHARE` of them).
    seed : int
        Seeds the row sample and random projections, so that a searcher answers the same way every time.
    """

    def __init__(self, ids: np.ndarray, matrix: np.ndarray, metric: str, *, rank: int = RANK,
                 shortlist: int = SHORTLIST, seed: int = 0) -> None:
        if check_metric(metric) not in COMPACT_METRICS:
            raise ValueError(f"a compact searcher takes {', '.join(COMPACT_METRICS)}, not {metric}")
        self._exact = ExactSearcher(ids, matrix, metric)
        self.metric = metric
        self.ids = self._exact.ids
        self.rank = rank
        self.shortlist = shortlist
        self._seed = seed
        self._compact: _Compact | None = None
        self._lock = threading.Lock()

    @staticmethod
    def applies(rows: int, dims: int, metric: str, *, shortlist: int = SHORTLIST) -> bool:
        """Whether a compact searcher pays off for ``rows`` vectors of ``dims`` under ``metric``."""
        return metric in COMPACT_METRICS and rows >= max(MIN_ROWS, 2 * shortlist) and dims >= MIN_DIMS

    def search(self, queries: np.ndarray, k: int, *, exclude: Exclusions = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of each query (see :class:`mvr.index.base.Searcher`)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        excluded = exclusion_mask(self.ids, exclude, len(queries))
        distances = np.full((len(queries), k), np.inf)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for number, query in enumerate(queries):
            forbidden = None if excluded is None else excluded[number]
            found = self._shortlisted(query, k, forbidden)
            if found is None:  # the shortlist cannot decide: the exact scan answers
                found = top_k(self._exact.distances(query, forbidden), self.ids, k)
                found = found[0][0], found[1][0]
            distances[number], ids[number] = found
        return distances, ids

    def _shortlisted(self, query: np.ndarray, k: int, forbidden: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray] | None:
        n = self.ids.size
        size = max(self.shortlist, 2 * k)
        if self.metric == "cityblock":
            # The compact distances are euclidean ones, among which a cityblock neighbour ranks the lower the
            # denser the catalog: a shortlist of a share of the catalog keeps it.
            size = max(size, int(CITYBLOCK_SHARE * n))
        if size >= n or query.shape != self._exact.matrix.shape[1:]:
            return None
        compact = self._built()
        point = _query_point(compact, query, self.metric)
        if point is None:
            return None
        approximate = _sq_distances(compact, point[1])
        allowed = compact.usable if forbidden is None else compact.usable & ~forbidden
        approximate[~allowed] = np.inf
        rows = _smallest(approximate, size)
        with np.errstate(divide="ignore", invalid="ignore"):
            exact = cdist(query[None], self._exact.matrix[rows], self.metric)[0]
        finite = np.isfinite(exact)
        if finite.sum() < k or np.ptp(exact[finite]) == 0.0:  # fewer than k: the full scan may find the rest
            return None
        rows, exact = rows[finite], exact[finite]
        order = np.lexsort((rows, exact))[:k]
        return exact[order], self.ids[rows[order]]

    def _built(self) -> _Compact:
        with self._lock:  # a web server's query threads share the searcher: build it once
            if self._compact is None:
                self._compact = self._build(_space(self.metric))
            return self._compact

    def _build(self, space: str) -> _Compact:
        n = self._exact.matrix.shape[0]
        generator = np.random.default_rng(self._seed)
        fit_rows = np.sort(generator.choice(n, min(_FIT_ROWS, n), replace=False))
        sample, usable_sample = _transform(self._exact.matrix[fit_rows], space)
        sample = sample[usable_sample]
        if len(sample) < 2:  # (nearly) every row without a direction: no axes; the full scan will answer
            centre, axes = np.zeros(sample.shape[1]), np.zeros((0, sample.shape[1]))
        else:
            centre = sample.mean(axis=0)
            axes = _principal_axes(sample - centre, min(self.rank, *sample.shape), generator)
        points = np.empty((n, axes.shape[0]), dtype=np.float32)
        left_out = np.empty(n)
        usable = np.empty(n, dtype=bool)
        for start in range(0, n, _PROJECT_ROWS):
            stop = min(start + _PROJECT_ROWS, n)
            rows, usable[start:stop] = _transform(self._exact.matrix[start:stop], space)
            rows -= centre
            projected = rows @ axes.T
            points[start:stop] = projected
            left_out[start:stop] = np.maximum(np.einsum("ij,ij->i", rows, rows)
                                              - np.einsum("ij,ij->i", projected, projected), 0.0)
        sq_norms = np.einsum("ij,ij->i", points, points)
        return _Compact(centre=centre, axes=axes, points=points, sq_norms=sq_norms, left_out=left_out,
                        usable=usable, all_usable=bool(usable.all()))


def _space(metric: str) -> str:
    """Which transform of the rows ``metric`` is a euclidean-like distance in."""
    return {"cosine": "unit", "correlation": "centred-unit"}.get(metric, "raw")


def _transform(rows: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows moved into ``space`` (a new float64 array), and which rows have a defined transform there."""
    rows = np.array(rows, dtype=np.float64)
    if space == "raw":
        return rows, np.ones(len(rows), dtype=bool)
    if space == "centred-unit":
        rows -= rows.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    usable = norms > 0
    rows[usable] /= norms[usable, None]
    return rows, usable


def _principal_axes(centred: np.ndarray, rank: int, generator: np.random.Generator) -> np.ndarray:
    """The ``rank`` leading right singular vectors of ``centred``, by a randomized range finder.

    Projects the rows on ``rank + 16`` random directions, refines that range with two power iterations
    (re-orthonormalised each time), and takes the exact SVD of the rows restricted to it: a few matrix products
    where a full SVD of a 2048 x 2560 sample would take seconds.
    """
    width = min(rank + 16, *centred.shape)
    basis, _ = np.linalg.qr(centred @ generator.standard_normal((centred.shape[1], width)))
    for _ in range(2):
        basis, _ = np.linalg.qr(centred.T @ basis)
        basis, _ = np.linalg.qr(centred @ basis)
    _, _, right = np.linalg.svd(basis.T @ centred, full_matrices=False)
    return np.ascontiguousarray(right[:rank])


def _query_point(compact: _Compact, part: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The query block's centred transform and its coordinates on the axes; None when it has no transform."""
    moved, usable = _transform(part[None], _space(metric))
    if not usable[0] or not np.isfinite(moved).all():
        return None
    centred = moved[0] - compact.centre
    # vecdot rather than a matrix product: a single-threaded loop, where BLAS would start its thread pool.
    return centred, np.vecdot(compact.axes, centred)


def _sq_distances(compact: _Compact, coordinates: np.ndarray) -> np.ndarray:
    """Squared euclidean distances from a query's coordinates to every row's, float64."""
    coordinates = coordinates.astype(np.float32)
    products = np.vecdot(compact.points, coordinates)
    return (compact.sq_norms - 2.0 * products).astype(np.float64) + float(coordinates @ coordinates)


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest values, in position order, less those that are not finite (the rows
    left out are infinite)."""
    found = np.argpartition(values, count)[:count]
    return np.sort(found[np.isfinite(values[found])])


