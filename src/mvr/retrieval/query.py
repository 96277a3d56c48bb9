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
from mvr.errors import MediaError, MissingSpaceError, UsageError
from mvr.features import (
    Extractor,
    FeatureGroup,
    SpaceOptions,
    build_extractors,
    extract_features,
    get_space,
)
from mvr.index.base import check_metric
from mvr.ingest.policy import SourcePolicy
from mvr.ingest.resolve import ResolvedMedia, resolve
from mvr.retrieval.explain import group_shares
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.search import Ranked, SearcherCache, rank
from mvr.retrieval.targets import (
    DEFAULT_FUSION,
    EQUAL_WEIGHTS,
    FUSED,
    default_metrics,
    search_targets,
)
from mvr.retrieval.tuning import catalog_spaces, stored_tuning
from mvr.store import Catalog, Video, catalog_options

WEIGHT_ORIGINS = ("equal", "tuned", "explicit")
"""Where a fused search's weights come from: mvr's equal default, the catalog's tuning, or the request."""


@dataclass(frozen=True)
class Match:
    """One recommended video, and for a late-fused search why it is close.

    Attributes
    ----------
    rank, video, distance
        Its place (from 1), the video, and what ranked it.
    parts : dict
        Late fusion: space -> the space's raw distance to the query.
    similarity : float, optional
        The share of the query's other candidates that are farther (0-1); None where unknown.
    why : dict
        Late fusion: space -> ``{"distance", "metric", "weight", "score", "similarity", "groups",
        "groups_measure"}``; the spaces' ``score`` (weighted z-scores) add up to ``distance``.
    """

    rank: int
    video: Video
    distance: float
    parts: dict[str, float] = field(default_factory=dict)
    similarity: float | None = None
    why: dict[str, dict] = field(default_factory=dict)

    def to_dict(self, explain: bool = False) -> dict:
        """The fields of ``mvr query --json``; ``explain`` adds ``similarity`` and ``why``."""
        found = {
            "rank": self.rank, "id": self.video.id, "title": self.video.title, "label": self.video.label,
            "source": self.video.source, "distance": self.distance,
        }
        if explain:
            found |= {"similarity": self.similarity, "why": self.why}
        return found


@dataclass
class Recommendation:
    """The answer to one query: what was asked, how it was searched, and the matches nearest first.

    ``tied_at_cut``: the last match ties with a candidate left out (ties go by video id ascending).
    """

    query: dict
    modality: str
    metric: str
    matches: list[Match]
    notes: list[str]
    fusion: Fusion | None = None
    weights_from: str = "equal"
    tied_at_cut: bool = False

    @property
    def explained(self) -> bool:
        """Whether ``--json`` carries the explanations by default: for any fused search but mvr's equal weights,
        whose JSON keeps the keys it always had."""
        return self.fusion is not None and self.weights_from != "equal"

    def to_dict(self, explain: bool | None = None) -> dict:
        """The JSON of ``mvr query --json``.

        ``explain`` (by default :attr:`explained`) adds ``fusion`` (method, weights, metrics and where the weights
        come from) and each match's ``similarity`` and ``why``. ``tied_at_cut`` is there whenever it is true.
        """
        explain = self.explained if explain is None else explain
        found = {
            "query": self.query, "modality": self.modality, "metric": self.metric,
            "results": [match.to_dict(explain) for match in self.matches],
        }
        if explain and self.fusion is not None:
            found["fusion"] = fusion_dict(self.fusion, self.metric, self.weights_from)
        if self.tied_at_cut:
            found["tied_at_cut"] = True
        return found


@dataclass(frozen=True)
class QueryVectors:
    """A query's description (``source``, ``title``, ``id`` and ``label``, the last two for a catalog video), its
    vector in each space asked for, and notes on what could not be computed."""

    description: dict
    vectors: dict[str, np.ndarray]
    notes: list[str]


def fusion_dict(fusion: Fusion, metric: str, weights_from: str) -> dict:
    """How a fused search combined the spaces, as JSON: ``{"method", "weights", "metrics", "projections",
    "weights_from"}`` (``projections``: space -> the method of its learned projection)."""
    return {"method": fusion.method, "weights": dict(fusion.weights),
            "metrics": {space: fusion.metric_of(space, metric) for space in fusion.spaces},
            "projections": {space: found.method for space, found in fusion.projections.items()},
            "weights_from": weights_from}


def fusion_for(modality: str, method: str = DEFAULT_FUSION) -> Fusion | None:
    """The fusion a search target needs: None for a space of its own, the default spaces and weights for fused."""
    if modality not in search_targets():
        raise UsageError(f"unknown modality '{modality}'; choose one of: {', '.join(search_targets())}")
    return Fusion(method=method, weights=dict(EQUAL_WEIGHTS)) if modality == FUSED else None


def catalog_fusion(
    catalog: Catalog,
    modality: str,
    method: str = DEFAULT_FUSION,
    *,
    weights: Mapping[str, float] | None = None,
    metric_given: bool = False,
) -> tuple[Fusion | None, str]:
    """The fusion a search of ``catalog`` uses, and where its weights come from (one of :data:`WEIGHT_ORIGINS`).

    The weights are explicit ``weights`` (their spaces are the fused ones), else, for late and adaptive fusion,
    the catalog's tuning's (:func:`mvr.retrieval.tuning.stored_tuning`), else mvr's equal ones. A tuned catalog's
    per-space metrics and learned projections apply to its spaces either way (so that ``musicnn=1`` searches
    MusiCNN alone in its projection), unless the search names a metric (``metric_given``). None for a space of its
    own.

    Raises
    ------
    UsageError
        For an unknown modality or fusion.
    """
    default = fusion_for(modality, method)
    if default is None:
        return None, "equal"
    tuning = stored_tuning(catalog) if method != "concat" else None
    origin = "explicit" if weights else "tuned"
    if tuning is None:
        return (Fusion(method=method, weights=dict(weights)), origin) if weights else (default, "equal")
    return tuning.fusion(method, metrics=not metric_given, weights=weights or None), origin


def spaces_of(modality: str, fusion: Fusion | None) -> tuple[str, ...]:
    """The feature spaces a search target reads."""
    return fusion.spaces if fusion is not None else (modality,)


@dataclass(frozen=True)
class SearchPlan:
    """How a search of a catalog measures: its target, metric and fusion, and the pool of vectors it ranks.

    Attributes
    ----------
    modality : str
        One of :func:`mvr.retrieval.search_targets`.
    metric : str
        The search's metric (each space's that the fusion gives no metric of its own).
    fusion : Fusion, optional
        None for a space of its own.
    weights_from : str
        Where the fusion's weights come from, one of :data:`WEIGHT_ORIGINS`.
    pool : Pool
        The catalog's vectors in the spaces the target reads (:meth:`SearcherCache.pool`).
    """

    modality: str
    metric: str
    fusion: Fusion | None
    weights_from: str
    pool: Pool


def plan_search(
    catalog: Catalog,
    modality: str,
    *,
    metric: str | None = None,
    fusion: str = DEFAULT_FUSION,
    weights: Mapping[str, float] | None = None,
    searchers: SearcherCache,
) -> SearchPlan:
    """The target's fusion (:func:`catalog_fusion`: explicit weights, else the catalog's tuning, else equal ones),
    its metric (by default the target's own, :func:`mvr.retrieval.default_metrics`) and its pool.

    Raises
    ------
    UsageError
        For an unknown modality, metric or fusion.
    CatalogError
        When no video of the catalog has the target's spaces.
    """
    chosen, weights_from = catalog_fusion(catalog, modality, fusion, weights=weights, metric_given=metric is not None)
    metric = check_metric(metric or default_metrics()[modality])
    pool = searchers.pool(catalog, spaces_of(modality, chosen))
    return SearchPlan(modality=modality, metric=metric, fusion=chosen, weights_from=weights_from, pool=pool)


def recommend(
    catalog: Catalog,
    source: str,
    *,
    modality: str = "audio",
    metric: str | None = None,
    k: int = 5,
    options: Mapping[str, SpaceOptions] | None = None,
    fusion: str = DEFAULT_FUSION,
    weights: Mapping[str, float] | None = None,
    exact: bool = False,
    runtime: RuntimeSettings | None = None,
    policy: SourcePolicy | None = None,
    searchers: SearcherCache | None = None,
    extractors: Mapping[str, Extractor] | None = None,
    on_stage: Callable[[str], None] | None = None,
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
        By default the target's own (:func:`mvr.retrieval.default_metrics`); for a tuned fused search, each
        space's tuned metric.
    k : int
        How many.
    options : mapping, optional
        Extractor options asked for (space -> options); they must agree with the catalog's.
    fusion : str
        For ``fused``: ``late`` (mvr's), ``adaptive`` or ``concat`` (the study's).
    weights : mapping, optional
        For ``fused``: space -> weight (:func:`mvr.retrieval.tuning.parse_weights`); by default the catalog's
        tuned weights, else equal ones (:func:`catalog_fusion`).
    exact : bool
        Rank every candidate exactly, rather than shortlisting on a large catalog.
    runtime, policy, searchers, extractors
        The process's settings, the URL policy, the catalog's searchers and the extractors to use; made afresh
        when not given.
    on_stage : callable, optional
        Hears the stages of the query's work, as :func:`query_vectors` says them.

    Raises
    ------
    MediaError
        When the source cannot be read; MissingSpaceError, naming the spaces it has, when it lacks one asked for.
    CatalogError
        When the catalog has nothing to compare with.
    DegenerateMetricError
        When the metric ties every candidate.
    UsageError
        For an unknown modality, metric or fusion.
    """
    searchers = searchers or SearcherCache()
    runtime = runtime or RuntimeSettings()
    # An empty catalog fails here, before any download.
    plan = plan_search(catalog, modality, metric=metric, fusion=fusion, weights=weights, searchers=searchers)
    spaces = plan.pool.spaces
    if extractors is None:
        extractors = build_extractors(catalog_options(catalog, spaces, options), runtime)
    found = query_vectors(catalog, source, spaces, extractors=extractors, runtime=runtime,
                          policy=policy or SourcePolicy(), on_stage=on_stage)
    return recommend_vectors(catalog, plan.pool, found, modality, plan.metric, fusion=plan.fusion, k=k,
                             searchers=None if exact else searchers, weights_from=plan.weights_from,
                             groups={space: extractor.groups for space, extractor in extractors.items()})


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
    weights_from: str = "equal",
    groups: Mapping[str, tuple[FeatureGroup, ...]] | None = None,
) -> Recommendation:
    """Rank ``pool`` for a query whose vectors are already known (extracted, or cached by a service).

    A query the catalog holds (``query.description["id"]``) is left out of its own results. With ``searchers``,
    a large catalog is shortlisted by each space's searcher; without, every candidate is ranked exactly.
    ``weights_from`` says where the fusion's weights came from (:func:`catalog_fusion`); ``groups`` (space -> its
    extractor's feature groups) lets each fused match say which groups made it close.
    """
    query_id = query.description.get("id")
    exclude = frozenset([query_id]) if query_id is not None else frozenset()
    by_space = None
    if searchers is not None:
        by_space = {space: searchers.searcher(catalog, space,
                                              fusion.searcher_metric(space, metric) if fusion else metric)
                    for space in pool.spaces}
    ranked = rank(query.vectors, pool, metric, fusion=fusion, k=k, exclude=exclude, searchers=by_space)
    rows = np.searchsorted(pool.ids, ranked.ids)
    matches = [
        Match(rank=i + 1, video=catalog.get(int(video_id)), distance=float(distance),
              parts={space: float(part[i]) for space, part in ranked.parts.items()},
              similarity=None if ranked.similarity is None else float(ranked.similarity[i]),
              why=_why(ranked, i, query.vectors, pool, rows[i], fusion, metric, groups or {}))
        for i, (video_id, distance) in enumerate(zip(ranked.ids, ranked.distances, strict=True))
    ]
    return Recommendation(query=query.description, modality=modality, metric=metric, matches=matches,
                          notes=list(query.notes), fusion=fusion, weights_from=weights_from,
                          tied_at_cut=ranked.tied_at_cut)


def _why(ranked: Ranked, i: int, query: Mapping[str, np.ndarray], pool: Pool, row: int, fusion: Fusion | None,
         metric: str, groups: Mapping[str, tuple[FeatureGroup, ...]]) -> dict[str, dict]:
    """Match ``i``'s explanation by space (late and adaptive fusion only: they keep each space's part)."""
    found = {}
    for space, part in ranked.parts.items():
        space_metric = fusion.metric_of(space, metric)
        shares = group_shares(query[space], pool.matrices[space][row], space_metric, groups[space],
                              projection=fusion.projections.get(space)) if space in groups else None
        found[space] = {
            "distance": float(part[i]), "metric": space_metric, "weight": float(fusion.weights[space]),
            "score": float(ranked.scores[space][i]), "similarity": float(ranked.space_similarity[space][i]),
            "groups": None if shares is None else shares.shares,
            "groups_measure": None if shares is None else shares.measure,
        }
    return found


def find_known(
    catalog: Catalog,
    source: str,
    *,
    policy: SourcePolicy,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[Video | None, ResolvedMedia | None]:
    """The catalog video that ``source`` (a file or URL) is, if any, and the media resolved to find out.

    A URL is looked up by name first, so that a known one is not downloaded again; anything else is resolved
    (downloaded, probed, hashed) and looked up by content, since a file may have changed since it was indexed.
    The caller cleans up the resolved media (None when the name sufficed). ``on_stage`` hears ``"downloading"``.

    Raises
    ------
    MediaError
        When the source cannot be read or downloaded.
    """
    known = catalog.find_by_source(source) if media.is_url(source) else None
    if known is not None:
        return known, None
    if on_stage and media.is_url(source):
        on_stage("downloading")
    resolved = resolve(source, policy=policy, tmp_dir=catalog.root / "tmp")
    try:
        return catalog.find_by_hash(resolved.content_hash), resolved
    except BaseException:
        resolved.cleanup()
        raise


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
        When the source cannot be read; MissingSpaceError, naming the spaces it has, when it lacks one asked for.
    CatalogError
        When the extractors' vectors cannot be compared with the catalog's.
    """
    known, resolved = find_known(catalog, source, policy=policy, on_stage=on_stage)
    try:
        if known is not None:
            description = {"source": source, "title": known.title, "id": known.id, "label": known.label}
            stored = {space: catalog.vector(known.id, space) for space in spaces}
            missing = [space for space, found in stored.items() if found is None]
            if missing:
                raise MissingSpaceError(source, f"has no {' or '.join(missing)} vector in the catalog (no such"
                                        " stream)", tuple(s for s in catalog_spaces(catalog) if s in known.spaces))
            return QueryVectors(description, {space: found[1] for space, found in stored.items()}, [])
        if on_stage:
            on_stage("extracting features")
        title = resolved.title or resolved.path.stem
        description = {"source": source, "title": title, "id": None, "label": None}
        try:
            features = extract_features(resolved.path, {space: extractors[space] for space in spaces},
                                        threads=runtime.threads, info=resolved.info)
            vectors, notes = features.vectors, features.notes
        except MediaError as exc:  # with the file probed already: none of the spaces could be computed
            vectors, notes = {}, [exc.reason]
        missing = [space for space in spaces if space not in vectors]
        if missing:
            target = spaces[0] if len(spaces) == 1 else FUSED
            raise MissingSpaceError(source, f"{target} search impossible: " + "; ".join(notes),
                                    _searchable_spaces(catalog, resolved.info, vectors, missing))
        for space, (extractor, _vector) in vectors.items():
            catalog.check_extractor(space, extractor)
        return QueryVectors(description, {space: found[1] for space, found in vectors.items()}, notes)
    finally:
        if resolved is not None:
            resolved.cleanup()


def _searchable_spaces(catalog: Catalog, info: media.MediaInfo, computed: Mapping[str, object],
                       failed: list[str]) -> tuple[str, ...]:
    """The catalog's spaces a file can be searched in: those computed, and those not tried whose stream the file
    has and gave no failure in another space."""
    has = {"audio": info.has_audio, "video": info.has_video}
    failed_streams = {get_space(space).stream for space in failed}
    return tuple(space for space in catalog_spaces(catalog)
                 if space in computed or (space not in failed and has[get_space(space).stream]
                                          and get_space(space).stream not in failed_streams))
