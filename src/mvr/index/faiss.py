"""FAISS behind mvr's searcher interface: an approximate shortlist, reranked with scipy's exact distance.

A :class:`FaissSearcher` holds one feature space's vectors for one scipy metric. A query asks FAISS for a
shortlist of candidate rows, and the shortlist is ranked again with ``scipy.spatial.distance.cdist`` on the stored
float32 vectors, which are the catalog's own numbers: the distances returned are the exact scan's, ties are broken
by id and non-finite distances are left out (:func:`mvr.index.base.top_k`).

The FAISS index is chosen by size (``kind="auto"``):

* ``flat``: FAISS's exact scan, while ``rows x dims`` is at most :data:`FLAT_MAX_WORK` (for Canberra, Bray-Curtis
  and Jensen-Shannon, whose FAISS loops are scalar, :data:`SCALAR_FLAT_MAX_WORK`): below that a scan takes under
  ~0.4 ms on one core, needs no graph and is exact;
* ``hnsw``: an HNSW graph above it;
* ``ivf``: for wide vectors from :data:`IVF_MIN_ROWS` rows, an inverted file over their 128 projected float32
  numbers (about ``4 sqrt(n)`` lists, :data:`IVF_NPROBE` searched): at 1M visual rows it found what a flat scan
  of the projections finds (recall@5 0.993 / 1.000 with 200 / 400 rows reranked) in about 0.6 ms, where the HNSW
  graph over the same projections lost neighbours (0.953 / 0.980, 0.993 only with 800) and product codes lost more
  (IVF-PQ, 0.85 with 200 even after refining on the projections; ``bench_wide_index.py``, docs/performance.md).

Each metric is searched in the space where FAISS has its ranking (:data:`FAISS_METRICS`):

* ``euclidean``: the rows as they are, squared L2;
* ``cosine``: rows divided by their norms, inner product; ``correlation``: rows minus their own mean, then the same;
* ``braycurtis``: squared L2 on the rows as they are, a stand-in: FAISS's own Bray-Curtis is scalar code, and an
  L2 graph (SIMD) shortlists as well for the exact rerank (recall@5 1.0 at 100k and 1M synthetic audio rows, a
  third of the graph search's time and a tenth of its build, docs/performance.md);
* ``cityblock``, ``chebyshev``, ``canberra``, ``jensenshannon``: FAISS's own L1, L-infinity, Canberra and
  Jensen-Shannon on the rows (narrow vectors only). Two differ from scipy's definitions
  and are adapted so that the ranking agrees: Canberra's ``0/0`` terms and Jensen-Shannon's ``0 log 0`` are NaN in
  FAISS and 0 in scipy, so exact zeros are moved to a tiny number (1e-30); scipy's Jensen-Shannon divides each row
  by its sum and takes a square root, so rows are divided by their sums (the root does not change the order);
* the boolean metrics (``hamming``, ``jaccard``, ``sokalsneath``) have no index: :meth:`FaissSearcher.supports`
  says no, and :func:`mvr.index.build.build_searcher` keeps the exact scan.

Wide vectors (:data:`WIDE_DIMS` numbers and more: the 2,560 visual ones) are projected on their :data:`PCA_RANK`
leading principal axes (a randomized principal component fit on a sample of rows in the metric's space), with
each row's distance from those axes as one more number, before the ANN index: squared L2 there is the rows' own
but for one cross term (:class:`_Projection`). Only :data:`WIDE_METRICS` are offered there, the others'
neighbours are not the projections'.

Wide rows are also kept as 8-bit codes in memory (:class:`_Codes`, 2,560 bytes a visual row): the codes rank the
shortlist, and only its :func:`_rows_measured` nearest by them are read in full and measured exactly. A full
row read from a file far larger than the CPU's caches is the dearest step of a query (at 1M visual rows reranking
400 of them cost 8-14 ms of an 11-18 ms query on this machine, docs/performance.md), and the codes rank as the rows
do but for near-ties.

The rerank reads its rows from the stored matrix, memory-mapped once saved (``vectors-<i>.f32`` segments, or
``.f16`` with ``storage="float16"``, which halves a 1M visual catalog's 10 GB at the price of distances computed on
the float16-rounded vectors), so a query touches only the rows it reranks; a saved row of a page or more is read
with ``preadv`` into buffers the thread keeps (:meth:`_Rows.gather`). Rows are added incrementally; removed
ones are tombstones that FAISS's ID selector keeps out of the shortlist; :attr:`FaissSearcher.needs_rebuild` says
when to build again (the catalog has doubled since the fit, or a tenth of the rows are tombstones).
:meth:`FaissSearcher.load_vectors` maps a saved folder's rows alone, in id order, for whoever needs the catalog's
vectors without the float64 copy (:meth:`mvr.retrieval.search.SearcherCache.pool`).

Each build draws a fixed random sample of :data:`mvr.index.base.SCALE_SAMPLE_ROWS` rows, saved with the index
(:meth:`FaissSearcher.sample`): a fused search on a large catalog takes each space's z-score statistics from the
query's distances to it, the same rows on every query and after a reload.

FAISS bundles its own OpenMP and OpenBLAS: every FAISS call is held to ``threads`` through one
:class:`threadpoolctl.ThreadpoolController`, found once, because ``threadpool_limits()`` searches the loaded
libraries on every call (3.6 ms, ten times a whole HNSW query at 50k rows).

This is the only module that imports ``faiss``; :mod:`mvr.index.build` imports it when a catalog is large enough.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np
from scipy.spatial.distance import cdist
from threadpoolctl import ThreadpoolController

from mvr.index.base import SCALE_SAMPLE_ROWS, Exclusions, check_metric, top_k

LAYOUT = 5
"""Version of the saved folder's layout; a folder of another version is never loaded (2: the scale sample, and
Bray-Curtis shortlisted by L2; 3: IVF-PQ refined on its float32 projections; 4: projections carry the residual,
and an inverted file of them replaces IVF-PQ; 5: wide rows' 8-bit codes rank the shortlist)."""

FAISS_METRICS = {
    # scipy name: (space of the rows, FAISS metric there)
    "euclidean": ("raw", faiss.METRIC_L2),
    "cosine": ("unit", faiss.METRIC_INNER_PRODUCT),
    "correlation": ("centred-unit", faiss.METRIC_INNER_PRODUCT),
    "cityblock": ("raw", faiss.METRIC_L1),
    "chebyshev": ("raw", faiss.METRIC_Linf),
    "canberra": ("canberra", faiss.METRIC_Canberra),
    "braycurtis": ("raw", faiss.METRIC_L2),  # a stand-in for the rerank: see the module's docstring
    "jensenshannon": ("distribution", faiss.METRIC_JensenShannon),
}
"""The metrics of :data:`mvr.index.base.METRICS` a FAISS index can shortlist for; the others are scanned."""
WIDE_METRICS = ("euclidean", "cosine", "correlation")
"""Those whose neighbours the principal-axis projection of wide vectors keeps."""
KINDS = ("auto", "flat", "hnsw", "ivf")

WIDE_DIMS = 512
"""Vectors this wide are projected on principal axes before the ANN index."""
PCA_RANK = 127
"""Principal axes kept; with each row's residual (:class:`_Projection`) a projected row has 128 numbers. 255 axes
gained little at 1M visual rows (a flat scan of them: recall@5 0.980 against 0.973 with 100 rows reranked, equal
from 200; docs/performance.md)."""
FLAT_MAX_WORK = 20_000 * 136
"""Largest ``rows x dims`` scanned exactly: 0.33 ms a query at 20,000 x 136 on one core, where HNSW took 0.10 ms
(and 1 s to build); at 50,000 rows the scan took 1.7 ms against HNSW's 0.17 ms (faiss-cpu 1.15.1)."""
SCALAR_METRICS = ("canberra", "jensenshannon")
"""FAISS computes these without SIMD: its flat Bray-Curtis scan (the same scalar loop) took 1.8 ms at 8,000 x 136
where HNSW took 0.5 ms with the rerank (0.4 s to build)."""
SCALAR_FLAT_MAX_WORK = 2_000 * 136
IVF_MIN_ROWS = 500_000
"""Wide catalogs this large get an inverted file over their projections rather than an HNSW graph."""
HNSW_M = 16
"""Graph links per node: M16 held recall@5 0.999 at 100k with a reranked shortlist, and builds faster than M32."""
HNSW_EF_CONSTRUCTION = 80
IVF_NPROBE = 16
"""Lists an inverted file searches: at 1M visual rows (4,096 lists) 16, 32 and 64 all held the flat scan's recall,
in 0.64 / 0.89 / 1.20 ms with 400 rows (``bench_wide_index.py``), and 16 lost nothing against 32 or 64 on 200 other
queries, noisier ones (recall@5 0.987 each; docs/performance.md)."""
IVF_TRAIN_PER_LIST = 40
"""Sample rows per list that train an inverted file's centroids (FAISS warns below 39)."""
SHORTLIST_MIN = 100
"""Rows reranked exactly at 100k rows and below (narrow vectors); :func:`shortlist_size` grows it with the
catalog."""
SHORTLIST_MAX = 500
WIDE_SHORTLIST = 2
REFINE_EXTRA = 8
"""Of a wide shortlist, the ``k + max(REFINE_EXTRA, k // 2)`` rows nearest by their 8-bit codes are read and
measured exactly: on 200,000 of the 1M benchmark's visual rows the true five nearest were always among the ten
nearest by the codes, and at 1M rows 20 rows found what the whole 400-row shortlist found (docs/performance.md); a
full row read from a 10 GB file costs more than a whole shortlist of codes."""
"""Wide vectors rerank this many times the shortlist: 128 projected numbers keep less of a row than 136 whole
ones. At 1M visual rows even a flat scan of the projections held recall@5 0.993 with 200 rows reranked, 1.000 with
400 (``bench_wide_index.py``, docs/performance.md)."""
REBUILD_GROWTH = 2.0
REBUILD_TOMBSTONES = 0.1

_TINY = np.float32(1e-30)  # stands for 0 in FAISS's Canberra and Jensen-Shannon, whose 0/0 and 0 log 0 are NaN
_PCA_FIT_ROWS = 2048  # rows that fit the principal axes: more change them little, and cost seconds
_ADD_ROWS = 65_536  # rows transformed and added at once: bounds the float64 temporaries
_PREADV = hasattr(os, "preadv")  # not on Windows: rows are then read through the map
_SCRATCH_NUMBERS = 4_000_000  # numbers a thread's gather buffers hold at most (48 MB of float32 and float64)
_MAX_SEGMENTS = 8  # vector files a saved folder may hold before a save merges them into one
_THREADS = ThreadpoolController()  # after `import faiss`, so that it knows FAISS's OpenMP and OpenBLAS


def shortlist_size(rows: int) -> int:
    """Rows reranked exactly for a catalog of ``rows``: 100 up to 100k, then 100 more per tenfold, up to 500.

    The ANN indexes lose a neighbour now and then as the catalog grows denser; a longer shortlist buys the recall
    back, at the price of a longer graph search (efSearch follows it). At 1M audio rows (FAISS's Bray-Curtis
    graph, warm cache) 100 / 200 / 400 rows gave recall@5 0.980 / 0.993 / 1.000 at 2.2 / 2.3 / 3.6 ms p50; with the
    L2 graph now used, 0.993 / 1.000 / 1.000 at 0.44 / 0.71 / 1.39 ms searched right after a two-thread build, but
    1.000 at 1.6 ms with 200 through :meth:`FaissSearcher.build`, reloaded (docs/performance.md): 200 is kept there,
    and
    wide vectors rerank :data:`WIDE_SHORTLIST` times as many (400 at 1M, where issue 13 measured 300-500).
    """
    if rows <= 100_000:
        return SHORTLIST_MIN
    return int(min(SHORTLIST_MAX, SHORTLIST_MIN + 100 * math.log10(rows / 100_000)))


def _transform(rows: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows moved into ``space`` as float32 for FAISS, and which of them are usable there.

    Parameters
    ----------
    rows : np.ndarray
        ``(n, d)``, any float dtype.
    space : str
        One of the spaces of :data:`FAISS_METRICS`.

    Returns
    -------
    moved : np.ndarray
        float32 ``(n, d)``, C-contiguous (unusable rows are zeros).
    usable : np.ndarray
        bool ``(n,)``: rows whose distances to anything can be finite (a row without a direction has no cosine; one
        with a negative number no Jensen-Shannon).
    """
    moved = np.array(rows, dtype=np.float64)
    usable = np.isfinite(moved).all(axis=1)
    moved[~usable] = 0.0
    if space == "centred-unit":
        moved -= moved.mean(axis=1, keepdims=True)
    if space in ("unit", "centred-unit"):
        norms = np.sqrt(np.einsum("ij,ij->i", moved, moved))
        usable &= norms > 0
        moved[usable] /= norms[usable, None]
    elif space == "distribution":
        sums = moved.sum(axis=1)
        usable &= (moved >= 0).all(axis=1) & (sums > 0)
        moved[usable] /= sums[usable, None]
    moved[~usable] = 0.0
    out = np.ascontiguousarray(moved, dtype=np.float32)
    if space in ("canberra", "distribution"):
        # FAISS's Canberra is NaN for 0/0 and its Jensen-Shannon for 0 log 0, which scipy takes as 0.
        out[out == 0] = _TINY
    return out, usable


class _Projection:
    """Principal axes of wide rows, and each row's distance from them: the squared euclidean distance between two
    rows' projections is the squared distance along the axes, plus the row's own part off them.

    A catalog row ``x`` becomes ``(x - mean) @ axes.T`` followed by ``||x - mean||^2 - ||(x - mean) @ axes.T||^2``
    under a square root (its residual's norm ``||r_x||``); a query ``q`` gets 0 there. Their squared L2 distance is
    then ``||x - q||^2 - ||r_q||^2 + 2 <r_x, r_q>``: the second term is the same for every row, and the third, the
    only one the projection loses, is zero on average. Without the residual, a row far off the axes looks as near
    as its projection: on 100k visual rows with 100 rows reranked, 128 axes alone held recall@5 0.967, 127 axes and
    the residual 1.000 (``bench_faiss.py --wide-shortlist 1``, docs/performance.md).

    Attributes
    ----------
    mean : np.ndarray
        float32 ``(d,)``.
    axes : np.ndarray
        float32 ``(rank, d)``, orthonormal rows.
    """

    def __init__(self, mean: np.ndarray, axes: np.ndarray) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.axes = np.ascontiguousarray(axes, dtype=np.float32)

    @property
    def width(self) -> int:
        """Numbers a projected row has: the axes' coordinates and the residual."""
        return self.axes.shape[0] + 1

    @classmethod
    def fit(cls, sample: np.ndarray, rank: int, generator: np.random.Generator) -> _Projection:
        """Fit on ``sample`` ``(m, d)`` by a randomized range finder with two power iterations.

        Why not FAISS's ``PCAMatrix``: it forms the ``d x d`` covariance (or the ``m x m`` Gram matrix) and its
        full eigendecomposition, over two minutes for 20,000 x 2,560 rows on this machine; a range finder of
        ``rank + 16`` directions takes a few matrix products.
        """
        dims = sample.shape[1]
        if sample.shape[0] < 2:
            return cls(np.zeros(dims), np.eye(rank, dims))
        rows = sample.astype(np.float64)
        mean = rows.mean(axis=0)
        rows -= mean
        width = min(rank + 16, *rows.shape)
        basis, _ = np.linalg.qr(rows @ generator.standard_normal((dims, width)))
        for _ in range(2):
            basis, _ = np.linalg.qr(rows.T @ basis)
            basis, _ = np.linalg.qr(rows @ basis)
        _, _, right = np.linalg.svd(basis.T @ rows, full_matrices=False)
        axes = right[:rank]
        if axes.shape[0] < rank:  # fewer sample rows than axes: pad with orthonormal completions
            extra = np.linalg.qr(np.vstack([axes, generator.standard_normal((rank - axes.shape[0], dims))]).T)[0].T
            axes = extra[:rank]
        return cls(mean, axes)

    def apply(self, rows: np.ndarray, *, queries: bool = False) -> np.ndarray:
        """float32 ``(n, width)``: the coordinates of float32 ``rows`` ``(n, d)`` and their residuals' norms (0 for
        ``queries``)."""
        centred = rows - self.mean
        out = np.empty((rows.shape[0], self.width), dtype=np.float32)
        out[:, :-1] = centred @ self.axes.T
        if queries:
            out[:, -1] = 0.0
        else:
            left = np.square(centred).sum(axis=1, dtype=np.float64) - np.square(out[:, :-1]).sum(axis=1,
                                                                                                   dtype=np.float64)
            out[:, -1] = np.sqrt(np.maximum(left, 0.0))
        return out


def _thread_buffers(scratch: threading.local, rows: int, dims: int, dtypes: tuple) -> tuple[np.ndarray, ...]:
    """This thread's ``(rows, dims)`` buffers, one per dtype in ``dtypes``: kept from one call to the next (a fresh
    array's pages are page faults on every query), grown when a call needs more rows."""
    if getattr(scratch, "rows", -1) < rows:
        scratch.buffers = tuple(np.empty((rows, dims), dtype=dtype) for dtype in dtypes)
        scratch.rows = rows
    return tuple(buffer[:rows] for buffer in scratch.buffers)


class _Codes:
    """Each wide row's 8-bit codes in the metric's space, which rank a shortlist before any full row is read.

    Each dimension is cut into 255 equal steps between its smallest and largest value in the fitting sample (a
    value outside is clipped). The squared euclidean distance from a query ``q`` to a coded row ``c`` is
    ``||low - q||^2 + 2 c . ((low - q) * step) + ||c * step||^2``: the first term is the same for every row and the
    last is kept per row, so that a shortlist's estimates are one product of its codes with one vector (0.6 ms for
    400 rows of 2,560, where FAISS's scalar quantizer computed them one call a row in 1.4 ms).

    Attributes
    ----------
    low, step : np.ndarray
        float32 ``(d,)``.
    """

    def __init__(self, low: np.ndarray, step: np.ndarray, codes: np.ndarray, norms: np.ndarray,
                 count: int | None = None) -> None:
        self.low = np.ascontiguousarray(low, dtype=np.float32)
        self.step = np.ascontiguousarray(step, dtype=np.float32)
        self._codes = codes  # uint8 (capacity, d): rows beyond len(self) are room for adds
        self._norms = norms  # float32 (capacity,): ||c * step||^2
        self._count = len(norms) if count is None else count
        self._scratch = threading.local()

    def __len__(self) -> int:
        return self._count

    @classmethod
    def fit(cls, sample: np.ndarray, capacity: int) -> _Codes:
        """Steps from ``sample`` ``(m, d)`` (the metric's space), holding no rows yet, with room for ``capacity``."""
        dims = sample.shape[1]
        low = sample.min(axis=0) if len(sample) else np.zeros(dims)
        high = sample.max(axis=0) if len(sample) else np.ones(dims)
        step = np.where(high > low, (high - low) / 255.0, 1.0)
        return cls(low, step, np.empty((capacity, dims), dtype=np.uint8), np.empty(capacity, dtype=np.float32), 0)

    @property
    def codes(self) -> np.ndarray:
        """uint8 ``(n, d)``."""
        return self._codes[:self._count]

    @property
    def norms(self) -> np.ndarray:
        """float32 ``(n,)``."""
        return self._norms[:self._count]

    def append(self, rows: np.ndarray) -> None:
        """Code float32 ``rows`` ``(n, d)`` (the metric's space) after those held."""
        wanted = self._count + len(rows)
        if wanted > len(self._codes):
            # An eighth more room: adds come a few videos at a time, and a 1M-row copy is 2.5 GB.
            capacity = wanted + wanted // 8
            codes = np.empty((capacity, self._codes.shape[1]), dtype=np.uint8)
            codes[:self._count] = self.codes
            norms = np.empty(capacity, dtype=np.float32)
            norms[:self._count] = self.norms
            self._codes, self._norms = codes, norms
        coded = np.clip(np.rint((rows - self.low) / self.step), 0, 255).astype(np.uint8)
        self._codes[self._count:wanted] = coded
        self._norms[self._count:wanted] = np.square(coded * self.step).sum(axis=1, dtype=np.float64)
        self._count = wanted

    def nearest(self, query: np.ndarray, slots: np.ndarray, keep: int) -> np.ndarray:
        """Positions in ``slots`` of the ``keep`` rows nearest to float32 ``query`` ``(d,)`` by their codes, and of
        every row whose codes tie with the last of them (equal rows have equal codes: the exact rerank breaks their
        tie by id only if it measures them all)."""
        if slots.size <= keep:
            return np.arange(slots.size)
        codes, wide = _thread_buffers(self._scratch, slots.size, self.low.size, (np.uint8, np.float32))
        np.take(self._codes, slots, axis=0, out=codes)
        np.copyto(wide, codes)
        offset = self.low - query
        estimates = wide @ (2.0 * offset * self.step) + self._norms[slots]
        return np.flatnonzero(estimates <= np.partition(estimates, keep - 1)[keep - 1])


class _Rows:
    """The stored vectors, one row per slot, in segments: those mapped from a saved folder's files (which never
    change once written, so that a later save links them instead of copying), and those appended since.

    Attributes
    ----------
    segments : list of np.ndarray
        ``(rows, dims)`` each, in slot order.
    files : list of Path or None
        The file each segment is mapped from; None for one held in memory.
    streams : list of file or None
        Each mapped segment's open file, which :meth:`gather` reads: the file mapped, even after another process
        has put a new folder in its place.
    """

    def __init__(self, segments: list[np.ndarray], files: list[Path | None], streams: list[BinaryIO | None],
                 dtype: np.dtype, dims: int) -> None:
        self.segments = segments
        self.files = files
        self.streams = streams
        self.dtype = np.dtype(dtype)
        self.dims = dims
        self._starts = np.cumsum([0] + [len(segment) for segment in segments])
        self._scratch = threading.local()  # per thread: gather's buffers

    def __len__(self) -> int:
        return int(self._starts[-1])

    def append(self, rows: np.ndarray) -> None:
        self.segments.append(np.ascontiguousarray(rows, dtype=self.dtype))
        self.files.append(None)
        self.streams.append(None)
        self._starts = np.append(self._starts, self._starts[-1] + len(rows))

    def take(self, slots: np.ndarray, dtype: np.dtype = np.float64) -> np.ndarray:
        """``dtype`` ``(len(slots), d)``, a new array: only these rows are read (a memory map reads their pages
        only)."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(self.segments) == 1:
            return self.segments[0][slots].astype(dtype)
        out = np.empty((slots.size, self.dims), dtype=dtype)
        where = np.searchsorted(self._starts, slots, side="right") - 1
        for number in np.unique(where):
            chosen = where == number
            out[chosen] = self.segments[number][slots[chosen] - self._starts[number]]
        return out

    def gather(self, slots: np.ndarray) -> np.ndarray:
        """float64 ``(len(slots), d)``: the rows ``slots``, in this thread's scratch buffers, valid until its next
        call; a new array when they would pass :data:`_SCRATCH_NUMBERS` numbers.

        A query's rerank reads a few hundred rows of a file far larger than the CPU's caches. Taking them through
        the memory map into new arrays cost more than the distances: each new page of the map and of the fresh
        float32 and float64 arrays is a page fault (400 rows of 2,560 numbers from a 10 GB file: 13-18 ms, where
        reading them with ``preadv`` into buffers kept from one query to the next took 1.9 ms, on this
        virtual machine, docs/performance.md). Rows of a page or more in a saved segment are read from its file, in
        file order; narrower ones (several share a page, which stays mapped) and those appended since through the
        map or from memory.
        """
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size == 0 or slots.size * self.dims > _SCRATCH_NUMBERS:
            return self.take(slots)
        stored, wide = _thread_buffers(self._scratch, slots.size, self.dims, (self.dtype, np.float64))
        where = np.searchsorted(self._starts, slots, side="right") - 1
        row_bytes = self.dims * self.dtype.itemsize
        view = memoryview(stored).cast("B")
        for number in np.unique(where):
            chosen = np.flatnonzero(where == number)
            local = slots[chosen] - self._starts[number]
            stream = self.streams[number] if _PREADV and row_bytes >= mmap.PAGESIZE else None
            if stream is None:  # held in memory, or narrow rows: several share a page of the map
                stored[chosen] = self.segments[number][local]
                continue
            order = np.argsort(local, kind="stable")
            handle = stream.fileno()
            for place, row in zip(chosen[order].tolist(), local[order].tolist(), strict=True):
                if os.preadv(handle, [view[place * row_bytes:(place + 1) * row_bytes]], row * row_bytes) < row_bytes:
                    raise OSError(f"{self.files[number]}: shorter than its {len(self.segments[number])} rows")
        np.copyto(wide, stored)
        return wide


class FaissSearcher:
    """One feature space's vectors behind a FAISS index, answering with scipy's exact distances; a
    :class:`~mvr.index.base.Searcher`.

    Build with :meth:`build` or :meth:`load`; the constructor is internal.

    Attributes
    ----------
    metric : str
        The scipy metric name.
    kind : str
        The FAISS index: ``flat``, ``hnsw`` or ``ivf``.
    dims : int
        Width of the vectors.
    threads : int
        OpenMP threads FAISS may use in a call.
    """

    def __init__(self, *, metric: str, kind: str, dims: int, index: faiss.Index, pca: _Projection | None,
                 codes: _Codes | None, rows: _Rows, slot_ids: np.ndarray, dead: np.ndarray, usable: np.ndarray,
                 sample_slots: np.ndarray, fit_rows: int, auto: bool, threads: int) -> None:
        self.metric = metric
        self.kind = kind
        self.dims = dims
        self.threads = threads
        self._space, self._faiss_metric = FAISS_METRICS[metric]
        self._index = index
        self._pca = pca
        self._codes = codes  # wide rows only: their 8-bit codes, ranking the shortlist
        self._rows = rows
        self._slot_ids = slot_ids  # int64 (slots,): the video id of each FAISS label (labels are slots)
        self._dead = dead  # bool (slots,): tombstones
        self._usable = usable  # bool (slots,): rows FAISS may return (transform defined)
        self._sample_slots = sample_slots  # int64 (m,): the scale sample, drawn at the build
        self._sample: tuple[np.ndarray, np.ndarray] | None = None  # its live ids and float64 rows, read once
        self._fit_rows = fit_rows
        self._auto = auto
        self._refresh()

    @staticmethod
    def supports(metric: str, dims: int) -> bool:
        """Whether a FAISS index can shortlist ``metric`` on ``dims``-wide vectors.

        Raises
        ------
        UsageError
            For a name outside :data:`mvr.index.base.METRICS`.
        """
        check_metric(metric)
        return metric in FAISS_METRICS and (dims < WIDE_DIMS or metric in WIDE_METRICS)

    # building ----------------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, metric: str, *, threads: int = 1, kind: str = "auto",
              storage: str = "float32", seed: int = 0) -> FaissSearcher:
        """Index ``vectors`` under ``ids`` for ``metric``.

        Parameters
        ----------
        ids : np.ndarray
            int64 ``(n,)``: unique ids, in any order.
        vectors : np.ndarray
            ``(n, d)`` float (the catalog's float32 vectors are stored as they are).
        metric : str
            A metric :meth:`supports` for ``d``.
        threads : int
            OpenMP threads FAISS may use (building and searching).
        kind : str
            One of :data:`KINDS`; ``auto`` chooses by size (module docstring).
        storage : str
            ``float32`` (exact distances) or ``float16`` (half the memory; distances on the rounded vectors).
        seed : int
            Seeds the row samples, so that a build answers the same way every time.

        Raises
        ------
        ValueError
            For a metric without a FAISS index on these vectors, an unknown kind or storage, duplicate ids, or a
            kind the metric cannot use (an inverted file is for wide, euclidean-like spaces only).
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != ids.size:
            raise ValueError(f"vectors must be (len(ids), d); got {vectors.shape} for {ids.size} ids")
        if np.unique(ids).size != ids.size:
            raise ValueError("ids must be unique")
        n, dims = vectors.shape
        if not cls.supports(metric, dims):
            raise ValueError(f"{metric}: no FAISS index for {dims}-dimensional vectors; use the exact scan")
        if kind not in KINDS:
            raise ValueError(f"unknown kind '{kind}'; choose one of: {', '.join(KINDS)}")
        if storage not in ("float32", "float16"):
            raise ValueError("storage must be float32 or float16")
        auto = kind == "auto"
        if auto:
            kind = _auto_kind(n, dims, metric)
        space, faiss_metric = FAISS_METRICS[metric]
        if kind == "ivf" and metric not in WIDE_METRICS:
            raise ValueError(f"{metric}: an inverted file indexes euclidean-like spaces only")
        generator = np.random.default_rng(seed)
        fit = np.sort(generator.choice(n, min(n, _PCA_FIT_ROWS), replace=False)) if n else np.zeros(0, np.int64)
        # A generator of its own: the fit's draws (and so the principal axes) stay those recall was measured with.
        sample_slots = np.sort(np.random.default_rng([seed, 1]).choice(n, min(n, SCALE_SAMPLE_ROWS), replace=False))
        with _THREADS.limit(limits=threads):
            pca = None
            if dims >= WIDE_DIMS and kind != "flat":
                sample_rows, sample_usable = _transform(vectors[fit], space)
                # The projection is fitted in the metric's space, so it keeps that space's euclidean geometry.
                pca = _Projection.fit(sample_rows[sample_usable], min(PCA_RANK, dims), generator)
                # Centred projections: inner products no longer rank unit rows; squared L2 still does.
                faiss_metric = faiss.METRIC_L2
            width = dims if pca is None else pca.width
            index = _new_index(kind, width, faiss_metric, n)
            codes = None if pca is None else _Codes.fit(sample_rows[sample_usable], n)
            store_dtype = np.float16 if storage == "float16" else np.float32
            rows = _Rows([np.ascontiguousarray(vectors, dtype=store_dtype)], [None], [None], store_dtype, dims)
            usable = np.zeros(n, dtype=bool)
            added = np.empty((n, width), dtype=np.float32)
            for start in range(0, n, _ADD_ROWS):
                moved, usable[start:start + _ADD_ROWS] = _transform(vectors[start:start + _ADD_ROWS], space)
                added[start:start + _ADD_ROWS] = moved if pca is None else pca.apply(moved)
                if codes is not None:
                    codes.append(moved)
            if not index.is_trained:
                # An inverted file's centroids, from the rows as it holds them: IVF_TRAIN_PER_LIST for each list.
                held = np.flatnonzero(usable)
                wanted = min(held.size, IVF_TRAIN_PER_LIST * _ivf_lists(n))
                index.train(added[np.sort(generator.choice(held, wanted, replace=False))])
            # One add: an HNSW graph built from 65,536-row adds lost neighbours at 1M audio rows (recall@5 0.98,
            # 2.2 ms a query; one add: 1.0, 1.6 ms; docs/performance.md). The rows are still transformed in chunks.
            index.add(added)
            del added
        return cls(metric=metric, kind=kind, dims=dims, index=index, pca=pca, codes=codes, rows=rows,
                   slot_ids=ids.copy(),
                   dead=np.zeros(n, dtype=bool), usable=usable, sample_slots=sample_slots.astype(np.int64),
                   fit_rows=n, auto=auto, threads=threads)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows under new ``ids`` (incremental: the fitted axes and index structure stay).

        Raises
        ------
        ValueError
            When an id is already held (remove it first), or the vectors' width differs.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (ids.size, self.dims):
            raise ValueError(f"vectors must be ({ids.size}, {self.dims}); got {vectors.shape}")
        if np.unique(ids).size != ids.size or np.isin(ids, self.ids).any():
            raise ValueError("ids must be new and unique")
        if ids.size == 0:
            return
        usable = np.zeros(ids.size, dtype=bool)
        with _THREADS.limit(limits=self.threads):
            for start in range(0, ids.size, _ADD_ROWS):
                moved, usable[start:start + _ADD_ROWS] = _transform(vectors[start:start + _ADD_ROWS], self._space)
                self._index.add(moved if self._pca is None else self._pca.apply(moved))
                if self._codes is not None:
                    self._codes.append(moved)
        self._rows.append(vectors)
        self._slot_ids = np.concatenate([self._slot_ids, ids])
        self._dead = np.concatenate([self._dead, np.zeros(ids.size, dtype=bool)])
        self._usable = np.concatenate([self._usable, usable])
        self._refresh()

    def remove(self, ids: np.ndarray) -> int:
        """Tombstone ``ids``: they are never returned again, and their rows stay until a rebuild.

        Returns
        -------
        int
            How many of ``ids`` were held (the others are ignored).
        """
        hit = np.isin(self._slot_ids, np.asarray(ids, dtype=np.int64)) & ~self._dead
        self._dead |= hit
        self._refresh()
        return int(hit.sum())

    @property
    def needs_rebuild(self) -> bool:
        """Whether to build again: the catalog has doubled since the fit (axes, graph and lists were fitted to the
        smaller one), a tenth of the rows are tombstones (they cost memory and shortlist places), or ``auto``
        would now choose another kind of index."""
        slots = self._slot_ids.size
        live = slots - int(self._dead.sum())
        return (slots >= REBUILD_GROWTH * max(self._fit_rows, 1)
                or self._dead.sum() >= REBUILD_TOMBSTONES * max(slots, 1)
                or (self._auto and _auto_kind(live, self.dims, self.metric) != self.kind))

    # the interface -----------------------------------------------------------------------------------------------

    @property
    def ids(self) -> np.ndarray:
        """int64 ``(n,)``: the ids held (tombstones left out), ascending."""
        return self._sorted_ids

    def __len__(self) -> int:
        return self._sorted_ids.size

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed random sample of the rows drawn at the build and saved with the index, less tombstones: ids
        int64 ``(m,)`` and rows float64 ``(m, d)`` (read once from the stored vectors)."""
        if self._sample is None:
            slots = self._sample_slots[~self._dead[self._sample_slots]]
            self._sample = (self._slot_ids[slots], self._rows.take(slots))
        return self._sample

    def search(self, queries: np.ndarray, k: int, *, exclude: Exclusions = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of each query, with scipy's exact distances (see :class:`mvr.index.base.Searcher`).

        The shortlist of every query comes from one FAISS call; each excluded id can take a shortlist place, so
        the shortlist grows by as many (tombstones and rows without a transform are kept out by FAISS's selector).
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        if queries.shape[1] != self.dims:
            raise ValueError(f"queries have {queries.shape[1]} dimensions, the index {self.dims}")
        if exclude and len(exclude) != queries.shape[0]:
            raise ValueError(f"exclude has {len(exclude)} entries for {queries.shape[0]} queries")
        blocked = [np.fromiter(found, dtype=np.int64, count=len(found)) for found in exclude] if exclude else None
        extra = max(found.size for found in blocked) if blocked else 0
        base = shortlist_size(len(self)) * (WIDE_SHORTLIST if self._pca is not None else 1)
        size = min(max(base, 2 * k) + extra, self._searchable_count)
        if size == 0:
            return top_k(np.full((queries.shape[0], 0), np.inf), np.zeros(0, dtype=np.int64), k)
        transformed = _transform(queries, self._space)
        slots = self._shortlist(transformed, size)
        candidates = np.where(slots >= 0, self._slot_ids[slots], -1)
        distances = np.full(slots.shape, np.nan)
        beyond = size < self._searchable_count  # rows outside the shortlist might still have a distance
        undecided = []
        for number, query in enumerate(queries):
            found = slots[number] >= 0
            if blocked is not None and blocked[number].size:
                found &= ~np.isin(candidates[number], blocked[number])
            if self._codes is not None:
                chosen = np.flatnonzero(found)
                nearest = self._codes.nearest(transformed[0][number], slots[number, chosen], _rows_measured(k))
                found = np.zeros_like(found)
                found[chosen[nearest]] = True
            exact = distances[number, found] = self._exact(query, self._rows.gather(slots[number, found]))
            finite = exact[np.isfinite(exact)]
            if (finite.size < k and beyond) or (finite.size > 1 and np.ptp(finite) == 0):
                undecided.append(number)
        answer = top_k(distances, candidates, k)
        for number in undecided:
            answer[0][number], answer[1][number] = self._scan(queries[number], k,
                                                              None if blocked is None else blocked[number])
        return answer

    def _scan(self, query: np.ndarray, k: int, blocked: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One query's ``k`` nearest over every row, for a shortlist that cannot decide: fewer than ``k`` finite
        distances where more rows may have one, or all of them equal (the nearest are then the lowest ids, which
        a shortlist need not hold)."""
        slots = np.flatnonzero(self._searchable)
        if blocked is not None and blocked.size:
            slots = slots[~np.isin(self._slot_ids[slots], blocked)]
        parts = np.array_split(slots, max(1, slots.size // _ADD_ROWS))  # bounds the float64 rows read at once
        distances = np.concatenate([self._exact(query, self._rows.take(part)) for part in parts])
        found, ids = top_k(distances[None], self._slot_ids[slots], k)
        return found[0], ids[0]

    # persistence -------------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, *, meta: dict) -> None:
        """Write the index, the stored vectors and ``meta`` into ``folder``, replacing it as a whole.

        ``meta`` is what makes the index valid for its owner (a catalog's generation and extractor string);
        :meth:`saved_meta` reads it back. Everything is written into a temporary folder beside ``folder``, which
        then takes its place by renames, so that a reader finds the old folder, the new one or none, never a mix.
        Vector files the searcher is mapped from never change, so they are hard-linked into the new folder (copied
        where links fail) and only the rows appended since are written; past :data:`_MAX_SEGMENTS` files they are
        merged into one. Afterwards the stored vectors are mapped from ``folder``.

        Raises
        ------
        OSError
            When the folder cannot be written (a read-only catalog); ``folder`` is then left as it was.
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
        temporary.mkdir()
        try:
            suffix = "f16" if self._rows.dtype == np.float16 else "f32"
            segments = list(zip(self._rows.segments, self._rows.files, strict=True))
            if len(segments) > _MAX_SEGMENTS:
                segments = [(np.concatenate(self._rows.segments), None)]
            counts = []
            for number, (segment, source) in enumerate(segments):
                target = temporary / f"vectors-{number}.{suffix}"
                if source is not None and source.exists():
                    try:
                        os.link(source, target)
                    except OSError:  # another file system, or one without links
                        shutil.copyfile(source, target)
                else:
                    with open(target, "wb") as handle:
                        for start in range(0, len(segment), _ADD_ROWS):
                            handle.write(np.ascontiguousarray(segment[start:start + _ADD_ROWS]).tobytes())
                counts.append(len(segment))
            with _THREADS.limit(limits=self.threads):
                faiss.write_index(self._index, str(temporary / "index.faiss"))
            arrays = {"slot_ids": self._slot_ids, "dead": self._dead, "usable": self._usable,
                      "sample_slots": self._sample_slots}
            if self._pca is not None:
                arrays.update(pca_mean=self._pca.mean, pca_axes=self._pca.axes, code_low=self._codes.low,
                              code_step=self._codes.step, codes=self._codes.codes, code_norms=self._codes.norms)
            for name, array in arrays.items():
                np.save(temporary / f"{name}.npy", array, allow_pickle=False)
            record = {
                "layout": LAYOUT, "meta": _jsonable(meta), "metric": self.metric, "kind": self.kind,
                "dims": self.dims, "segments": counts, "storage": suffix, "pca": self._pca is not None,
                "fit_rows": self._fit_rows, "auto": self._auto, "faiss": faiss.__version__,
            }
            (temporary / "meta.json").write_text(json.dumps(record, indent=1, sort_keys=True))
            _swap(temporary, folder)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        self._rows = _map_rows(folder, suffix, counts, self.dims)

    @staticmethod
    def saved_meta(folder: str | os.PathLike) -> dict | None:
        """The ``meta`` a folder was saved with, and its ``metric``; None for a missing folder or one of another
        layout version."""
        try:
            record = json.loads((Path(folder) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("layout") != LAYOUT or not isinstance(record.get("meta"), dict):
            return None
        return {**record["meta"], "metric": record.get("metric")}

    @classmethod
    def load(cls, folder: str | os.PathLike, *, threads: int = 1) -> FaissSearcher | None:
        """The searcher saved in ``folder``, its vectors memory-mapped; None when the folder is missing, of another
        layout version, or incomplete. Whether it is current is the caller's question (:meth:`saved_meta`)."""
        folder = Path(folder)
        saved = _read_saved(folder)
        if saved is None:
            return None
        record, rows, arrays = saved
        try:
            with _THREADS.limit(limits=threads):
                index = faiss.read_index(str(folder / "index.faiss"))
            pca = codes = None
            if record["pca"]:
                pca = _Projection(np.load(folder / "pca_mean.npy"), np.load(folder / "pca_axes.npy"))
                codes = _Codes(*(np.load(folder / f"{name}.npy", allow_pickle=False)
                                 for name in ("code_low", "code_step", "codes", "code_norms")))
        except (OSError, KeyError, TypeError, ValueError, RuntimeError):
            return None
        if (index.ntotal != len(rows) or record["metric"] not in FAISS_METRICS
                or (codes is not None and (len(codes) != len(rows) or codes.codes.shape[1] != rows.dims))):
            return None
        return cls(metric=record["metric"], kind=record["kind"], dims=rows.dims, index=index, pca=pca,
                   codes=codes, rows=rows,
                   slot_ids=arrays["slot_ids"], dead=arrays["dead"], usable=arrays["usable"],
                   sample_slots=arrays["sample_slots"], fit_rows=int(record["fit_rows"]), auto=bool(record["auto"]),
                   threads=threads)

    @staticmethod
    def load_vectors(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored vectors of a saved folder alone (no FAISS index read), in id order: ids int64 ``(n,)``
        ascending (tombstones left out) and float32 rows ``(n, d)``; None when the folder is missing, of another
        layout version, incomplete, or stores float16 (rounded, not the catalog's numbers).

        A folder saved from one build holds its rows in id order, and they come back memory-mapped: nothing is read
        until a row is used. After incremental adds (several segments) or removals they are gathered into memory
        in id order, as float32.
        """
        saved = _read_saved(Path(folder))
        if saved is None or saved[1].dtype != np.float32:
            return None
        _, rows, arrays = saved
        slot_ids, dead = arrays["slot_ids"], arrays["dead"]
        if len(rows.segments) == 1 and not dead.any() and (np.diff(slot_ids) > 0).all():
            return slot_ids, rows.segments[0]
        live = np.flatnonzero(~dead)
        order = live[np.argsort(slot_ids[live], kind="stable")]
        return slot_ids[order], rows.take(order, np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes the FAISS index and the projection hold in memory (the stored vectors are mapped apart)."""
        with _THREADS.limit(limits=self.threads):
            size = faiss.serialize_index(self._index).nbytes
        if self._pca is not None:
            size += self._pca.axes.nbytes + self._pca.mean.nbytes + self._codes.codes.nbytes + self._codes.norms.nbytes
        return int(size)

    # internals ---------------------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Recompute what tombstones and adds change: the sorted live ids and FAISS's selector."""
        live = np.flatnonzero(~self._dead)
        self._sorted_ids = np.sort(self._slot_ids[live])
        self._sample = None
        self._searchable = self._usable & ~self._dead
        # Counted once here: summing a 1M-row mask on every query took 0.9 ms of a 1.5 ms audio search at 1M rows.
        self._searchable_count = int(np.count_nonzero(self._searchable))
        if self._searchable.all():
            self._selector = self._bitmap = None
        else:
            # FAISS reads bit i of byte i // 8, least significant first; it keeps a pointer, not a copy, so the
            # bitmap must live as long as the selector.
            self._bitmap = np.packbits(self._searchable, bitorder="little")
            self._selector = faiss.IDSelectorBitmap(self._searchable.size, faiss.swig_ptr(self._bitmap))

    def _shortlist(self, transformed: tuple[np.ndarray, np.ndarray], size: int) -> np.ndarray:
        """FAISS labels (slots) int64 ``(q, size)`` of each query's shortlist, -1 where none, from the queries as
        :func:`_transform` moves them into the metric's space (and which of them are usable there)."""
        moved, usable = transformed
        labels = np.full((moved.shape[0], size), -1, dtype=np.int64)
        if not usable.any():
            return labels  # a query without a transform has no finite distance to anything
        with _THREADS.limit(limits=self.threads):
            points = moved[usable] if self._pca is None else self._pca.apply(moved[usable], queries=True)
            if self.kind == "hnsw":
                # The graph search keeps efSearch candidates: fewer than the shortlist would cut it short.
                params = faiss.SearchParametersHNSW(efSearch=max(size, 64))
            elif self.kind == "ivf":
                params = faiss.SearchParametersIVF(nprobe=IVF_NPROBE)
            else:
                params = faiss.SearchParameters()
            if self._selector is not None:
                params.sel = self._selector
            _, found = self._index.search(points, size, params=params)
        labels[usable] = found
        return labels

    def _exact(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """scipy's distances float64 ``(n,)`` from one query to float64 ``rows`` ``(n, d)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return cdist(query[None, :], rows, self.metric)[0]


def _rows_measured(k: int) -> int:
    """Rows of a wide shortlist read in full and measured for ``k`` answers: the ``k`` nearest by the codes and
    :data:`REFINE_EXTRA` more, or half as many more for a long answer (near-ties are what the codes misorder)."""
    return k + max(REFINE_EXTRA, k // 2)


def _auto_kind(rows: int, dims: int, metric: str) -> str:
    if rows * dims <= (SCALAR_FLAT_MAX_WORK if metric in SCALAR_METRICS else FLAT_MAX_WORK):
        return "flat"
    if dims >= WIDE_DIMS and rows >= IVF_MIN_ROWS:
        return "ivf"
    return "hnsw"


def _new_index(kind: str, width: int, faiss_metric: int, rows: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlat(width, faiss_metric)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(width, HNSW_M, faiss_metric)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index
    return faiss.index_factory(width, f"IVF{_ivf_lists(rows)},Flat", faiss_metric)


def _ivf_lists(rows: int) -> int:
    """An inverted file's lists for ``rows`` rows: about ``4 sqrt(n)``, as FAISS's guidelines give."""
    return int(max(16, min(4 * math.sqrt(max(rows, 1)), rows // IVF_TRAIN_PER_LIST)))


def _read_saved(folder: Path) -> tuple[dict, _Rows, dict[str, np.ndarray]] | None:
    """A saved folder's record (``meta.json``), its mapped rows and its per-slot arrays (``slot_ids``, ``dead``,
    ``usable``, and ``sample_slots``); None when it is missing, of another layout version, or incomplete."""
    try:
        record = json.loads((folder / "meta.json").read_text())
        if not isinstance(record, dict) or record.get("layout") != LAYOUT:
            return None
        dims, counts, suffix = int(record["dims"]), [int(c) for c in record["segments"]], record["storage"]
        itemsize = 2 if suffix == "f16" else 4
        for number, count in enumerate(counts):
            if (folder / f"vectors-{number}.{suffix}").stat().st_size != count * dims * itemsize:
                return None
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False)
                  for name in ("slot_ids", "dead", "usable", "sample_slots")}
    except (OSError, KeyError, TypeError, ValueError):
        return None
    slots = sum(counts)
    if any(arrays[name].shape != (slots,) for name in ("slot_ids", "dead", "usable")):
        return None
    sample = arrays["sample_slots"]
    if sample.ndim != 1 or ((sample < 0) | (sample >= slots)).any():
        return None
    arrays = {"slot_ids": arrays["slot_ids"].astype(np.int64), "dead": arrays["dead"].astype(bool),
              "usable": arrays["usable"].astype(bool), "sample_slots": sample.astype(np.int64)}
    return record, _map_rows(folder, suffix, counts, dims), arrays


def _map_rows(folder: Path, suffix: str, counts: list[int], dims: int) -> _Rows:
    dtype = np.dtype(np.float16 if suffix == "f16" else np.float32)
    files = [folder / f"vectors-{number}.{suffix}" if count else None for number, count in enumerate(counts)]
    # An empty file cannot be mapped; its segment is an empty array, which a later save writes again. Each file is
    # opened once, and mapped and read through that opening.
    streams = [None if path is None else open(path, "rb") for path in files]  # noqa: SIM115 (held by the rows)
    segments = [np.zeros((0, dims), dtype) if stream is None else np.memmap(stream, dtype=dtype, mode="r",
                                                                               shape=(count, dims))
                for stream, count in zip(streams, counts, strict=True)]
    return _Rows(segments, files, streams, dtype, dims)


def _swap(new: Path, folder: Path) -> None:
    """Put the folder ``new`` in the place of ``folder``: a folder cannot be renamed over a full one, so the old one
    is renamed away first and removed after (a reader in between finds no folder, and builds)."""
    old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.old")
    try:
        os.rename(folder, old)
    except FileNotFoundError:
        old = None
    os.rename(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(meta: dict) -> dict:
    """``meta`` as it reads back from JSON (tuples become lists), so that saved and expected compare equal."""
    return json.loads(json.dumps(meta, sort_keys=True))
