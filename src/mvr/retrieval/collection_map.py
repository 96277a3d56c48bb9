"""A 2-D map of the collection: every video of a search target placed so that videos near each other by the
target's own distances land near each other, computed from the stored vectors and cached in the catalog folder.

How a layout is made (:func:`compute_layout`):

1. The neighbours. Each video's :data:`NEIGHBOURS` nearest videos by the distance the search ranks with: the
   target's metric for a feature space (or the concatenation fusion's vectors), and for ``fused`` the late fusion
   with the catalog's tuned weights and metrics (:func:`mvr.retrieval.query.plan_search`): each space's distances
   from the video to every other, put on a common scale by :func:`mvr.retrieval.fusion.combine`, as a fused
   query ranks them. The distances are computed in blocks of rows; cosine and euclidean through
   scikit-learn's matrix-product forms (a tenth of scipy's time on the 2,560 visual numbers), the other metrics
   through scipy's ``cdist``.
2. The weights. A neighbour ``j`` of ``i`` weighs ``exp(-(d_ij - d_i,nearest) / s_i)``, the local kernel of UMAP
   (McInnes et al., 2018), with ``s_i`` set per video by t-SNE's perplexity search. Any per-video affine change
   of the distances (the fusion's z-scores) leaves these weights as they are, so a fused row and a single space's
   row are treated alike.
3. The layout. scikit-learn's Barnes-Hut t-SNE (van der Maaten, 2014) on that neighbour graph, started from the
   first two principal components of the videos' vectors (each space's columns standardised, each space weighing
   as the fusion weighs it), which keeps the map's large-scale arrangement stable from one computation to the
   next (Kobak and Berens, 2019), with a fixed seed and one thread: the same catalog gives the same map.

scikit-learn is the ``map`` extra, imported only when a layout is computed. umap-learn was measured beside it and
left out: it pulls in numba and llvmlite (210 MB more), compiles for seconds on its first call in every process,
and is deterministic only single-threaded (``docs/dashboard.md``, "Map", gives the numbers).

A layout is kept in ``CATALOG/map/<target>.json`` with what it was computed from (:func:`layout_key`: the
catalog's generation, the spaces' extractors, the metric and fusion, the method, its parameters and scikit-learn's
version); :func:`collection_map` returns the saved one while that still holds, and computes and saves it again
when anything of it changed. The file is written whole or not at all.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from mvr.errors import MvrError, UsageError
from mvr.index.exact import ExactSearcher
from mvr.retrieval.fusion import Fusion, Pool, combine
from mvr.retrieval.query import SearchPlan, fusion_dict, plan_search
from mvr.retrieval.search import SearcherCache
from mvr.store import Catalog, Video

MAP_FOLDER = "map"
"""The catalog's sub-folder of saved layouts, one ``<target>.json`` each."""
METHOD = "tsne"
PERPLEXITY = 30.0
"""t-SNE's perplexity (its effective number of neighbours), lowered to a third of the videos on small catalogs."""
NEIGHBOURS = int(3 * PERPLEXITY + 1)
"""Neighbours per video in the graph t-SNE reads (three times the perplexity, as t-SNE's own rule)."""
ITERATIONS = 1000
SEED = 0
PNG_SIZE = (900, 600)
"""Width and height in pixels of :func:`draw_map`'s picture."""
_BLOCK_ROWS = 256  # rows of distances computed at once: 256 x 10k float64 is 20 MB per space and part
_BLAS_METRICS = ("cosine", "euclidean")  # scikit-learn computes these by matrix products; the rest go to scipy
_INSTALL_HINT = "mvr map needs scikit-learn: pip install 'mvr[map]'"


@dataclass(frozen=True)
class MapPoint:
    """One video on the map.

    Attributes
    ----------
    video : Video
        The catalog video.
    x, y : float
        Its place; only distances between points mean anything.
    """

    video: Video
    x: float
    y: float

    def to_dict(self) -> dict:
        """``{"id", "title", "label", "x", "y"}``."""
        return {"id": self.video.id, "title": self.video.title, "label": self.video.label, "x": self.x, "y": self.y}


@dataclass(frozen=True)
class CollectionMap:
    """The map of one search target: its points, and how they were placed.

    Attributes
    ----------
    target : str
        A feature space, or ``fused``.
    metric : str
        The target's metric (each fused space's, where the fusion gives its own).
    fusion : Fusion, optional
        For ``fused``: the spaces, weights and metrics.
    weights_from : str
        Where the fusion's weights come from (:data:`mvr.retrieval.query.WEIGHT_ORIGINS`).
    method : dict
        ``{"name", "library", "perplexity", "neighbours", "iterations", "seed"}``.
    points : list of MapPoint
        Every video that has the target's spaces, in id order.
    cached : bool
        Whether the layout came from the catalog folder rather than being computed now.
    """

    target: str
    metric: str
    fusion: Fusion | None
    weights_from: str
    method: dict
    points: list[MapPoint]
    cached: bool

    def to_dict(self) -> dict:
        """``{"space", "metric", "method", "points"}``, and ``fusion`` for a fused map (``mvr map --json``)."""
        found = {"space": self.target, "metric": self.metric, "method": dict(self.method),
                 "points": [point.to_dict() for point in self.points]}
        if self.fusion is not None:
            found["fusion"] = fusion_dict(self.fusion, self.metric, self.weights_from)
        return found


def collection_map(catalog: Catalog, target: str, *, searchers: SearcherCache | None = None,
                   on_compute: Callable[[int], None] | None = None) -> CollectionMap:
    """The map of ``target``: the layout saved in the catalog folder while it is current, else computed and saved.

    Parameters
    ----------
    catalog : Catalog
        The collection.
    target : str
        One of :func:`mvr.retrieval.search_targets` that the catalog holds.
    searchers : SearcherCache, optional
        Where the catalog's vectors are loaded from (the caller's, to share them with its queries).
    on_compute : callable, optional
        Hears the number of videos when a layout is computed rather than read (a long step: say so).

    Raises
    ------
    UsageError
        For an unknown target.
    CatalogError
        When no video of the catalog has the target's spaces.
    MvrError
        When scikit-learn, needed to compute a layout, is not installed.
    """
    plan = plan_search(catalog, target, searchers=searchers or SearcherCache())
    key = layout_key(catalog, plan)
    path = map_path(catalog, target)
    saved = _read_layout(path, key)
    if saved is not None:
        ids, xy = saved
    else:
        if on_compute:
            on_compute(int(plan.pool.ids.size))
        ids, xy = plan.pool.ids, compute_layout(plan)
        try:
            _write_layout(path, key, ids, xy)
        except OSError:
            pass  # a read-only catalog: the layout serves this call, and the next computes it again
    videos = {video.id: video for video in catalog.videos()}
    points = [MapPoint(videos[int(video_id)], float(x), float(y)) for video_id, (x, y) in zip(ids, xy, strict=True)]
    return CollectionMap(target=target, metric=plan.metric, fusion=plan.fusion, weights_from=plan.weights_from,
                         method=method_description(), points=points, cached=saved is not None)


def draw_map(found: CollectionMap, path: Path) -> Path:
    """Draw the map as a PNG of :data:`PNG_SIZE` pixels: one dot per video coloured by its label, the legend
    right of the plot. Written whole or not at all.

    Raises
    ------
    MvrError
        When matplotlib is not installed.
    UsageError
        When ``path`` cannot be written.
    """
    try:
        # Lazily, as mvr evaluate --plots: matplotlib is the plots extra.
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MvrError("mvr map --out needs matplotlib: pip install 'mvr[plots]'") from None
    path = Path(path)
    dpi = 100
    figure = pyplot.figure(figsize=(PNG_SIZE[0] / dpi, PNG_SIZE[1] / dpi), dpi=dpi)
    axes = figure.add_axes((0.04, 0.06, 0.66, 0.86))
    labels = sorted({point.video.label for point in found.points if point.video.label is not None})
    palette = pyplot.get_cmap("tab20" if len(labels) > 10 else "tab10")
    groups = [(label, palette(number % palette.N)) for number, label in enumerate(labels)]
    if any(point.video.label is None for point in found.points):
        groups.append((None, "#9ca3af"))
    for label, colour in groups:
        chosen = [point for point in found.points if point.video.label == label]
        axes.scatter([point.x for point in chosen], [point.y for point in chosen], s=28, color=colour,
                     edgecolors="white", linewidths=0.5, label=label or "unlabelled")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"{found.target}: {len(found.points)} videos, t-SNE of the {found.target} search's distances",
                   fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8, title="label")
    staged = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        figure.savefig(staged, format="png", dpi=dpi)
        os.replace(staged, path)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write the map ({exc.strerror or exc})") from None
    finally:
        pyplot.close(figure)
    return path


def map_path(catalog: Catalog, target: str) -> Path:
    """Where the layout of ``target`` is kept in the catalog folder (it may not exist)."""
    return Path(catalog.root) / MAP_FOLDER / f"{target}.json"


def method_description() -> dict:
    """How layouts are computed: ``{"name", "library", "perplexity", "neighbours", "iterations", "seed"}``."""
    return {"name": METHOD, "library": f"scikit-learn {_sklearn_version()}", "perplexity": PERPLEXITY,
            "neighbours": NEIGHBOURS, "iterations": ITERATIONS, "seed": SEED}


def layout_key(catalog: Catalog, plan: SearchPlan) -> dict:
    """Everything a saved layout must have been computed from to be used: the catalog's generation, the spaces'
    extractors, the target's metric and fusion (with its learned projections' digests), and the method with its
    parameters and library version."""
    return {"generation": catalog.generation(), "target": plan.modality,
            "extractors": {space: catalog.setting(f"extractor.{space}") for space in plan.pool.spaces},
            "metric": plan.metric,
            "fusion": None if plan.fusion is None else fusion_dict(plan.fusion, plan.metric, plan.weights_from),
            "projections": {} if plan.fusion is None else {space: found.digest
                                                           for space, found in plan.fusion.projections.items()},
            "method": method_description()}


def compute_layout(plan: SearchPlan) -> np.ndarray:
    """The 2-D places of the plan's pool of videos (see the module's description of the steps).

    Returns
    -------
    np.ndarray
        float64 ``(n, 2)``; row ``i`` is video ``plan.pool.ids[i]``.

    Raises
    ------
    MvrError
        When scikit-learn is not installed.
    """
    try:
        # Lazily: scikit-learn takes seconds to import, and only this step needs it (the map extra).
        from sklearn.manifold import TSNE
    except ImportError:
        raise MvrError(_INSTALL_HINT) from None
    count = plan.pool.ids.size
    if count < 3:  # t-SNE needs a neighbour besides the nearest one; one or two videos sit on a line
        return np.column_stack([np.linspace(-1.0, 1.0, count) if count > 1 else np.zeros(count), np.zeros(count)])
    perplexity = min(PERPLEXITY, (count - 1) / 3)
    graph = neighbour_graph(plan, min(count - 1, int(3 * perplexity + 1)))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="precomputed",
                init=_initial_layout(plan.pool, plan.fusion), learning_rate="auto", max_iter=ITERATIONS,
                random_state=SEED, method="barnes_hut")
    # One thread: the same layout on any machine, and on a busy one, OpenMP's waiting threads made a 200-video
    # layout take 100 s instead of 3.
    with threadpool_limits(1):
        return tsne.fit_transform(graph).astype(np.float64)


def neighbour_graph(plan: SearchPlan, neighbours: int) -> csr_matrix:
    """Each video's ``neighbours`` nearest by the plan's distances, as the sparse matrix t-SNE reads.

    Row ``i`` holds the video itself (at 0), then its neighbours, nearest first, at ``sqrt(d_ij - d_i,nearest)``
    (plus a tiny constant, so that no neighbour sits on the video itself): t-SNE squares what it is given, so each
    neighbour weighs ``exp(-(d_ij - d_i,nearest) / s_i)``. A neighbour with no finite distance (a metric that fails
    on some pair) is placed beyond the farthest finite one.

    Returns
    -------
    scipy.sparse.csr_matrix
        float64 ``(n, n)`` with ``neighbours + 1`` entries per row, each row's in ascending order.
    """
    pool = plan.pool
    count = pool.ids.size
    columns = np.empty((count, neighbours + 1), dtype=np.int64)
    values = np.zeros((count, neighbours + 1))
    for start in range(0, count, _BLOCK_ROWS):
        rows = np.arange(start, min(start + _BLOCK_ROWS, count))
        found = _target_distances(pool, rows, plan.metric, plan.fusion)
        found[~np.isfinite(found)] = np.inf
        found[np.arange(rows.size), rows] = np.nan  # a video is not its own neighbour: NaN sorts last
        nearest = np.argpartition(found, neighbours - 1, axis=1)[:, :neighbours]
        kept = np.take_along_axis(found, nearest, axis=1)
        order = np.argsort(kept, axis=1, kind="stable")
        nearest, kept = np.take_along_axis(nearest, order, axis=1), np.take_along_axis(kept, order, axis=1)
        finite = np.isfinite(kept)
        with np.errstate(invalid="ignore"):
            shifted = kept - kept[:, :1]
        farthest = np.where(finite, shifted, 0.0).max(axis=1, keepdims=True)
        shifted = np.where(finite, shifted, 2 * farthest + 1.0)
        columns[rows] = np.column_stack([rows, nearest])
        values[rows, 1:] = np.sqrt(shifted + 1e-12)
    indptr = np.arange(0, count * (neighbours + 1) + 1, neighbours + 1)
    return csr_matrix((values.ravel(), columns.ravel(), indptr), shape=(count, count))


def _target_distances(pool: Pool, rows: np.ndarray, metric: str, fusion: Fusion | None) -> np.ndarray:
    """float64 ``(len(rows), n)``: the target's distances from the pool's videos at ``rows`` to every video, as
    :func:`mvr.retrieval.fusion.distances` ranks them (one space, the concatenation, or the late fusion)."""
    if fusion is None or fusion.method == "concat":
        return _space_distances(pool.concatenated, rows, metric)
    parts = {space: _space_distances(fusion.vectors_of(space, pool.matrices[space]), rows,
                                     fusion.metric_of(space, metric))
             for space in pool.spaces}
    return combine(parts, fusion).total


def _space_distances(matrix: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """One metric's distances from ``matrix[rows]`` to every row; NaN where a distance is not a finite number."""
    if metric not in _BLAS_METRICS:
        return ExactSearcher(np.arange(matrix.shape[0]), matrix, metric).distances(matrix[rows])
    from sklearn.metrics import pairwise_distances  # with TSNE: the map extra

    found = pairwise_distances(matrix[rows], matrix, metric=metric)
    found[~np.isfinite(found)] = np.nan
    return found


def _initial_layout(pool: Pool, fusion: Fusion | None) -> np.ndarray:
    """float32 ``(n, 2)``: the first two principal components of the pool's vectors, each space's columns
    (in its learned projection, if any) standardised and scaled by the square root of its fusion weight over its
    width (so that each space weighs as the fusion weighs it, whatever its width), scaled as t-SNE's own PCA start
    (standard deviation 1e-4 along the first)."""
    from sklearn.decomposition import PCA  # with TSNE: the map extra

    late = fusion is not None and fusion.method != "concat"
    weights = fusion.weights if late else {}
    blocks = []
    for space, stored in pool.matrices.items():
        matrix = fusion.vectors_of(space, stored) if late else stored  # a space as the fusion measures it
        spread = matrix.std(axis=0)
        scale = np.sqrt(weights.get(space, 1.0) / matrix.shape[1])
        blocks.append((matrix - matrix.mean(axis=0)) / np.where(spread > 0, spread, 1.0) * scale)
    found = PCA(n_components=2, svd_solver="randomized", random_state=SEED).fit_transform(np.hstack(blocks))
    scale = found[:, 0].std()
    if not scale > 0:  # identical vectors: any start is as good; t-SNE's own random one, seeded
        return 1e-4 * np.random.default_rng(SEED).standard_normal((pool.ids.size, 2)).astype(np.float32)
    return (found / scale * 1e-4).astype(np.float32)


def _sklearn_version() -> str:
    """scikit-learn's version, read without importing it (the key of a saved layout names it)."""
    try:
        return importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _read_layout(path: Path, key: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The ids and ``(n, 2)`` places saved at ``path`` with ``key``; None when missing, damaged or of another key."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["key"] != json.loads(json.dumps(key)):  # compared as JSON: tuples and lists alike
            return None
        ids = np.asarray(saved["ids"], dtype=np.int64)
        xy = np.column_stack([np.asarray(saved["x"], dtype=np.float64), np.asarray(saved["y"], dtype=np.float64)])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (ids, xy) if ids.shape == (xy.shape[0],) else None


def _write_layout(path: Path, key: dict, ids: np.ndarray, xy: np.ndarray) -> None:
    """Save a layout at ``path``, whole or not at all: written beside it, then renamed over it.

    The staged file's name ends ``.<pid>.part``, as the catalog's other files in flight
    (:func:`mvr.store.catalog.sweep_leftovers` removes those of dead processes).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.{os.getpid()}.part")
    # Python writes each float so that it reads back exactly: a saved layout is the computed one.
    text = json.dumps({"key": key, "ids": [int(i) for i in ids], "x": [float(v) for v in xy[:, 0]],
                       "y": [float(v) for v in xy[:, 1]]})
    try:
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
