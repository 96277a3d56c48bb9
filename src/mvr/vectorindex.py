"""Compact search vectors: find a query's nearest catalog rows in a few milliseconds, then rerank them exactly.

An exact scan reads every number of the catalog: 10,000 fused vectors of 2,696 dimensions are 216 MB in float64,
tens of milliseconds per query on a small CPU. A :class:`VectorIndex` keeps, beside the catalog's matrix, each
wide block of columns projected on its leading principal axes (128 float32 numbers a row instead of 2,560
float64), in the space the metric needs:

* ``euclidean`` and ``cityblock``: the rows as they are;
* ``cosine``: the rows divided by their norms, where the cosine distance is half the squared euclidean one;
* ``correlation``: the rows minus their own mean, then divided by their norms.

A query is compared with every row in that small space, the ``shortlist`` nearest rows are kept, and those are
ranked again with scipy's exact distance, so that the distances returned are scipy's to the last bit. The
principal axes keep the euclidean geometry; the cityblock distance is not theirs, but on these features the two
rank neighbours alike, and the exact rerank of a longer shortlist than the answer absorbs the difference
(``benchmarks/bench_query.py`` measures the recall against the exact ranking).

Late fusion (:mod:`mvr.search`) scales each block's distances by their mean and spread over all candidates, so
every row's distance in every block is needed, if not exactly. A narrow block (the 136 audio numbers) is compared
with every row from rows prepared once, within rounding of scipy's distances. A wide block's distances are
estimated from its compact ones, adding back the energy the principal axes leave out (the cross term this misses
averages out over the rows); the cityblock estimates, in other units, are mapped onto the exact distances of a
fixed sample of rows, matching their mean and spread. The shortlist, by these estimates, is then scored with
scipy's distances and the estimated statistics: its fused scores differ from the exact ones by about 1e-3 to 1e-2
z-score units (cityblock: about 0.1), and near ties can swap (``exact=True`` in :func:`mvr.search.rank` computes
them exactly).

Everything a metric needs is prepared on its first use and kept; the index is rebuilt with its catalog's
candidates, that is whenever the catalog changes. Queries use no multi-threaded BLAS call: on a busy machine a
second BLAS thread waiting for a core costs more than the whole product.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

COMPACT_METRICS = ("euclidean", "cityblock", "cosine", "correlation")
"""The metrics a compact index can shortlist for; the others are always computed exactly."""

RANK = 128
"""Principal axes kept per block: 128 keep the nearest neighbours of the visual vectors (bench_query.py)."""
SHORTLIST = 100
"""Rows reranked exactly; at least twice the number of answers asked for."""
CITYBLOCK_SHARE = 0.01
"""For cityblock, at least this share of the rows is reranked: recall@5 was 0.94 at 100k rows with 100, 1.0 with
1,000 (bench_query.py)."""
MIN_ROWS = 4096
"""Below this many rows the exact scan takes about a millisecond a block, and no index is built."""
MIN_DIMS = 4 * RANK
"""Blocks narrower than this are compared exactly: their compact form would save little."""

_FIT_ROWS = 2048  # rows sampled to find the principal axes; more change the axes little and cost time
_SAMPLE_ROWS = 256  # rows whose exact cityblock distances put a compact block's estimates on their scale
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


class VectorIndex:
    """A catalog matrix with compact search vectors built lazily, per metric.

    Parameters
    ----------
    matrix : np.ndarray
        ``(n, dims)`` float64 candidate vectors, one row per video, as :func:`mvr.search.candidates` prepares them.
    blocks : sequence of (slice, float)
        Late fusion: each block's columns and weight. Empty: one distance over all columns.
    rank : int
        Principal axes kept per compact block.
    shortlist : int
        Rows reranked exactly (at least ``2 * k`` are, and for cityblock :data:`CITYBLOCK_SHARE` of them).
    min_rows : int
        Smallest matrix that gets compact vectors; smaller ones are always scanned exactly.
    seed : int
        Seeds the row samples and random projections, so that an index answers the same way every time.
    """

    def __init__(
        self,
        matrix: np.ndarray,
        blocks: Sequence[tuple[slice, float]] = (),
        *,
        rank: int = RANK,
        shortlist: int = SHORTLIST,
        min_rows: int = MIN_ROWS,
        seed: int = 0,
    ) -> None:
        self.matrix = matrix
        self.blocks = tuple(blocks) or ((slice(0, matrix.shape[1]), 1.0),)
        self.fused = bool(blocks)
        self.rank = rank
        self.shortlist = shortlist
        self.min_rows = min_rows
        self._seed = seed
        # Which blocks get compact vectors: the wide ones, where they save most of the reading.
        self._wide = tuple(len(range(*columns.indices(matrix.shape[1]))) >= max(MIN_DIMS, 4 * rank)
                           for columns, _ in self.blocks)
        self._compact: dict[tuple[int, str], _Compact] = {}
        self._narrow_blocks: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def supports(self, metric: str) -> bool:
        """Whether :meth:`search` can answer for ``metric`` from compact vectors (else it returns None)."""
        return (metric in COMPACT_METRICS and self.matrix.shape[0] >= max(self.min_rows, 2 * self.shortlist)
                and any(self._wide))

    def prepare(self, metric: str) -> None:
        """Build the compact vectors ``metric`` needs now, rather than on the first query."""
        if self.supports(metric):
            for number, wide in enumerate(self._wide):
                if wide:
                    self._block(number, metric)

    def search(
        self, query: np.ndarray, metric: str, k: int, excluded: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``k`` rows nearest to ``query``: compact shortlist, exact rerank.

        Parameters
        ----------
        query : np.ndarray
            ``(dims,)``, in the matrix's columns.
        metric : str
            A scipy metric name.
        k : int
            How many rows to return.
        excluded : np.ndarray, optional
            bool, ``(n,)``: rows that must not be returned.

        Returns
        -------
        (np.ndarray, np.ndarray) or None
            Row positions (int64) and their ``k`` distances, nearest first, ties in row order. None when the
            exact scan must answer: a metric without compact vectors, a small matrix, or anything a shortlist
            cannot decide (a query or rows with undefined distances, fewer than ``k`` rows with a distance,
            distances that are all equal).
        """
        if not self.supports(metric):
            return None
        query = np.asarray(query, dtype=np.float64).reshape(-1)
        size = max(self.shortlist, 2 * k)
        if metric == "cityblock":
            # The compact distances are euclidean ones, among which a cityblock neighbour ranks the lower the
            # denser the catalog: a shortlist of a share of the catalog keeps it.
            size = max(size, int(CITYBLOCK_SHARE * self.matrix.shape[0]))
        if size >= self.matrix.shape[0]:
            return None
        allowed = np.ones(self.matrix.shape[0], dtype=bool) if excluded is None else ~np.asarray(excluded, bool)
        if self.fused:
            return self._search_fused(query, metric, k, size, allowed)
        columns, _ = self.blocks[0]
        compact = self._block(0, metric)
        point = _query_point(compact, query[columns], metric)
        if point is None:
            return None
        approximate = _sq_distances(compact, point[1])
        approximate[~(allowed & compact.usable)] = np.inf
        rows = _smallest(approximate, size)
        with np.errstate(divide="ignore", invalid="ignore"):
            exact = cdist(query[None, columns], self.matrix[rows][:, columns], metric)[0]
        return _best(rows, exact, k)

    # late fusion -------------------------------------------------------------------------------------------------

    def _search_fused(
        self, query: np.ndarray, metric: str, k: int, size: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Late fusion: weighted z-scores of each block's distances, with the statistics of all candidates."""
        scores = np.zeros(self.matrix.shape[0])
        scales = []
        for number, (columns, weight) in enumerate(self.blocks):
            part = query[columns]
            if self._wide[number]:
                estimate = self._estimated_distances(number, part, metric, allowed)
            else:
                estimate = self._narrow_distances(number, part, metric)
            if estimate is None:
                return None
            kept = estimate[allowed]
            mean, spread = float(kept.mean()), float(kept.std())
            if not (np.isfinite(mean) and np.isfinite(spread) and spread > 0):
                return None
            scales.append((mean, spread))
            scores += weight * (estimate - mean) / spread
        scores[~allowed] = np.inf
        rows = _smallest(scores, size)
        fused = np.zeros(rows.size)
        shortlisted = self.matrix[rows]
        for (columns, weight), (mean, spread) in zip(self.blocks, scales):
            with np.errstate(divide="ignore", invalid="ignore"):
                found = cdist(query[None, columns], shortlisted[:, columns], metric)[0]
            fused += weight * (found - mean) / spread
        return _best(rows, fused, k)

    def _estimated_distances(
        self, number: int, part: np.ndarray, metric: str, allowed: np.ndarray
    ) -> np.ndarray | None:
        """A compact block's estimates of the exact distances from the query to every row; None if undefined.

        The compact squared distance plus both sides' left-out energy estimates the exact squared distance (the
        cross term it misses averages out over the rows): the mean and spread of these estimates are within
        about 0.1% and 0.3% of the exact ones (bench_query.py). The cityblock distance has other units: its
        estimates are mapped onto the exact distances of a fixed sample of rows, matching their mean and spread.
        """
        compact = self._block(number, metric)
        point = _query_point(compact, part, metric)
        if point is None or not (compact.all_usable or compact.usable[allowed].all()):
            return None
        centred, coordinates = point
        query_left_out = max(float(centred @ centred - coordinates @ coordinates), 0.0)
        squared = np.maximum(_sq_distances(compact, coordinates), 0.0) + compact.left_out + query_left_out
        estimate = _metric_scale(squared, metric)
        if metric != "cityblock":
            return estimate
        rows, sample = self._sample(number)
        kept = allowed[rows]
        if not kept.all():  # copying the sample costs more than its distances: only when a row is left out
            rows, sample = rows[kept], sample[kept]
        truth = cdist(part[None], sample, metric)[0]
        guess = estimate[rows]
        # Matching the spreads (not a least-squares slope, which shrinks them by the correlation, 0.98 here).
        return (estimate - guess.mean()) * (truth.std() / max(guess.std(), np.finfo(float).tiny)) + truth.mean()

    def _narrow_distances(self, number: int, part: np.ndarray, metric: str) -> np.ndarray | None:
        """A narrow block's distances from the query to every row, for the statistics and the shortlist.

        Euclidean, cosine and correlation distances come from products with rows prepared once (the squared
        norms; the unit rows), within a few units of rounding of scipy's but without its per-pair loop; the
        shortlist's are then computed by scipy. Other metrics take scipy's on the whole block. None when the
        query has no direction (cosine or correlation of a constant vector).
        """
        space = _space(metric)
        rows, norms = self._narrow(number, space)
        if metric == "euclidean":
            squared = norms - 2.0 * np.vecdot(rows, part) + float(part @ part)
            return np.sqrt(np.maximum(squared, 0.0))
        if metric in ("cosine", "correlation"):
            moved, usable = _transform(part[None], space)
            return None if not usable[0] else 1.0 - np.vecdot(rows, moved[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            return cdist(part[None], rows, metric)[0]

    def _narrow(self, number: int, space: str) -> tuple[np.ndarray, np.ndarray]:
        """A narrow block's rows moved into ``space``, contiguous (a strided view would be copied on every query),
        and their squared norms; a row without a direction there is NaN, so that it spoils the statistics."""
        with self._lock:
            key = (number, space)
            if key not in self._narrow_blocks:
                rows, usable = _transform(self.matrix[:, self.blocks[number][0]], space)
                rows[~usable] = np.nan
                self._narrow_blocks[key] = rows, np.einsum("ij,ij->i", rows, rows)
            return self._narrow_blocks[key]

    def _sample(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """A fixed sample of rows of a block (their positions, and their columns as a contiguous matrix)."""
        with self._lock:
            if number not in self._samples:
                generator = np.random.default_rng(self._seed + 1)
                rows = np.sort(generator.choice(self.matrix.shape[0], min(_SAMPLE_ROWS, self.matrix.shape[0]),
                                                replace=False))
                self._samples[number] = rows, np.ascontiguousarray(self.matrix[rows][:, self.blocks[number][0]])
            return self._samples[number]

    # building ---------------------------------------------------------------------------------------------------

    def _block(self, number: int, metric: str) -> _Compact:
        space = _space(metric)
        key = (number, space)
        with self._lock:  # a web server's query threads share the index: build each block once
            if key not in self._compact:
                self._compact[key] = self._build(self.blocks[number][0], space)
            return self._compact[key]

    def _build(self, columns: slice, space: str) -> _Compact:
        n = self.matrix.shape[0]
        generator = np.random.default_rng(self._seed)
        fit_rows = np.sort(generator.choice(n, min(_FIT_ROWS, n), replace=False))
        sample, usable_sample = _transform(self.matrix[fit_rows][:, columns], space)
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
            rows, usable[start:stop] = _transform(self.matrix[start:stop, columns], space)
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


def _metric_scale(sq_distances: np.ndarray, metric: str) -> np.ndarray:
    """Squared euclidean distances in a metric's space turned into that metric's distances (cityblock: a proxy)."""
    if metric in ("cosine", "correlation"):
        return sq_distances / 2.0  # 1 - cos = |u - v|^2 / 2 for unit vectors
    return np.sqrt(sq_distances)


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest values, in position order, less those that are not finite (the rows
    left out are infinite)."""
    found = np.argpartition(values, count)[:count]
    return np.sort(found[np.isfinite(values[found])])


def _best(rows: np.ndarray, found: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``k`` best of the reranked rows, nearest first, ties by row; None when the shortlist cannot decide."""
    finite = np.isfinite(found)
    if finite.sum() < k or np.ptp(found[finite]) == 0.0:  # fewer than k: the full scan may find the rest
        return None
    rows, found = rows[finite], found[finite]
    order = np.lexsort((rows, found))[:k]
    return rows[order], found[order]
