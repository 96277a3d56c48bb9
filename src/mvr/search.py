"""Retrieval: rank the catalog's videos by distance to a query, with the study's eleven metrics.

Distances follow ``scipy.spatial.distance.cdist`` exactly. Some of the study's metrics are not meaningful on our
real-valued features (``jensenshannon`` needs non-negative vectors; ``hamming``, ``jaccard`` and ``sokalsneath``
compare values as booleans), so they can give every candidate the same distance. Such a ranking would be the
catalog's storage order, not an answer: it raises :class:`DegenerateMetricError` instead.

Fused search combines the two modalities in one of two ways (:data:`FUSIONS`):

``late`` (mvr's default)
    Each modality's distances from the query to the candidates are put on a common scale, their z-scores over
    the candidates of that query, and added with :data:`FUSION_WEIGHTS`. No modality drowns the other whatever its
    number of dimensions or its units, and nothing is fitted to the catalog, so nothing goes stale as it grows.
``concat``
    The study's fusion: one distance over the concatenated raw vectors (136 audio + 2 x 1280 visual numbers with
    EfficientNet-Lite0), where the visual numbers outweigh the audio ones.

The defaults (:data:`DEFAULT_FUSION`, :data:`FUSION_WEIGHTS`, :data:`DEFAULT_METRICS`) were chosen from
leave-one-out results on the benchmark collections; ``docs/evaluation.md`` gives the numbers and the reasons.

On large catalogs (4,096 videos and more) :func:`rank` shortlists with compact vectors (:mod:`mvr.vectorindex`)
for ``euclidean``, ``cityblock``, ``cosine`` and ``correlation``, and ranks the shortlist with the exact distances;
``exact=True`` scans the whole matrix instead. ``docs/performance.md`` gives the times and the recall.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvr import media
from mvr.errors import CatalogError, DegenerateMetricError, MediaError
from mvr.features import VisualSettings, extract_features

if TYPE_CHECKING:  # annotations only: `mvr`'s command line imports this module for its constants
    from mvr.catalog import Catalog, Video
    from mvr.vectorindex import VectorIndex

METRICS = (
    "euclidean", "cityblock", "cosine", "correlation", "hamming", "jaccard",
    "jensenshannon", "chebyshev", "canberra", "braycurtis", "sokalsneath",
)
SEARCH_MODALITIES = ("audio", "visual", "fused")
FUSIONS = ("late", "concat")
DEFAULT_FUSION = "late"
# Chosen from leave-one-out precision@5 on the benchmark collections (docs/evaluation.md).
DEFAULT_METRICS = {"audio": "braycurtis", "visual": "cosine", "fused": "cosine"}
FUSION_WEIGHTS = {"audio": 0.5, "visual": 0.5}
# The study's choices per modality (its section 4), with its concat fusion: `mvr evaluate` measures them too.
STUDY_METRICS = {"audio": "euclidean", "visual": "euclidean", "fused": "braycurtis"}


@dataclass(frozen=True)
class Block:
    """One modality's columns in a late-fused matrix, and the weight of its distances."""

    modality: str
    columns: slice
    weight: float


@dataclass(frozen=True)
class Candidates:
    """The catalog's search vectors of one modality: ids and a float64 matrix, prepared once for cdist.

    Attributes
    ----------
    ids : np.ndarray
        int64, ``(n,)``: video ids, ascending.
    matrix : np.ndarray
        float64, ``(n, dims)``; for fused search, the audio columns then the visual ones.
    blocks : tuple of Block
        Late fusion: each modality's columns and weight. Empty: one distance over all columns.
    index : VectorIndex
        Compact search vectors of ``matrix``, built on first use; they live as long as these candidates, which
        :func:`candidates` replaces when the catalog changes.
    """

    ids: np.ndarray
    matrix: np.ndarray
    blocks: tuple[Block, ...] = ()
    index: VectorIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from mvr.vectorindex import VectorIndex  # here: it brings scipy, which commands that rank nothing skip

        index = VectorIndex(self.matrix, [(block.columns, block.weight) for block in self.blocks])
        object.__setattr__(self, "index", index)  # frozen: set once, here

    def subset(self, rows: np.ndarray) -> Candidates:
        """The candidates at positions ``rows`` (indices or a boolean mask), with the same fusion."""
        return Candidates(ids=self.ids[rows], matrix=self.matrix[rows], blocks=self.blocks)


@dataclass(frozen=True)
class Match:
    """One recommended video."""

    rank: int
    video: Video
    distance: float

    def to_dict(self) -> dict:
        """The fields of ``mvr query --json``."""
        return {
            "rank": self.rank, "id": self.video.id, "title": self.video.title, "label": self.video.label,
            "source": self.video.source, "distance": self.distance,
        }


def fuse(vectors: dict[str, np.ndarray]) -> np.ndarray:
    """One video's fused search vector: its audio vector, then its visual vector (136 + 2 x dims numbers).

    Both fusions take this vector; late fusion splits it again along the :class:`Block` columns.
    """
    return np.concatenate([vectors["audio"], vectors["visual"]])


# Prepared candidates of each open catalog, reused while the catalog's vectors are unchanged: the web service
# asks for them on every query, and stacking and converting the catalog each time would dominate its cost.
_prepared: weakref.WeakKeyDictionary[Catalog, dict] = weakref.WeakKeyDictionary()


def candidates(catalog: Catalog, modality: str, fusion: str = DEFAULT_FUSION) -> Candidates:
    """Stack the catalog's vectors of ``modality`` (``fused`` = videos that have both) as float64.

    Parameters
    ----------
    catalog : Catalog
        Where the vectors come from.
    modality : str
        One of :data:`SEARCH_MODALITIES`.
    fusion : str
        For ``fused``: one of :data:`FUSIONS`.

    Raises
    ------
    CatalogError
        When no indexed video has vectors of that modality.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion '{fusion}'; choose one of: {', '.join(FUSIONS)}")
    needed = ("audio", "visual") if modality == "fused" else (modality,)
    sources = tuple(catalog.matrix(m) for m in needed)
    key = (modality, fusion if modality == "fused" else None)
    cached = _prepared.setdefault(catalog, {}).get(key)
    # catalog.matrix() gives new objects whenever the catalog has changed.
    if cached is not None and all(old is new for old, new in zip(cached[0], sources, strict=True)):
        return cached[1]
    for m, found in zip(needed, sources, strict=True):
        if found is None:
            raise CatalogError(f"{catalog.root}: no video in this catalog has {m} vectors")
    if modality == "fused":
        audio, visual = sources
        ids, in_audio, in_visual = np.intersect1d(audio.ids, visual.ids, assume_unique=True, return_indices=True)
        if ids.size == 0:
            raise CatalogError(f"{catalog.root}: no video in this catalog has both audio and visual vectors")
        matrix = np.hstack([audio.vectors[in_audio], visual.vectors[in_visual]])
        width = audio.vectors.shape[1]
        blocks = () if fusion == "concat" else (
            Block("audio", slice(0, width), FUSION_WEIGHTS["audio"]),
            Block("visual", slice(width, matrix.shape[1]), FUSION_WEIGHTS["visual"]),
        )
    else:
        ids, matrix, blocks = sources[0].ids, sources[0].vectors, ()
    # cdist works in float64 and would convert a float32 matrix on every call.
    prepared = Candidates(ids=ids, matrix=np.ascontiguousarray(matrix, dtype=np.float64), blocks=blocks)
    _prepared[catalog][key] = (sources, prepared)
    return prepared


def distance_matrix(
    queries: np.ndarray, pool: Candidates, metric: str, excluded: np.ndarray | None = None
) -> np.ndarray:
    """Distances from each query vector to each candidate, with scipy's ``metric`` (and the pool's fusion).

    Parameters
    ----------
    queries : np.ndarray
        ``(q, dims)``, or one vector of ``dims``.
    pool : Candidates
        What to compare with.
    metric : str
        One of :data:`METRICS`.
    excluded : np.ndarray, optional
        bool, broadcastable to ``(q, n)``: pairs left out of the ranking (a query itself, its near-copies). Late
        fusion scales each query's distances over its candidates only.

    Returns
    -------
    np.ndarray
        float64, ``(q, n)``; NaN where a pair is excluded or its distance is not a finite number.

    Raises
    ------
    ValueError
        For an unknown metric.
    CatalogError
        When the queries' and the pool's dimensions differ.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    if queries.shape[1] != pool.matrix.shape[1]:
        raise CatalogError(f"query has {queries.shape[1]} dimensions, the catalog's vectors {pool.matrix.shape[1]}")
    if not pool.blocks:
        return _masked_cdist(queries, pool.matrix, metric, excluded)
    fused = np.zeros((queries.shape[0], pool.matrix.shape[0]))
    for block in pool.blocks:
        part = _masked_cdist(queries[:, block.columns], pool.matrix[:, block.columns], metric, excluded)
        if not np.isfinite(part).any():
            return part  # the sum would be NaN everywhere: spare the other blocks (jensenshannon is slow)
        fused += block.weight * _row_z_scores(part)
    return fused


def _masked_cdist(queries: np.ndarray, matrix: np.ndarray, metric: str, excluded: np.ndarray | None) -> np.ndarray:
    from scipy.spatial.distance import cdist  # here: commands that rank nothing start without scipy
    with np.errstate(divide="ignore", invalid="ignore"):
        found = cdist(queries, matrix, metric=metric)
    found[~np.isfinite(found)] = np.nan
    if excluded is not None:
        found[np.broadcast_to(excluded, found.shape)] = np.nan
    return found


def _row_z_scores(found: np.ndarray) -> np.ndarray:
    """Each row's finite values as z-scores over that row (NaN stays NaN); a constant row becomes zeros."""
    finite = np.isfinite(found)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    values = np.where(finite, found, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    spread = np.sqrt((np.where(finite, found - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
    return (found - mean) / np.where(spread > 0, spread, 1.0)


def rank(
    query: np.ndarray,
    pool: Candidates,
    metric: str,
    k: int = 5,
    exclude: frozenset[int] = frozenset(),
    exact: bool = False,
) -> list[tuple[int, float]]:
    """Return the ``k`` nearest ``(video_id, distance)`` pairs, nearest first.

    Ties are broken by video id, so equal inputs always give equal answers. Candidates whose distance is not a
    finite number (for example ``jensenshannon`` on negative values) are left out. With late fusion the distance
    is the weighted sum of the modalities' z-scores, so it can be negative.

    Where the pool's :class:`~mvr.vectorindex.VectorIndex` applies (a large catalog, a metric it supports), a
    shortlist from compact vectors is ranked with the exact distances: the same distances as the full scan,
    and the same videos but for a rare near tie (``docs/performance.md`` measures the recall). Late fusion's
    z-scores then use statistics estimated from the compact vectors, within about 1e-3 of the exact ones
    (cityblock: 1e-2). ``exact=True`` always scans the whole matrix.

    Raises
    ------
    DegenerateMetricError
        When no candidate gets a finite distance, or all of them get the same one.
    """
    excluded = np.isin(pool.ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    query = np.asarray(query, dtype=np.float64)
    # A query of the wrong shape goes to the full scan, which explains the mismatch.
    if not exact and query.shape == pool.matrix.shape[1:]:
        found = pool.index.search(query, metric, k, excluded)
        if found is not None:
            return [(int(pool.ids[row]), float(distance)) for row, distance in zip(*found)]
    found = distance_matrix(query, pool, metric, excluded[None, :])[0]
    finite = np.isfinite(found)
    if not finite.any():
        raise DegenerateMetricError(
            f"{metric}: gives no finite distance on these vectors (scipy's {metric} needs non-negative"
            " values); choose another metric"
        )
    ids, found = pool.ids[finite], found[finite]
    if ids.size > 1 and np.ptp(found) == 0.0:
        raise DegenerateMetricError(
            f"{metric}: gives every candidate the same distance ({found[0]:.6g}) on these real-valued vectors,"
            " so it cannot rank them; choose another metric"
        )
    order = np.lexsort((ids, found))[:k]
    return [(int(ids[i]), float(found[i])) for i in order]


@dataclass
class Recommendation:
    """The answer to one query: what was asked, and the matches nearest first."""

    query: dict
    modality: str
    metric: str
    matches: list[Match]
    notes: list[str]

    def to_dict(self) -> dict:
        """The JSON of ``mvr query --json``."""
        return {
            "query": self.query, "modality": self.modality, "metric": self.metric,
            "results": [match.to_dict() for match in self.matches],
        }


def recommend(
    catalog: Catalog,
    source: str,
    modality: str = "audio",
    metric: str | None = None,
    k: int = 5,
    settings: VisualSettings | None = None,
    fusion: str = DEFAULT_FUSION,
    exact: bool = False,
) -> Recommendation:
    """Recommend the ``k`` catalog videos nearest to ``source`` (a file path or an http(s) URL).

    A source the catalog already holds (same URL, or same content) uses its stored vectors and is left out of
    its own results. Anything else is downloaded if needed and its features extracted with the catalog's own
    settings, so that query and catalog vectors are always comparable. ``fusion`` (one of :data:`FUSIONS`)
    applies to fused search; ``concat`` with :data:`STUDY_METRICS` is the study's method. ``exact`` is
    :func:`rank`'s.

    Raises
    ------
    MediaError
        When the source cannot be read or lacks the modality asked for.
    CatalogError
        When the catalog has nothing to compare with.
    DegenerateMetricError
        When the metric ties every candidate.
    """
    if modality not in SEARCH_MODALITIES:
        raise ValueError(f"unknown modality '{modality}'; choose one of: {', '.join(SEARCH_MODALITIES)}")
    metric = metric or DEFAULT_METRICS[modality]
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
    pool = candidates(catalog, modality, fusion)
    from mvr.collection import visual_settings  # here: the command line imports this module for its constants

    query, vector, notes = query_vectors(catalog, source, modality, visual_settings(catalog, settings))
    return recommend_vector(catalog, pool, query, vector, modality, metric, k=k, notes=notes, exact=exact)


def recommend_vector(
    catalog: Catalog,
    pool: Candidates,
    query: dict,
    vector: np.ndarray,
    modality: str,
    metric: str,
    k: int = 5,
    notes: list[str] | None = None,
    exact: bool = False,
) -> Recommendation:
    """Rank ``pool`` for a query whose search vector is already known (extracted, or cached by a service).

    ``query`` describes the source as :func:`query_vectors` does; a query the catalog holds (``query["id"]``) is
    left out of its own results.
    """
    exclude = frozenset([query["id"]]) if query.get("id") is not None else frozenset()
    ranked = rank(vector, pool, metric, k=k, exclude=exclude, exact=exact)
    matches = [Match(rank=i + 1, video=catalog.get(video_id), distance=distance)
               for i, (video_id, distance) in enumerate(ranked)]
    return Recommendation(query=query, modality=modality, metric=metric, matches=matches, notes=list(notes or []))


def query_vectors(
    catalog: Catalog, source: str, modality: str, settings: VisualSettings
) -> tuple[dict, np.ndarray, list[str]]:
    """Return ``(query description, search vector, notes)`` of ``source`` for ``modality``."""
    needed = ("audio", "visual") if modality == "fused" else (modality,)
    # A URL is looked up by name, so a known one is not downloaded again; a file by content, since it may change.
    known = catalog.find_by_source(source) if media.is_url(source) else None
    download_dir = None
    try:
        if known is None:
            if media.is_url(source):
                path, title, download_dir = media.download_to_temp(source, catalog.root / "tmp")
            else:
                path, title = Path(source), Path(source).stem
            info = media.probe(path)
            known = catalog.find_by_hash(media.file_sha256(path))
        if known is not None:
            description = {"source": source, "title": known.title, "id": known.id, "label": known.label}
            stored = {m: catalog.vector(known.id, m) for m in needed}
            missing = [m for m, found in stored.items() if found is None]
            if missing:
                raise MediaError(source, f"has no {' or '.join(missing)} vector in the catalog (no such stream)")
            vectors, notes = {m: found[1] for m, found in stored.items()}, []
        else:
            description = {"source": source, "title": title, "id": None, "label": None}
            features = extract_features(path, modalities=needed, settings=settings, info=info)
            missing = [m for m in needed if m not in features.vectors]
            if missing:
                raise MediaError(source, f"{modality} search impossible: " + "; ".join(features.notes))
            for m, (extractor, _vector) in features.vectors.items():
                catalog.check_extractor(m, extractor)
            vectors, notes = {m: found[1] for m, found in features.vectors.items()}, features.notes
    finally:
        media.remove_temp_folder(download_dir)
    return description, fuse(vectors) if modality == "fused" else vectors[modality], notes
