"""Retrieval: rank the catalog's videos by distance to a query, with the study's eleven metrics.

Distances follow ``scipy.spatial.distance.cdist`` exactly. Some of the study's metrics are not meaningful on our
real-valued features (``jensenshannon`` needs non-negative vectors; ``hamming``, ``jaccard`` and ``sokalsneath``
compare values as booleans), so they can give every candidate the same distance. Such a ranking would be the
catalog's storage order, not an answer: it raises :class:`DegenerateMetricError` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

from mvr import media
from mvr.catalog import Catalog, Video
from mvr.collection import visual_settings
from mvr.errors import CatalogError, DegenerateMetricError, MediaError
from mvr.features import VisualSettings, extract_features

METRICS = (
    "euclidean", "cityblock", "cosine", "correlation", "hamming", "jaccard",
    "jensenshannon", "chebyshev", "canberra", "braycurtis", "sokalsneath",
)
SEARCH_MODALITIES = ("audio", "visual", "fused")
# The study's choices per modality (its section 4).
DEFAULT_METRICS = {"audio": "euclidean", "visual": "euclidean", "fused": "braycurtis"}


@dataclass(frozen=True)
class Candidates:
    """The catalog's search vectors of one modality: ids and a float64 matrix, prepared once for cdist."""

    ids: np.ndarray
    matrix: np.ndarray


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
    """Fuse one video's audio and visual vectors as the study did: plain concatenation (136 + 2 x dims)."""
    return np.concatenate([vectors["audio"], vectors["visual"]])


def candidates(catalog: Catalog, modality: str) -> Candidates:
    """Stack the catalog's vectors of ``modality`` (``fused`` = videos that have both) as float64.

    Raises
    ------
    CatalogError
        When no indexed video has vectors of that modality.
    """
    if modality == "fused":
        audio, visual = catalog.matrix("audio"), catalog.matrix("visual")
        if audio is None or visual is None:
            raise CatalogError(f"{catalog.root}: fused search needs videos with both audio and visual vectors")
        ids, in_audio, in_visual = np.intersect1d(audio.ids, visual.ids, assume_unique=True, return_indices=True)
        matrix = np.hstack([audio.vectors[in_audio], visual.vectors[in_visual]])
    else:
        found = catalog.matrix(modality)
        if found is None:
            raise CatalogError(f"{catalog.root}: no video in this catalog has {modality} vectors")
        ids, matrix = found.ids, found.vectors
    if ids.size == 0:
        raise CatalogError(f"{catalog.root}: no video in this catalog has both audio and visual vectors")
    # cdist works in float64 and would convert a float32 matrix on every call.
    return Candidates(ids=ids, matrix=np.ascontiguousarray(matrix, dtype=np.float64))


def distances(query: np.ndarray, matrix: np.ndarray, metric: str) -> np.ndarray:
    """Distances from one query vector to every row of ``matrix`` with scipy's ``metric``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
    query = np.asarray(query, dtype=np.float64).reshape(1, -1)
    if query.shape[1] != matrix.shape[1]:
        raise CatalogError(f"query has {query.shape[1]} dimensions, the catalog's vectors {matrix.shape[1]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return cdist(query, matrix, metric=metric)[0]


def rank(
    query: np.ndarray,
    pool: Candidates,
    metric: str,
    k: int = 5,
    exclude: frozenset[int] = frozenset(),
) -> list[tuple[int, float]]:
    """Return the ``k`` nearest ``(video_id, distance)`` pairs, nearest first.

    Ties are broken by video id, so equal inputs always give equal answers. Candidates whose distance is not a
    finite number (for example ``jensenshannon`` on negative values) are left out.

    Raises
    ------
    DegenerateMetricError
        When no candidate gets a finite distance, or all of them get the same one.
    """
    keep = ~np.isin(pool.ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    ids = pool.ids[keep]
    found = distances(query, pool.matrix[keep], metric)
    finite = np.isfinite(found)
    if not finite.any():
        raise DegenerateMetricError(
            f"{metric}: gives no finite distance on these vectors (scipy's {metric} needs non-negative"
            " values); choose another metric"
        )
    ids, found = ids[finite], found[finite]
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
) -> Recommendation:
    """Recommend the ``k`` catalog videos nearest to ``source`` (a file path or an http(s) URL).

    A source the catalog already holds (same URL, or same content) uses its stored vectors and is left out of
    its own results. Anything else is downloaded if needed and its features extracted with the catalog's own
    settings, so that query and catalog vectors are always comparable.

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
    pool = candidates(catalog, modality)
    query, vectors, notes = query_vectors(catalog, source, modality, visual_settings(catalog, settings))
    exclude = frozenset([query["id"]]) if query.get("id") is not None else frozenset()
    ranked = rank(vectors, pool, metric, k=k, exclude=exclude)
    matches = [Match(rank=i + 1, video=catalog.get(video_id), distance=distance)
               for i, (video_id, distance) in enumerate(ranked)]
    return Recommendation(query=query, modality=modality, metric=metric, matches=matches, notes=notes)


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
        if download_dir is not None:
            download_dir.cleanup()
    return description, fuse(vectors) if modality == "fused" else vectors[modality], notes
