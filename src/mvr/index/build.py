"""Choosing a searcher: :data:`SEARCHERS` by name, the one that pays for a given size and metric, and the FAISS
index a catalog keeps on disk.

FAISS is imported only here, when a catalog is large enough to use it (:func:`searcher_kind`), and in
:mod:`mvr.index.faiss` itself: commands that rank nothing, or rank a small catalog, never load it.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from mvr.index.base import METRICS, Searcher, check_metric
from mvr.progress import Progress, note
from mvr.store import Catalog
from mvr.store.catalog import INDEX_FOLDER

SEARCHERS = {"exact": "mvr.index.exact:ExactSearcher", "faiss": "mvr.index.faiss:FaissSearcher"}
"""Every searcher kind, by name: ``module:class``, imported when used (FAISS loads its own OpenMP and BLAS)."""

FAISS_MIN_ROWS = 4096
"""From this many rows on, a FAISS searcher (where it supports the metric) answers; below, the exact scan. Measured
side by side on 136-d braycurtis rows (20 queries, one thread, a loaded machine): scipy's scan 0.33 / 0.50 / 0.94
/ 2.6 ms at 1k / 2k / 4k / 8k rows, FAISS's flat scan plus the rerank 0.53 / 0.67 / 0.98 / 1.85 ms, its HNSW
graph 0.51 ms from 4k on (0.4 s to build). Wide rows would pay earlier (2,560-d cosine: scipy 4.0 ms at 1k, FAISS
2.2 ms), but below 4k rows both answer in a few milliseconds, and the exact scan needs no index on disk."""


def searcher_class(name: str) -> type:
    """The searcher class registered as ``name`` in :data:`SEARCHERS`, imported."""
    module, _, attribute = SEARCHERS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def searcher_kind(rows: int, dims: int, metric: str, *, exact: bool = False, min_rows: int = FAISS_MIN_ROWS) -> str:
    """The :data:`SEARCHERS` name for ``rows`` vectors of ``dims`` under ``metric``: ``faiss`` from ``min_rows``
    rows, when faiss is installed and indexes the metric on such vectors; else ``exact``."""
    check_metric(metric)
    if exact or rows < min_rows or importlib.util.find_spec("faiss") is None:
        return "exact"
    return "faiss" if searcher_class("faiss").supports(metric, dims) else "exact"


def build_searcher(ids: np.ndarray, matrix: np.ndarray, metric: str, *, exact: bool = False,
                   threads: int = 1) -> Searcher:
    """The searcher for these vectors (:func:`searcher_kind`), built in memory.

    Parameters
    ----------
    ids : np.ndarray
        int64 ``(n,)``, ascending.
    matrix : np.ndarray
        ``(n, d)``.
    metric : str
        One of :data:`mvr.index.base.METRICS`.
    exact : bool
        Always the exact scan.
    threads : int
        Threads a FAISS searcher may use.
    """
    kind = searcher_kind(*matrix.shape, metric, exact=exact)
    if kind == "faiss":
        return searcher_class(kind).build(ids, matrix, metric, threads=threads)
    return searcher_class(kind)(ids, matrix, metric)


def index_meta(catalog: Catalog, space: str) -> dict:
    """What a saved index of ``space`` must have been built from to be used: the catalog's generation and the
    space's extractor string."""
    return {"generation": catalog.generation(), "extractor": catalog.setting(f"extractor.{space}")}


def saved_vectors(catalog: Catalog, space: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A catalog space's vectors as a current saved index holds them (one saved at the catalog's generation with
    the space's extractor), without reading them from the catalog: ids int64 ``(n,)`` ascending and float32 rows
    ``(n, d)``, memory-mapped from the index's vectors file (:meth:`mvr.index.faiss.FaissSearcher.load_vectors`).
    None when no saved index is current (FAISS is imported only when a folder exists)."""
    folders = sorted(path for path in (catalog.root / INDEX_FOLDER).glob(f"{space}-*")
                     if path.name.removeprefix(f"{space}-") in METRICS)
    if not folders or importlib.util.find_spec("faiss") is None:
        return None
    faiss_searcher = searcher_class("faiss")
    meta = index_meta(catalog, space)
    for folder in folders:
        saved = faiss_searcher.saved_meta(folder)
        if saved is not None and all(saved.get(key) == value for key, value in meta.items()):
            found = faiss_searcher.load_vectors(folder)
            if found is not None:
                return found
    return None


def catalog_searcher(catalog: Catalog, space: str, ids: np.ndarray, matrix: np.ndarray, metric: str, *,
                     exact: bool = False, threads: int = 1, min_rows: int = FAISS_MIN_ROWS) -> Searcher:
    """The searcher of a catalog's ``space`` vectors: for a FAISS one, the index saved beside the catalog.

    The saved index (:meth:`mvr.store.Catalog.index_folder`) is used as it is when it was saved at the catalog's
    generation with its extractor. When only the generation differs (videos were added), the rows of the ids it
    does not hold are added to it, the ids it holds that the catalog no longer has are tombstoned, and it is saved
    again, unless it :attr:`~mvr.index.faiss.FaissSearcher.needs_rebuild`. Anything else (another extractor,
    metric or layout, a folder cut short, none) is built afresh from ``matrix`` and saved: a stale or foreign index
    is never used. A catalog folder that cannot be written keeps the searcher in memory only.

    Parameters
    ----------
    catalog : Catalog
        Whose vectors ``ids`` and ``matrix`` are (all of ``space``'s, as now).
    space : str
        The feature space.
    ids, matrix, metric, exact, threads
        As for :func:`build_searcher`.
    min_rows : int
        Rows from which a FAISS index is kept (:func:`searcher_kind`).
    """
    kind = searcher_kind(*matrix.shape, metric, exact=exact, min_rows=min_rows)
    if kind != "faiss":
        return searcher_class(kind)(ids, matrix, metric)
    faiss_searcher = searcher_class(kind)
    folder = catalog.index_folder(space, metric)
    meta = index_meta(catalog, space)
    saved = faiss_searcher.saved_meta(folder)
    found = None
    if saved is not None and saved.get("extractor") == meta["extractor"] and saved.get("metric") == metric:
        found = faiss_searcher.load(folder, threads=threads)
    if found is not None and saved.get("generation") == meta["generation"] and np.array_equal(found.ids, ids):
        return found
    if found is not None:
        found.remove(found.ids[~np.isin(found.ids, ids)])
        new = ~np.isin(ids, found.ids)
        found.add(ids[new], matrix[new])
        if found.needs_rebuild or not np.array_equal(found.ids, ids):
            found = None
    if found is None:
        note(f"{space} {metric}: building the catalog's search index over {ids.size} vectors, kept for later"
             " queries (mvr reindex builds it ahead)")
        found = faiss_searcher.build(ids, matrix, metric, threads=threads)
    try:
        found.save(folder, meta=meta)
    except OSError:
        pass  # a read-only catalog: the searcher serves from memory, and the next process builds again
    return found


@dataclass(frozen=True)
class Rebuilt:
    """One index :func:`reindex` built.

    Attributes
    ----------
    space, metric : str
        What it indexes.
    kind : str
        ``flat``, ``hnsw`` or ``ivfpq``; ``exact`` where the catalog is scanned and no index is kept.
    rows : int
        Vectors held.
    seconds : float
        Time to build and save it.
    """

    space: str
    metric: str
    kind: str
    rows: int
    seconds: float


def reindex(catalog: Catalog, spaces: tuple[str, ...] | None = None, *, threads: int = 1,
            min_rows: int = FAISS_MIN_ROWS, progress: bool | None = None,
            on_rebuilt: Callable[[Rebuilt], None] | None = None,
            metrics: Mapping[str, Collection[str]] | None = None) -> list[Rebuilt]:
    """Build every saved index of ``spaces`` afresh from the catalog's vectors, the index of each space's default
    metric, and those of ``metrics``, replacing what was saved.

    Parameters
    ----------
    catalog : Catalog
        The catalog; its indexes are saved under ``catalog.root / "index"``.
    spaces : tuple of str, optional
        Feature spaces; default: every space the catalog has vectors of.
    threads : int
        Threads FAISS may use.
    min_rows : int
        Rows from which a FAISS index is kept (:func:`searcher_kind`); a smaller space is reported as ``exact``.
    progress : bool, optional
        The indexes built so far, on standard error (:class:`mvr.progress.Progress`).
    on_rebuilt : callable, optional
        Called with each index as soon as it is built.
    metrics : mapping, optional
        space -> more metrics to index it for (those the fused search asks of it), for the spaces of ``spaces``.
    """
    from mvr.features.spaces import SPACES  # the extractors' modules: only this verb needs the defaults

    spaces = spaces or tuple(space for space in SPACES if catalog.setting(f"extractor.{space}") is not None)
    planned = {}
    for space in spaces:
        saved = {path.name.removeprefix(f"{space}-") for path in (catalog.root / INDEX_FOLDER).glob(f"{space}-*")}
        default = SPACES[space].default_metric if space in SPACES else None
        planned[space] = sorted((saved & set(METRICS)) | ({default} if default else set())
                                | set((metrics or {}).get(space, ())))
    done = []
    with Progress("reindexing", sum(len(metrics) for metrics in planned.values()), unit="index",
                  show=progress) as bar:
        for space, metrics in planned.items():
            vectors = catalog.matrix(space)
            if vectors is None:
                bar.update(len(metrics))
                continue
            for metric in metrics:
                start = time.perf_counter()
                kind = searcher_kind(*vectors.vectors.shape, metric, min_rows=min_rows)
                if kind == "faiss":
                    searcher = searcher_class(kind).build(vectors.ids, vectors.vectors, metric, threads=threads)
                    searcher.save(catalog.index_folder(space, metric), meta=index_meta(catalog, space))
                    kind = searcher.kind
                done.append(Rebuilt(space, metric, kind, len(vectors.ids), time.perf_counter() - start))
                bar.update()
                if on_rebuilt:
                    on_rebuilt(done[-1])
    return done
