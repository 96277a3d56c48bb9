"""Ranking a catalog for query vectors: one space's searcher, or the fusion of several spaces' searches.

Distances follow ``scipy.spatial.distance.cdist`` exactly. Some of the study's metrics are not meaningful on our
real-valued features (``jensenshannon`` needs non-negative vectors; ``hamming``, ``jaccard`` and ``sokalsneath``
compare values as booleans), so they can give every candidate the same distance. Such a ranking would be the
catalog's storage order, not an answer: :func:`rank` raises :class:`DegenerateMetricError` instead.

The catalog's searchers are built by a :class:`SearcherCache`, which whoever owns the catalog's queries keeps (a
command, the web service): it holds each space's vectors and searchers per catalog folder, space, extractor and
catalog generation, shared by threads. A large catalog's FAISS index is saved beside it
(:func:`mvr.index.build.catalog_searcher`): a new process loads it, and after videos are added it takes their rows.
A large space's vectors are then not read from the catalog at all: the pool maps the index's float32 vectors file
(:func:`mvr.index.build.saved_vectors`), so that a query reads only the rows it ranks; a small space's are held
as float64, which scipy computes in.

On large catalogs (where a space has an approximate searcher) a fused search asks each space's searcher
for a shortlist, ranks the union of the shortlists with the exact per-space distances, and puts each space on
its scale with statistics from the searcher's fixed sample of the catalog (saved with its index); the shortlists
grow from short ones only while a video outside them could still rank (:func:`_rank_fused_shortlist`);
``exact=True`` scans everything instead. ``docs/performance.md`` gives the times and the recall.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr.errors import CatalogError, DegenerateMetricError
from mvr.index.base import SCALE_SAMPLE_ROWS, Searcher, check_metric
from mvr.index.build import FAISS_MIN_ROWS, catalog_searcher, saved_vectors
from mvr.index.exact import ExactSearcher
from mvr.retrieval.fusion import (
    Distances,
    Fusion,
    Pool,
    combine,
    distances,
    row_statistics,
)
from mvr.retrieval.ranking import farther_share, first_k
from mvr.store import Catalog

# Rows per fused shortlist from each space: the first try, and the most (the threshold algorithm's shortlists grow
# from the first to the most while a video outside them could still rank).
_FUSED_FIRST = 25
_FUSED_SHORTLIST = 200


@dataclass
class Ranked:
    """One query's answer: the ``k`` nearest ids and their distances, and, for late fusion, each space's part.

    Attributes
    ----------
    ids : np.ndarray
        int64 ``(m,)``, nearest first (``m <= k``: only candidates with a finite distance).
    distances : np.ndarray
        float64 ``(m,)``: what ranked them.
    parts : dict
        Late fusion: space -> float64 ``(m,)``, the space's raw distances.
    scores : dict
        Late fusion: space -> float64 ``(m,)``, the space's weighted z-scores (they add up to ``distances``).
    similarity : np.ndarray, optional
        float64 ``(m,)``: the share of the query's other candidates that are farther (:func:`farther_share`);
        None where only the first ``k`` were seen (one space's searcher).
    space_similarity : dict
        Late fusion: space -> float64 ``(m,)``, the same share by that space's distance alone. On a large catalog
        an estimate: videos outside the shortlists count as farther, and a distance the threshold algorithm did not
        measure counts at its bound (:func:`_rank_fused_shortlist`).
    tied_at_cut : bool
        The k-th result has the same distance as a candidate left out (:mod:`mvr.retrieval.ranking`).
    """

    ids: np.ndarray
    distances: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    similarity: np.ndarray | None = None
    space_similarity: dict[str, np.ndarray] = field(default_factory=dict)
    tied_at_cut: bool = False


class SearcherCache:
    """The catalog's pools and searchers, built on first use and kept while the catalog stands still.

    One cache serves every thread and every open connection of a process: entries are keyed by catalog folder,
    spaces, extractors and the catalog's generation (:meth:`mvr.store.Catalog.generation`), so that a connection
    per thread finds what another thread built, and a change by any process is seen at the next query.

    Parameters
    ----------
    threads : int
        Threads a FAISS searcher may use in one call (a web server's query threads each make their own calls).
    min_rows : int
        Rows of a space from which its searcher is a saved FAISS index rather than the exact scan, and from which
        its pool rows stay float32 (mapped from that index's vectors file once it is saved) rather than float64.
    """

    def __init__(self, threads: int = 1, min_rows: int = FAISS_MIN_ROWS) -> None:
        self.threads = threads
        self.min_rows = min_rows
        self._lock = threading.Lock()
        self._pools: dict[tuple, Pool] = {}
        self._searchers: dict[tuple, Searcher] = {}
        self._building: dict[tuple, threading.Lock] = {}  # per key: a FAISS build takes seconds to a minute

    def pool(self, catalog: Catalog, spaces: tuple[str, ...]) -> Pool:
        """The vectors of the videos that have every space in ``spaces``, aligned: a space with a current saved
        index, its memory-mapped float32 rows; one of fewer than ``min_rows`` rows, float64; float32 otherwise.

        Raises
        ------
        CatalogError
            When no indexed video has them.
        """
        key = self._key(catalog, spaces)
        with self._lock:
            found = self._pools.get(key)
        if found is not None:
            return found
        found = _load_pool(catalog, spaces, self.min_rows)
        with self._lock:
            # Entries of an older generation of the same catalog are dead: drop them with the new one's arrival.
            # Keys start (folder, spaces, extractors, generation); a searcher's adds (metric, exact).
            for entries in (self._pools, self._searchers):
                for old in [k for k in entries if k[0] == key[0] and k[3] != key[3]]:
                    del entries[old]
            return self._pools.setdefault(key, found)

    def searcher(self, catalog: Catalog, space: str, metric: str, *, exact: bool = False) -> Searcher:
        """The searcher of one space's vectors for ``metric``: the catalog's saved FAISS index where one pays
        (:func:`mvr.index.build.catalog_searcher`: loaded, brought up to date, or built and saved), unless
        ``exact``."""
        pool = self.pool(catalog, (space,))
        key = (*self._key(catalog, (space,)), metric, exact)
        with self._lock:
            found = self._searchers.get(key)
            if found is not None:
                return found
            building = self._building.setdefault(key, threading.Lock())
        # One build per key, by whichever thread asks first; threads asking for other keys do not wait for it.
        with building:
            with self._lock:
                found = self._searchers.get(key)
            if found is None:
                found = catalog_searcher(catalog, space, pool.ids, pool.matrices[space], metric, exact=exact,
                                         threads=self.threads, min_rows=self.min_rows)
                with self._lock:
                    self._searchers[key] = found
                    self._building.pop(key, None)
            return found

    @staticmethod
    def _key(catalog: Catalog, spaces: tuple[str, ...]) -> tuple:
        extractors = tuple(catalog.setting(f"extractor.{space}") for space in spaces)
        return (Path(catalog.root).resolve(), spaces, extractors, catalog.generation())


def _space_vectors(catalog: Catalog, space: str, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """One space's ids (ascending) and rows: a current saved index's mapped float32 ones, else the catalog's, as
    float64 below ``min_rows`` rows (cdist works in float64 and would convert them on every call), as float32 above
    (a float64 copy of 1M visual rows would take 20 GB)."""
    mapped = saved_vectors(catalog, space)
    if mapped is not None:
        return mapped
    found = catalog.matrix(space)
    if found is None:
        raise CatalogError(f"{catalog.root}: no video in this catalog has {space} vectors")
    if found.ids.size < min_rows:
        return found.ids, np.ascontiguousarray(found.vectors, dtype=np.float64)
    return found.ids, found.vectors


def _load_pool(catalog: Catalog, spaces: tuple[str, ...], min_rows: int) -> Pool:
    loaded = [_space_vectors(catalog, space, min_rows) for space in spaces]
    ids = loaded[0][0]
    for space_ids, _ in loaded[1:]:
        ids = np.intersect1d(ids, space_ids, assume_unique=True)
    if ids.size == 0:
        raise CatalogError(f"{catalog.root}: no video in this catalog has {' and '.join(spaces)} vectors")
    # A space holding exactly the pool's videos keeps its rows as they are (a memory map stays one).
    return Pool(ids=ids, matrices={
        space: matrix if np.array_equal(space_ids, ids) else matrix[np.searchsorted(space_ids, ids)]
        for space, (space_ids, matrix) in zip(spaces, loaded, strict=True)
    })


def rank(
    query: Mapping[str, np.ndarray],
    pool: Pool,
    metric: str,
    *,
    fusion: Fusion | None = None,
    k: int = 5,
    exclude: Collection[int] = frozenset(),
    searchers: Mapping[str, Searcher] | None = None,
) -> Ranked:
    """The ``k`` nearest videos of the pool to one query, nearest first; ties broken by video id ascending.

    Candidates whose distance is not a finite number (for example ``jensenshannon`` on negative values) are left
    out. With late fusion the distance is the weighted sum of the spaces' z-scores, so it can be negative; the
    answer then also gives each result's similarity (the share of candidates farther away). ``tied_at_cut`` says
    when the k-th result ties with a candidate left out.

    Parameters
    ----------
    query : mapping
        space -> ``(dims,)`` vector, for each of the pool's spaces.
    pool : Pool
        The candidates (from :meth:`SearcherCache.pool`).
    metric : str
        One of :data:`mvr.index.METRICS`: every space's that the fusion gives no metric of its own.
    fusion : Fusion, optional
        For a pool of several spaces.
    k : int
        How many.
    exclude : collection of int
        Video ids never returned (the query itself).
    searchers : mapping, optional
        space -> the space's searcher over the whole catalog (:meth:`SearcherCache.searcher`). Without them, or
        for a small catalog, every distance is computed exactly.

    Raises
    ------
    DegenerateMetricError
        When no candidate gets a finite distance, or all of them get the same one.
    """
    check_metric(metric)
    query = {space: np.asarray(query[space], dtype=np.float64) for space in pool.spaces}
    if searchers and (fusion is None or fusion.method == "concat") and len(pool.spaces) == 1:
        (space,) = pool.spaces
        # One more than asked tells whether the k-th ties with the first candidate left out.
        found, ids = searchers[space].search(query[space][None], k + 1, exclude=[exclude])
        kept = ids[0] >= 0
        # Equal distances all the way down might be a metric that ties everything: the exact scan tells.
        if kept.sum() > 1 and np.ptp(found[0][kept]) > 0.0:
            tied = bool(kept[k:].any() and found[0][k] == found[0][k - 1])
            return Ranked(ids=ids[0][:k][kept[:k]], distances=found[0][:k][kept[:k]], tied_at_cut=tied)
    excluded_ids = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
    # Shortlists pay where a space has an approximate searcher; below the scale sample's size, the exhaustive late
    # fusion costs less than shortlists plus the sample.
    if (searchers and fusion is not None and fusion.method == "late" and pool.ids.size >= SCALE_SAMPLE_ROWS
            and any(not isinstance(searchers[space], ExactSearcher) for space in pool.spaces)):
        return _rank_fused_shortlist(query, pool, metric, fusion, k, excluded_ids, searchers)
    excluded = np.isin(pool.ids, excluded_ids)
    return _ranked(distances(query, pool, metric, fusion, excluded[None, :]), pool.ids, metric, k)


def check_ranking(total: np.ndarray, metric: str) -> np.ndarray:
    """Which of one query's candidates ``total`` (float ``(n,)``) ranks: those with a finite distance, bool ``(n,)``.

    Raises
    ------
    DegenerateMetricError
        When no candidate has a finite distance, or all of them have the same one: such a ranking would be the
        catalog's storage order, not an answer.
    """
    finite = np.isfinite(total)
    if not finite.any():
        raise DegenerateMetricError(
            f"{metric}: gives no finite distance on these vectors (scipy's {metric} needs non-negative"
            " values); choose another metric"
        )
    if finite.sum() > 1 and np.ptp(total[finite]) == 0.0:
        raise DegenerateMetricError(
            f"{metric}: gives every candidate the same distance ({total[finite][0]:.6g}) on these real-valued"
            " vectors, so it cannot rank them; choose another metric"
        )
    return finite


def _ranked(found: Distances, ids: np.ndarray, metric: str, k: int, outside: int = 0) -> Ranked:
    """The first row of ``found`` ranked: its ``k`` best, with each space's parts and the similarities.

    ``outside`` counts the candidates left out of ``found`` (by a shortlist) as farther than all of it.
    """
    total = found.total[0]
    finite = check_ranking(total, metric)
    rows = np.lexsort((ids, np.where(finite, total, np.inf)))[:k]
    rows = rows[finite[rows]]
    return Ranked(ids=ids[rows], distances=total[rows],
                  parts={space: part[0][rows] for space, part in found.parts.items()},
                  scores={space: score[0][rows] for space, score in found.scores.items()},
                  similarity=farther_share(total, rows, outside),
                  space_similarity={space: farther_share(part[0], rows, outside)
                                    for space, part in found.parts.items()},
                  tied_at_cut=bool(first_k(found.total[:1], k).tied_at_cut[0]))


def _rank_fused_shortlist(
    query: dict[str, np.ndarray], pool: Pool, metric: str, fusion: Fusion, k: int, excluded: np.ndarray,
    searchers: Mapping[str, Searcher],
) -> Ranked:
    """Late fusion on a large catalog: each space's shortlist, their union ranked with exact distances.

    A space with a learned projection is shortlisted by its searcher on the stored vectors, and the union is
    ranked in the projection. Each space's z-scores take the mean and spread of its distances to the space
    searcher's fixed sample (:meth:`mvr.index.base.Searcher.sample`, the pool's videos among it), which estimate
    those over the whole pool: the union's fused scores are then on the same scale as the exhaustive ones. Only
    the union's rows and the sample are read: nothing here is proportional to the catalog (``excluded``: the ids
    left out, int64).

    Where every space's shortlist comes with the fused metric's distances and no weight is negative, the shortlists
    start short and grow only while a video outside all of them could still rank (Fagin's threshold algorithm): a
    video missing from a space's shortlist is at least as far as the shortlist's last one, so the last ones'
    fused score bounds every unseen video's, and a video found in one shortlist has its other distances read only
    if that bound lets it reach the first ``k``.
    """
    scales = {space: _scale(searchers[space], space, fusion, fusion.metric_of(space, metric), query[space],
                            pool, excluded) for space in pool.spaces}
    bounded = all(space not in fusion.projections and searchers[space].metric == fusion.metric_of(space, metric)
                  and fusion.weights[space] >= 0 for space in pool.spaces)
    most = max(_FUSED_SHORTLIST, 4 * k)
    size = min(most, max(_FUSED_FIRST, 4 * k)) if bounded else most
    while True:
        ranked, settled = _rank_union(query, pool, metric, fusion, k, excluded, searchers, scales, size, bounded)
        if settled or size >= most:
            return ranked
        size = min(most, 4 * size)


def _rank_union(
    query: dict[str, np.ndarray], pool: Pool, metric: str, fusion: Fusion, k: int, excluded: np.ndarray,
    searchers: Mapping[str, Searcher], scales: dict[str, tuple[np.ndarray, np.ndarray]], size: int, bounded: bool,
) -> tuple[Ranked, bool]:
    """The first ``k`` of the union of each space's ``size``-long shortlist, and whether no video outside the
    union can rank among them (always True unless ``bounded``)."""
    shortlists = {}
    for space in pool.spaces:
        found, ids = searchers[space].search(query[space][None], size)
        kept = ids[0] >= 0
        shortlists[space] = (ids[0][kept], found[0][kept])
    # A space's searcher holds every video with that space; the pool, those with all the fused spaces.
    candidates = np.setdiff1d(np.concatenate([ids for ids, _ in shortlists.values()]), excluded)
    rows = np.searchsorted(pool.ids, candidates)
    rows = rows[_held(pool.ids, rows, candidates)]
    union = pool.ids[rows]
    parts, missing, last = {}, {}, {}
    for space in pool.spaces:
        parts[space] = np.full((1, rows.size), np.nan)
        missing[space] = np.ones(rows.size, dtype=bool)
        if space not in fusion.projections and searchers[space].metric == fusion.metric_of(space, metric):
            # The space's own shortlist came with scipy's distances in this metric: only the other spaces'
            # candidates are measured here (a 2,560-wide row is 10 kB of the mapped file).
            shortlisted, found = shortlists[space]
            places = np.searchsorted(union, shortlisted)
            held = _held(union, places, shortlisted)
            parts[space][0, places[held]] = found[held]
            missing[space][places[held]] = False
        # A full shortlist's last distance bounds every video it left out; a short one left out only videos
        # without a finite distance.
        distances_found = shortlists[space][1]
        last[space] = distances_found[-1] if distances_found.size == size else np.inf

    def measure(chosen: np.ndarray) -> None:
        for space in pool.spaces:
            wanted = chosen[missing[space][chosen]]
            if wanted.size:
                parts[space][:, wanted] = ExactSearcher(
                    union[wanted], fusion.vectors_of(space, pool.matrices[space][rows[wanted]]),
                    fusion.metric_of(space, metric),
                ).distances(fusion.vectors_of(space, query[space]))
                missing[space][wanted] = False

    if not bounded:
        measure(np.arange(rows.size))
        return _ranked(combine(parts, fusion, scales), union, metric, k, _outside(pool, excluded, rows)), True
    # Unmeasured distances stand at their lower bound (the shortlist's last): a video whose bounded score cannot
    # reach the k-th measured one is left as it stands.
    bound = combine({space: np.where(missing[space], last[space], parts[space]) for space in pool.spaces},
                    fusion, scales).total[0]
    order = np.argsort(np.where(np.isnan(bound), np.inf, bound), kind="stable")
    measure(order[:k])
    threshold = _kth(combine(parts, fusion, scales).total[0], k)
    measure(np.flatnonzero(bound <= threshold))
    found = combine({space: np.where(missing[space], last[space], parts[space]) for space in pool.spaces},
                    fusion, scales)
    unseen = combine({space: np.array([[last[space]]]) for space in pool.spaces}, fusion, scales).total[0, 0]
    settled = bool(_kth(found.total[0], k) < unseen)
    return _ranked(found, union, metric, k, _outside(pool, excluded, rows)), settled


def _kth(total: np.ndarray, k: int) -> float:
    """The ``k``-th smallest finite value of ``total`` (inf when fewer)."""
    finite = np.sort(total[np.isfinite(total)])
    return float(finite[k - 1]) if finite.size >= k else np.inf


def _outside(pool: Pool, excluded: np.ndarray, rows: np.ndarray) -> int:
    """The pool's candidates a shortlist union (``rows``) left out, the excluded ids apart."""
    return int(pool.ids.size - _held(pool.ids, np.searchsorted(pool.ids, excluded), excluded).sum() - rows.size)


def _scale(searcher: Searcher, space: str, fusion: Fusion, metric: str, query: np.ndarray, pool: Pool,
           excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and spread ``(1, 1)`` each of ``query``'s distances in ``space`` to the searcher's sample."""
    sample_ids, sample_rows = searcher.sample()
    if space in fusion.projections or metric not in _SAMPLE_METRICS:
        scale = ExactSearcher(sample_ids, fusion.vectors_of(space, sample_rows), metric).distances(
            fusion.vectors_of(space, query))
    else:
        scale = _estimate_sample_distances(searcher, metric, query)[None, :]
    # The sample's videos outside the pool, or left out of this query, are not its candidates.
    scale[:, ~_held(pool.ids, np.searchsorted(pool.ids, sample_ids), sample_ids) | np.isin(sample_ids, excluded)] \
        = np.nan
    return row_statistics(scale)


_SAMPLE_METRICS = ("cosine", "correlation", "euclidean")
_prepared_samples: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # searcher -> {metric: prepared}
_prepared_lock = threading.Lock()


def _estimate_sample_distances(searcher: Searcher, metric: str, query: np.ndarray) -> np.ndarray:
    """float64 ``(m,)``: ``query``'s distances to the searcher's sample, as one float32 matrix product.

    They only estimate a mean and a spread: float32 rounding (about 1e-6 here) is far below the sample's own error
    (2%), and a 1,024 x 2,560 sample took scipy 1.8 ms a query against 0.44 ms (docs/performance.md). The rows are
    prepared once per searcher and metric (unit rows for cosine, centred unit rows for correlation; for euclidean
    the rows less their mean, whose squared norms are kept: without the mean, rows far from the origin lost the
    distances to float32 cancellation), and again when the searcher's sample changes.
    """
    sample_rows = searcher.sample()[1]
    with _prepared_lock:
        prepared = _prepared_samples.setdefault(searcher, {}).get(metric)
    if prepared is None or prepared[0] is not sample_rows:
        rows = np.array(sample_rows, dtype=np.float64)
        centre = rows.mean(axis=0) if metric == "euclidean" else np.zeros(rows.shape[1])
        rows -= rows.mean(axis=1, keepdims=True) if metric == "correlation" else centre
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        if metric != "euclidean":
            with np.errstate(divide="ignore", invalid="ignore"):
                rows /= norms[:, None]  # a row without a direction gets NaN, as scipy gives it
        prepared = (sample_rows, np.ascontiguousarray(rows, dtype=np.float32), norms ** 2, centre)
        with _prepared_lock:
            _prepared_samples[searcher][metric] = prepared
    _, rows, squared_norms, centre = prepared
    query = np.asarray(query, dtype=np.float64) - centre
    if metric == "correlation":
        query = query - query.mean()
    length = float(np.sqrt(query @ query))
    if metric == "euclidean":
        products = rows @ query.astype(np.float32)
        return np.sqrt(np.maximum(squared_norms - 2.0 * products + length ** 2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (rows @ (query / length).astype(np.float32)).astype(np.float64)


def _held(ids: np.ndarray, rows: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """bool, like ``wanted``: whether ``ids`` (ascending) holds each at ``rows`` (its ``np.searchsorted`` place)."""
    inside = rows < ids.size
    found = np.zeros(wanted.shape, dtype=bool)
    found[inside] = ids[rows[inside]] == wanted[inside]
    return found
