"""Queries: recommend the catalog videos nearest to a file or URL, in one feature space or a fusion of several.

A source the catalog already holds (same URL, or same content) uses its stored vectors and is left out of its own
results. Anything else goes through the source resolver (:func:`mvr.ingest.resolve`) and the catalog's own
extractors, so that query and catalog vectors are always comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mvr import media
from mvr.config import RuntimeSettings
from mvr.errors import MediaError, UsageError
from mvr.features import Extractor, SpaceOptions, build_extractors, extract_features
from mvr.index.base import check_metric
from mvr.ingest.policy import SourcePolicy
from mvr.ingest.resolve import resolve
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.search import SearcherCache, rank
from mvr.retrieval.targets import (
    DEFAULT_FUSION,
    EQUAL_WEIGHTS,
    FUSED,
    default_metrics,
    search_targets,
)
from mvr.store import Catalog, Video, catalog_options


@dataclass(frozen=True)
class Match:
    """One recommended video, and for a late-fused search each space's raw distance to the query."""

    rank: int
    video: Video
    distance: float
    parts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The fields of ``mvr query --json``."""
        return {
            "rank": self.rank, "id": self.video.id, "title": self.video.title, "label": self.video.label,
            "source": self.video.source, "distance": self.distance,
        }


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


@dataclass(frozen=True)
class QueryVectors:
    """A query's description (``source``, ``title``, ``id`` and ``label``, the last two for a catalog video), its
    vector in each space asked for, and notes on what could not be computed."""

    description: dict
    vectors: dict[str, np.ndarray]
    notes: list[str]


def fusion_for(modality: str, method: str = DEFAULT_FUSION) -> Fusion | None:
    """The fusion a search target needs: None for a space of its own, the default spaces and weights for fused."""
    if modality not in search_targets():
        raise UsageError(f"unknown modality '{modality}'; choose one of: {', '.join(search_targets())}")
    return Fusion(method=method, weights=dict(EQUAL_WEIGHTS)) if modality == FUSED else None


def spaces_of(modality: str, fusion: Fusion | None) -> tuple[str, ...]:
    """The feature spaces a search target reads."""
    return fusion.spaces if fusion is not None else (modality,)


def recommend(
    catalog: Catalog,
    source: str,
    *,
    modality: str = "audio",
    metric: str | None = None,
    k: int = 5,
    options: Mapping[str, SpaceOptions] | None = None,
    fusion: str = DEFAULT_FUSION,
    exact: bool = False,
    runtime: RuntimeSettings | None = None,
    policy: SourcePolicy | None = None,
    searchers: SearcherCache | None = None,
    extractors: Mapping[str, Extractor] | None = None,
) -> Recommendation:
    """Recommend the ``k`` catalog videos nearest to ``source`` (a file path or an http(s) URL).

    Parameters
    ----------
    catalog : Catalog
        The videos to recommend from.
    source : str
        A file or URL.
    modality : str
        One of :func:`mvr.retrieval.search_targets`: a feature space, or ``fused``.
    metric : str, optional
        By default the target's own (:func:`mvr.retrieval.default_metrics`).
    k : int
        How many.
    options : mapping, optional
        Extractor options asked for (space -> options); they must agree with the catalog's.
    fusion : str
        For ``fused``: ``late`` (mvr's) or ``concat`` (the study's).
    exact : bool
        Rank every candidate exactly, rather than shortlisting on a large catalog.
    runtime, policy, searchers, extractors
        The process's settings, the URL policy, the catalog's searchers and the extractors to use; made afresh
        when not given.

    Raises
    ------
    MediaError
        When the source cannot be read or lacks the space asked for.
    CatalogError
        When the catalog has nothing to compare with.
    DegenerateMetricError
        When the metric ties every candidate.
    UsageError
        For an unknown modality, metric or fusion.
    """
    chosen_fusion = fusion_for(modality, fusion)
    metric = check_metric(metric or default_metrics()[modality])
    searchers = searchers or SearcherCache()
    spaces = spaces_of(modality, chosen_fusion)
    pool = searchers.pool(catalog, spaces)  # an empty catalog fails before any download
    if extractors is None:
        extractors = build_extractors(catalog_options(catalog, spaces, options), runtime or RuntimeSettings())
    found = query_vectors(catalog, source, spaces, extractors=extractors, runtime=runtime or RuntimeSettings(),
                          policy=policy or SourcePolicy())
    return recommend_vectors(catalog, pool, found, modality, metric, fusion=chosen_fusion, k=k,
                             searchers=None if exact else searchers)


def recommend_vectors(
    catalog: Catalog,
    pool: Pool,
    query: QueryVectors,
    modality: str,
    metric: str,
    *,
    fusion: Fusion | None = None,
    k: int = 5,
    searchers: SearcherCache | None = None,
) -> Recommendation:
    """Rank ``pool`` for a query whose vectors are already known (extracted, or cached by a service).

    A query the catalog holds (``query.description["id"]``) is left out of its own results. With ``searchers``,
    a large catalog is shortlisted by each space's searcher; without, every candidate is ranked exactly.
    """
    query_id = query.description.get("id")
    exclude = frozenset([query_id]) if query_id is not None else frozenset()
    by_space = None
    if searchers is not None:
        by_space = {space: searchers.searcher(catalog, space, metric) for space in pool.spaces}
    ranked = rank(query.vectors, pool, metric, fusion=fusion, k=k, exclude=exclude, searchers=by_space)
    matches = [
        Match(rank=i + 1, video=catalog.get(int(video_id)), distance=float(distance),
              parts={space: float(part[i]) for space, part in ranked.parts.items()})
        for i, (video_id, distance) in enumerate(zip(ranked.ids, ranked.distances, strict=True))
    ]
    return Recommendation(query=query.description, modality=modality, metric=metric, matches=matches,
                          notes=list(query.notes))


def query_vectors(
    catalog: Catalog,
    source: str,
    spaces: tuple[str, ...],
    *,
    extractors: Mapping[str, Extractor],
    runtime: RuntimeSettings,
    policy: SourcePolicy,
    on_stage: Callable[[str], None] | None = None,
) -> QueryVectors:
    """The vectors of ``source`` in ``spaces``: stored ones for a video the catalog holds, else extracted.

    ``on_stage`` hears ``"downloading"`` and ``"extracting features"`` as the work reaches them.

    Raises
    ------
    MediaError
        When the source cannot be read or lacks a space asked for.
    CatalogError
        When the extractors' vectors cannot be compared with the catalog's.
    """
    # A URL is looked up by name, so a known one is not downloaded again; a file by content, since it may change.
    known = catalog.find_by_source(source) if media.is_url(source) else None
    resolved = None
    try:
        if known is None:
            if on_stage and media.is_url(source):
                on_stage("downloading")
            resolved = resolve(source, policy=policy, tmp_dir=catalog.root / "tmp")
            known = catalog.find_by_hash(resolved.content_hash)
        if known is not None:
            description = {"source": source, "title": known.title, "id": known.id, "label": known.label}
            stored = {space: catalog.vector(known.id, space) for space in spaces}
            missing = [space for space, found in stored.items() if found is None]
            if missing:
                raise MediaError(source, f"has no {' or '.join(missing)} vector in the catalog (no such stream)")
            return QueryVectors(description, {space: found[1] for space, found in stored.items()}, [])
        if on_stage:
            on_stage("extracting features")
        title = resolved.title or resolved.path.stem
        description = {"source": source, "title": title, "id": None, "label": None}
        features = extract_features(resolved.path, {space: extractors[space] for space in spaces},
                                    threads=runtime.threads, info=resolved.info)
        missing = [space for space in spaces if space not in features.vectors]
        if missing:
            target = spaces[0] if len(spaces) == 1 else FUSED
            raise MediaError(source, f"{target} search impossible: " + "; ".join(features.notes))
        for space, (extractor, _vector) in features.vectors.items():
            catalog.check_extractor(space, extractor)
        return QueryVectors(description, {space: found[1] for space, found in features.vectors.items()},
                            features.notes)
    finally:
        if resolved is not None:
            resolved.cleanup()
