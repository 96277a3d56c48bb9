"""Retrieval evaluation: precision@k and mean average precision by label, for every modality and metric.

A catalog whose videos carry labels (a music genre or style) is its own benchmark: each labelled video is a query,
and a recommendation is correct when it has the query's label. Two protocols:

``loo`` (leave one out)
    Every labelled video queries all the others.
``holdout`` (the study's, section 4)
    :data:`HOLDOUT_PER_LABEL` videos per label are held out as queries (chosen by :func:`holdout_queries`, the same
    ones on every machine), and only the other videos are ranked.
``queries``
    The labelled videos of another catalog (the study's validation videos, say) query this one.

In both, a query's own group (two excerpts of one song, say) is never ranked for it: a near-copy is not a
recommendation. Precision@k is the study's number, correct recommendations / (queries x k); the mean average
precision also weighs where in the whole ranking the same-label videos come. A metric that gives a query every
candidate the same distance (or none finite) has not answered it: that query scores 0, and a metric that answers
no query at all is marked ``degenerate`` and has no precision.

Every run is scored twice, for mvr's own method and for the study's (raw vectors, raw concatenation for ``fused``,
see :mod:`mvr.search`), so that the two can be compared on the same data.

The latest run is stored in the catalog folder as ``DIR/evaluation.json`` (:data:`RESULTS_FILE`, replaced whole
by each run): the JSON that ``mvr evaluate --json`` prints::

    {
      "k": 5,
      "protocol": "loo",                        # or "holdout", or "queries"
      "catalog": "/path/to/DIR",
      "queries": null,                          # with protocol "queries": the catalog the queries came from
      "videos": 215,                            # videos in the catalog at the time
      "created": "2025-01-31T12:00:00+00:00",   # UTC, ISO 8601
      "defaults": {"mvr": {"audio": "braycurtis", "visual": "cosine", "fused": "cosine"},
                   "study": {"audio": "euclidean", "visual": "euclidean", "fused": "braycurtis"}},
      "fusion": {"mvr": "late", "study": "concat", "weights": {"audio": 0.5, "visual": 0.5}},
      "catalog_tuned": false,                   # the catalog held a tuning (mvr tune): its fused default
      "results": [                              # every method x modality x metric of mvr.index.METRICS
        {"method": "mvr",                       # or "study"
         "modality": "audio",                   # audio, visual or fused
         "metric": "braycurtis",
         "precision": 0.598,                    # precision@k; null when degenerate
         "map": 0.441,                          # mean average precision; null when degenerate
         "queries": 215,                        # queries scored
         "degenerate": false,                   # true: the metric tied every candidate of every query
         "labels": {"ambient": 0.667, ...},     # precision@k of each label's queries; null when degenerate
         "chance": 0.25,                        # the precision@k of a random ranking (scoring.chance_precision)
         "default": true},                      # what mvr searches by default on this catalog
        ...
      ]
    }

``defaults`` names each method's own metric per modality: the row to show for "mvr" against "the study".
``"default": true`` marks, per search target, the one result that measures mvr's default search on this catalog
(:meth:`Evaluation.is_default`): mvr's method with its own metric, or for ``fused`` on a tuned catalog the tuned
fusion below.
Each result also counts its queries whose k-th result tied with a candidate left out (``"tied_at_cut"``).

With the ``loo`` protocol and labels enough, two more fused results sit beside them, each over every space the
catalog holds, with each space's own mvr metric:

``"tuned"``
    ``{"result": {...}, "folds": [{"queries", "weights", "metrics", "projections", "tuned", "training_score", "rule",
    "rule_scores"}, ...]}``: the fusion tuned from the labels, scored only by cross-validation over groups
    (:mod:`mvr.evaluation.crossval`);
``"adaptive"``
    the query-adaptive late fusion (:func:`mvr.retrieval.fusion.adaptive_weights`), which needs no labels,
    with mvr's fused metric: it differs from mvr's equal weights only in its weights.

and, for each space that takes a learned projection (the audio spaces), that space alone tuned as ``mvr tune``
tunes it (its LDA projection where it ranks better out of fold), cross-validated the same way:

``"learned"``
    ``{space: {"result": {...}, "folds": [...]}}``, each result's method ``"learned"``. A tuned catalog uses the
    projections in its fused searches only, so these rows are never a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mvr.errors import CatalogError, MvrError, UsageError
from mvr.evaluation.crossval import LEARNED, TUNED, CrossValidation, cross_validate
from mvr.evaluation.protocols import PROTOCOLS
from mvr.evaluation.scoring import Result, query_set, score_candidates, score_queries, summarise
from mvr.features import SPACES, space_names
from mvr.presets import PRESETS, Preset, get_preset
from mvr.progress import Progress
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.query import fusion_for, spaces_of
from mvr.retrieval.search import SearcherCache
from mvr.retrieval.targets import EQUAL_WEIGHTS, FUSED, search_targets
from mvr.retrieval.tuning import catalog_spaces, labelled_rows, stored_tuning
from mvr.store import Catalog, Video

METHODS: dict[str, Preset] = {preset.method: preset for preset in PRESETS.values()}
"""The methods every evaluation scores, by their names in the results: each preset's (mvr's and the study's)."""
DEFAULT_METHOD = get_preset(None).method
"""mvr's own method, the default preset's: with its metric per search target, what mvr searches by default."""


@dataclass
class Evaluation:
    """Every result of one ``mvr evaluate`` run, with what was measured and when."""

    k: int
    protocol: str
    catalog: str
    videos: int
    created: str
    results: list[Result]
    queries: str | None = None
    tuned: CrossValidation | None = None
    adaptive: Result | None = None
    learned: dict[str, CrossValidation] = field(default_factory=dict)
    catalog_tuned: bool = False
    """The catalog held a tuning (:func:`mvr.retrieval.tuning.stored_tuning`): its fused queries use it by
    default, so the tuned fusion's row, not equal weights', is mvr's default for ``fused``."""

    def result(self, method: str, modality: str, metric: str | None = None) -> Result | None:
        """One result; ``metric`` defaults to the method's own choice for the modality. None when the method did
        not search that modality (the study's method knows only the study's spaces)."""
        metric = metric or METHODS[method].metrics.get(modality)
        return next((r for r in self.results if (r.method, r.modality, r.metric) == (method, modality, metric)),
                    None)

    def is_default(self, result: Result) -> bool:
        """Whether ``result`` measures what mvr searches by default on this catalog: :data:`DEFAULT_METHOD` with
        its own metric for each search target, except that a tuned catalog's fused default is the tuned fusion."""
        if result.method == TUNED:
            return self.catalog_tuned
        if result.method == LEARNED:
            return False
        if result.modality == FUSED and self.catalog_tuned:
            return False
        return (result.method == DEFAULT_METHOD
                and result.metric == METHODS[DEFAULT_METHOD].metrics.get(result.modality))

    @property
    def modalities(self) -> list[str]:
        """The search targets scored, in the registry's order."""
        return list(dict.fromkeys(result.modality for result in self.results))

    def to_dict(self) -> dict:
        """The JSON of ``mvr evaluate --json`` and of ``DIR/evaluation.json``."""
        return {
            "k": self.k, "protocol": self.protocol, "catalog": self.catalog, "queries": self.queries,
            "videos": self.videos, "created": self.created,
            "defaults": {name: dict(method.metrics) for name, method in METHODS.items()},
            "fusion": {**{name: method.fusion for name, method in METHODS.items()}, "weights": dict(EQUAL_WEIGHTS)},
            "catalog_tuned": self.catalog_tuned,
            "results": [self._row(result) for result in self.results],
            "tuned": None if self.tuned is None else {**self.tuned.to_dict(), "result": self._row(self.tuned.result)},
            "adaptive": None if self.adaptive is None else self._row(self.adaptive),
            "learned": {space: {**found.to_dict(), "result": self._row(found.result)}
                        for space, found in self.learned.items()},
        }

    def _row(self, result: Result) -> dict:
        return {**result.to_dict(), "default": self.is_default(result)}



def evaluate(
    catalog: Catalog, k: int = 5, protocol: str | None = None, queries: Catalog | None = None, *,
    progress: bool | None = None,
) -> Evaluation:
    """Score every method, modality and metric on the catalog's labelled videos, from their stored vectors.

    Parameters
    ----------
    catalog : Catalog
        The videos to rank (and, for ``loo`` and ``holdout``, the queries).
    k : int
        Recommendations per query.
    protocol : str, optional
        One of :data:`PROTOCOLS`; by default ``queries`` when ``queries`` is given, else ``loo``.
    queries : Catalog, optional
        For the ``queries`` protocol: a catalog of labelled query videos, indexed with the same extractors.
    progress : bool, optional
        The scorings done so far (each search target's, each fold of the tuned fusion's), on standard error
        (:class:`mvr.progress.Progress`).

    Raises
    ------
    MvrError
        When there is no labelled query, or no query has a same-label video outside its group; CatalogError when
        the queries' vectors come from other extractors than the catalog's.
    UsageError
        For an unknown protocol, k below 1, ``queries`` without its protocol or the reverse, or a label with too
        few videos for ``holdout``.
    """
    protocol = protocol or ("queries" if queries is not None else "loo")
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol '{protocol}'; choose one of: {', '.join(PROTOCOLS)}")
    if (protocol == "queries") != (queries is not None):
        raise UsageError("a catalog of queries goes with the 'queries' protocol, and that protocol needs one")
    if k < 1:
        raise UsageError("k must be at least 1")
    videos = {video.id: video for video in catalog.videos()}
    asking = catalog if queries is None else queries
    if not any(video.label for video in asking.videos()):
        raise MvrError(f"{asking.root}: no labelled video to evaluate with (give labels with --label or a"
                       " manifest's label column when indexing)")
    if queries is not None:
        _check_extractors(catalog, queries)
        query_videos = {video.id: video for video in queries.videos()}
    searchers = SearcherCache()
    held = set(catalog.spaces())
    planned = []  # (modality, method's name, fusion, kind)
    for modality in search_targets():
        for name, method in METHODS.items():
            fusion = fusion_for(modality, method.fusion)
            needed = set(spaces_of(modality, fusion))
            if not needed <= held or (method.spaces is not None and not needed <= set(method.spaces)):
                continue  # a space the catalog lacks, or one the method does not know (the study's has two)
            planned.append((modality, name, fusion, fusion.method if fusion is not None else "single"))
    spaces = catalog_spaces(catalog)
    beyond = protocol == "loo" and len(spaces) > 1
    # Both methods search the same raw vectors of one space; they differ only in how they fuse them. Beyond the
    # presets, the adaptive fusion is one more step; the tuned fusion's folds extend the count once dealt.
    scorings = len({(modality, kind) for modality, _, _, kind in planned}) + (1 if beyond else 0)
    learning = [space for space in spaces if SPACES[space].learns_projection] if protocol == "loo" else []
    results = []
    with Progress("evaluating", scorings, unit="scoring", show=progress) as bar:
        scored: dict[tuple[str, str], list[Result]] = {}
        for modality, name, fusion, kind in planned:
            if (modality, kind) not in scored:
                searched = spaces_of(modality, fusion)
                pool = searchers.pool(catalog, searched)
                asked = None if queries is None else (searchers.pool(queries, searched), query_videos)
                scored[modality, kind] = score_candidates(pool, videos, modality, k, protocol, queries=asked,
                                                          fusion=fusion)
                bar.update()
            results += [replace(result, method=name) for result in scored[modality, kind]]
        tuned = adaptive = None
        if beyond:
            tuned, adaptive = _fusions_beyond_presets(searchers.pool(catalog, spaces), videos, k, bar)
        learned = {}
        for space in learning:
            pool = searchers.pool(catalog, (space,))
            learned[space] = cross_validate(pool, labelled_rows(pool, videos), query_set(pool, videos, space), k,
                                            modality=space, method=LEARNED, progress=bar)
    return Evaluation(k=k, protocol=protocol, catalog=str(catalog.root), videos=len(videos),
                      created=datetime.now(UTC).isoformat(timespec="seconds"), results=results,
                      queries=None if queries is None else str(queries.root), tuned=tuned, adaptive=adaptive,
                      learned=learned, catalog_tuned=stored_tuning(catalog) is not None)


def _fusions_beyond_presets(pool: Pool, videos: dict[int, Video], k: int,
                            progress: Progress) -> tuple[CrossValidation, Result]:
    """The tuned fusion, cross-validated (one step of ``progress`` per fold), and the query-adaptive one (one
    step), over every space of ``pool``."""
    found = query_set(pool, videos, FUSED)
    tuned = cross_validate(pool, labelled_rows(pool, videos), found, k, progress=progress)
    # mvr's fused metric in every space, as its equal weights use: the two differ only in their weights.
    metric = METHODS["mvr"].metrics[FUSED]
    prior = {space: 1 / len(pool.spaces) for space in pool.spaces}
    scores = score_queries(found, metric, Fusion("adaptive", prior), k).subset(found.answerable)
    adaptive = summarise(scores, found.labels[found.answerable], FUSED, metric, k, found.chance(k), method="adaptive")
    progress.update()
    return tuned, adaptive


def _check_extractors(catalog: Catalog, queries: Catalog) -> None:
    for space in space_names():
        ours, theirs = catalog.setting(f"extractor.{space}"), queries.setting(f"extractor.{space}")
        if ours and theirs and ours != theirs:
            raise CatalogError(
                f"{queries.root}: its {space} vectors come from '{theirs}', those of {catalog.root} from"
                f" '{ours}'; index the queries with the catalog's settings (the same --preset or --backbone)"
            )


