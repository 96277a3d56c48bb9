"""Ranking a catalog for query vectors: one space's searcher, or the fusion of several spaces' searches.

Distances follow ``scipy.spatial.distance.cdist`` exactly. Some of the study's metrics are not meaningful on our
real-valued features (``jensenshannon`` needs non-negative vectors; ``hamming``, ``jaccard`` and ``sokalsneath``
compare values as booleans), so they can give every candidate the same distance. Such a ranking would be the
catalog's storage order, not an answer: :func:`rank` raises :class:`DegenerateMetricError` instead.

The catalog's searchers are built by a :class:`SearcherCache`, which whoever owns the catalog's queries keeps (a
command, the web service): it holds each space's float64 vectors and searchers per catalog folder, space,
extractor and catalog generation, shared by threads. A large catalog's FAISS index is saved beside it
(:func:`mvr.index.build.catalog_searcher`): a new process loads it, and after videos are added it takes their rows.

On large catalogs (where a space has an approximate searcher) a fused search asks each space's searcher
for a shortlist, ranks the union of the shortlists with the exact per-space distances, and puts each space on
its scale with statistics from a fixed sample of the catalog; ``exact=True`` scans everything instead.
``docs/performance.md`` gives the times and the recall.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr.errors import CatalogError, DegenerateMetricError
from mvr.index.base import Searcher, check_metric
from mvr.index.build import FAISS_MIN_ROWS, catalog_searcher
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

# Rows per fused shortlist from each space, at the least; and rows whose exact distances estimate each space's
# scale for the fused z-scores.
_FUSED_SHORTLIST = 200
_SCALE_SAMPLE_ROWS = 8192


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
        Late fusion: space -> float64 ``(m,)``, the same share by that space's distance alone.
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
        Rows of a space from which its searcher is a saved FAISS index rather than the exact scan.
    """

    def __init__(self, threads: int = 1, min_rows: int = FAISS_MIN_ROWS) -> None:
        self.threads = threads
        self.min_rows = min_rows
        self._lock = threading.Lock()
        self._pools: dict[tuple, Pool] = {}
        self._searchers: dict[tuple, Searcher] = {}
        self._building: dict[tuple, threading.Lock] = {}  # per key: a FAISS build takes seconds to a minute

    def pool(self, catalog: Catalog, spaces: tuple[str, ...]) -> Pool:
        """The vectors of the videos that have every space in ``spaces``, aligned, as float64.

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
        found = _load_pool(catalog, spaces)
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


def _load_pool(catalog: Catalog, spaces: tuple[str, ...]) -> Pool:
    matrices = []
    for space in spaces:
        found = catalog.matrix(space)
        if found is None:
            raise CatalogError(f"{catalog.root}: no video in this catalog has {space} vectors")
        matrices.append(found)
    ids = matrices[0].ids
    for found in matrices[1:]:
        ids = np.intersect1d(ids, found.ids, assume_unique=True)
    if ids.size == 0:
        raise CatalogError(f"{catalog.root}: no video in this catalog has {' and '.join(spaces)} vectors")
    # cdist works in float64 and would convert a float32 matrix on every call.
    return Pool(ids=ids, matrices={
        space: np.ascontiguousarray(found.vectors[np.searchsorted(found.ids, ids)], dtype=np.float64)
        for space, found in zip(spaces, matrices, strict=True)
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
    excluded = np.isin(pool.ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    if searchers and (fusion is None or fusion.method == "concat") and len(pool.spaces) == 1:
        (space,) = pool.spaces
        # One more than asked tells whether the k-th ties with the first candidate left out.
        found, ids = searchers[space].search(query[space][None], k + 1, exclude=[exclude])
        kept = ids[0] >= 0
        # Equal distances all the way down might be a metric that ties everything: the exact scan tells.
        if kept.sum() > 1 and np.ptp(found[0][kept]) > 0.0:
            tied = bool(kept[k:].any() and found[0][k] == found[0][k - 1])
            return Ranked(ids=ids[0][:k][kept[:k]], distances=found[0][:k][kept[:k]], tied_at_cut=tied)
    # Shortlists pay where a space has an approximate searcher; below the scale sample's size, the exhaustive late
    # fusion costs less than shortlists plus the sample.
    if (searchers and fusion is not None and fusion.method == "late" and pool.ids.size >= _SCALE_SAMPLE_ROWS
            and any(not isinstance(searchers[space], ExactSearcher) for space in pool.spaces)):
        return _rank_fused_shortlist(query, pool, metric, fusion, k, excluded, searchers)
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

    Each space's z-scores take the mean and spread of its exact distances to a fixed sample of the pool, which
    estimate those over the whole pool: the union's fused scores are then on the same scale as the exhaustive
    ones.
    """
    size = max(_FUSED_SHORTLIST, 4 * k)
    union = []
    for space in pool.spaces:
        _, ids = searchers[space].search(query[space][None], size)
        union.append(ids[0][ids[0] >= 0])
    # A space's searcher holds every video with that space; the pool, those with all the fused spaces.
    rows = np.flatnonzero(np.isin(pool.ids, np.concatenate(union)) & ~excluded)
    sample, sampled = pool.sample(_SCALE_SAMPLE_ROWS)
    kept = ~excluded[sample]
    parts, scales = {}, {}
    for space in pool.spaces:
        space_metric = fusion.metric_of(space, metric)
        parts[space] = ExactSearcher(pool.ids, pool.matrices[space], space_metric).subset(rows).distances(query[space])
        scale = ExactSearcher(pool.ids[sample], sampled[space], space_metric).distances(query[space])
        scales[space] = row_statistics(scale[:, kept])
    outside = int((~excluded).sum()) - rows.size
    return _ranked(combine(parts, fusion, scales), pool.ids[rows], metric, k, outside)
