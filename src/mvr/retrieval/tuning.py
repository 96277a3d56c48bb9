"""Fusion weights and per-space metrics learned from a catalog's labels (``mvr tune``).

The choice maximises leave-one-out precision@k over the labelled videos, a query's own group (two excerpts of one
song) never ranked for it, exactly as ``mvr evaluate`` scores. It is made from the stored vectors in three steps:

1. each space's metric: by default the space's own (its registry default); with ``metrics`` given (``mvr tune
   --choose-metrics``: :data:`TUNING_METRICS`), the one of them with that space's best precision@k;
2. in each space whose registry entry ``learns_projection`` (the audio spaces), a linear discriminant projection
   (:func:`mvr.retrieval.projection.fit_lda`), kept only where it ranks better than the stored vectors with
   their metric. A projection fitted on the queries it is scored on would flatter itself, so it is judged
   *out of fold*: the labelled videos are dealt into folds by group (:func:`group_folds`), and each fold's
   queries are ranked in a projection fitted on the other folds. Those out-of-fold distances are also what the
   weights are chosen on; the projection kept is then fitted on every labelled video;
3. the weights, on a grid over the simplex (steps of :data:`WEIGHT_STEP`), with those metrics. Each space's
   distance matrix (queries x candidates, z-scored per query as late fusion does) is computed once; a grid point
   is then one weighted sum and one linear-time cut per query (:func:`mvr.retrieval.ranking.first_k`);
4. the rule that chooses among them: equal weights, the best single space (the grid's corners) or the best point
   of the whole grid, each scored out of fold, leaving one group out: each group's queries ranked with the point
   its rule chose on the other groups; a rule is kept only where it scores better so than the simpler ones. All
   three are read from the grid's per-query hits, so this costs no more distances.

Equal scores go to the weights nearest equal ones. The cost is one distance matrix per space and metric
(``queries x videos x dims``) plus ``grid points x queries x videos`` additions; queries beyond
:data:`MAX_QUERIES` are sampled evenly (``docs/evaluation.md`` gives the times).

The choice is stored in the catalog's settings under :data:`TUNING_KEY`, as JSON, with how it was obtained; fused
queries use it while the catalog's extractors are those it was tuned on (:func:`stored_tuning`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from mvr.errors import UsageError
from mvr.features import SPACES, space_names
from mvr.index.base import METRICS
from mvr.index.exact import ExactSearcher
from mvr.progress import Progress
from mvr.retrieval.fusion import Fusion, Pool, distances, row_z_scores
from mvr.retrieval.projection import LDA, PROJECTED_METRIC, Projection, fit_lda
from mvr.retrieval.ranking import excluded_pairs, first_k
from mvr.store import Catalog, Video

TUNING_KEY = "fusion.tuned"
"""The catalog setting that holds the tuned fusion (JSON of :meth:`Tuning.to_dict`)."""
TUNING_METRICS = tuple(m for m in METRICS if m not in ("hamming", "jaccard", "sokalsneath", "jensenshannon"))
"""The metrics ``mvr tune --choose-metrics`` chooses from: the boolean ones and jensenshannon tie or fail on
real-valued features. Not the default: chosen per fold, they lowered the cross-validated precision@5 on each of
the three small benchmark collections (``docs/evaluation.md``), a choice made on a few dozen queries."""
WEIGHT_STEP = 0.1
MIN_LABELS = 2
MIN_LABELLED = 10
MAX_QUERIES = 500
"""Labelled queries a tuning scores at most (taken evenly from the labelled videos); every video is ranked."""
FOLDS = 5
"""Folds by group: of the out-of-fold test of a learned projection here, of ``mvr evaluate``'s cross-validation."""
RULES = {"equal": "equal weights", "single": "the best single space", "mix": "the best mix"}
"""The rules that choose the weights among the grid's points, simplest first (what each is called in a reason)."""


@dataclass(frozen=True)
class Tuning:
    """A fusion chosen from the labels, and how it was chosen.

    Attributes
    ----------
    weights : dict
        space -> weight (they add up to 1).
    metrics : dict
        space -> metric.
    k : int
        The precision@k maximised.
    labels : list of str
        The labels used.
    videos : int
        Labelled videos used.
    score : float or None
        Leave-one-out precision@k of the choice on the labels it was chosen from (in-sample, optimistic: see
        ``mvr evaluate`` for the cross-validated figure); None when not tuned.
    equal_score : float or None
        The same for equal weights and the chosen metrics.
    created : str
        When (UTC, ISO 8601).
    extractors : dict
        space -> the extractor string of the vectors tuned on.
    tuned : bool
        False when there were too few labels: the weights are then equal, and ``reason`` says why.
    reason : str
        What was done, in a sentence.
    projections : dict
        space -> the JSON of its learned projection (:meth:`mvr.retrieval.projection.Projection.to_dict`), for
        the spaces where one was kept.
    projection_scores : dict
        space -> ``{"stored": p, "lda": p}``: precision@k with the stored vectors and, out of fold, in a learned
        projection, for every space where one was tried.
    rule_scores : dict
        ``{"equal": p, "single": p, "mix": p}``: precision@k out of fold of equal weights, of the best single space
        and of the best point of the whole grid, each chosen on the other groups' queries (one group left out at a
        time); the weights come from the best rule (the simpler one where scores are equal).
    rule : str
        The rule kept: ``equal``, ``single`` or ``mix`` (:data:`RULES`); empty when there were too few labels.
    """

    weights: dict[str, float]
    metrics: dict[str, str]
    k: int
    labels: list[str]
    videos: int
    score: float | None
    equal_score: float | None
    created: str
    extractors: dict[str, str]
    tuned: bool
    reason: str
    projections: dict[str, dict] = field(default_factory=dict)
    projection_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    rule_scores: dict[str, float] = field(default_factory=dict)
    rule: str = ""

    def fusion(self, method: str = "late", *, metrics: bool = True,
               weights: Mapping[str, float] | None = None) -> Fusion:
        """The fusion this tuning chose. ``weights`` (asked for by a search) replace its weights, and its metrics
        and projections then apply to the spaces they name; without ``metrics`` (a search that names its metric),
        it has neither."""
        chosen = dict(self.weights if weights is None else weights)
        if not metrics:
            return Fusion(method=method, weights=chosen)
        return Fusion(method=method, weights=chosen,
                      metrics={space: metric for space, metric in self.metrics.items() if space in chosen},
                      projections={space: Projection.from_dict(found) for space, found in self.projections.items()
                                   if space in chosen})

    def to_dict(self) -> dict:
        """The JSON form (stored under :data:`TUNING_KEY`, printed by ``mvr tune --json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, found: Mapping) -> Tuning:
        """The tuning of :meth:`to_dict`'s JSON."""
        # A tuning stored before projections existed has none.
        return cls(**{name: found[name] for name in cls.__dataclass_fields__ if name in found})


def weight_grid(spaces: int, step: float = WEIGHT_STEP) -> np.ndarray:
    """Every weight vector of ``spaces`` non-negative weights adding up to 1, in multiples of ``step``.

    Returns
    -------
    np.ndarray
        float64 ``(points, spaces)``.
    """
    parts = round(1 / step)
    points = [combo for combo in itertools.product(range(parts + 1), repeat=spaces - 1) if sum(combo) <= parts]
    return np.array([[*combo, parts - sum(combo)] for combo in points], dtype=np.float64) / parts


@dataclass(frozen=True)
class LabelledRows:
    """The labels, groups and keys (content hashes) of a pool's rows, as object arrays (None where missing)."""

    labels: np.ndarray
    groups: np.ndarray
    keys: np.ndarray


def tune_pool(
    pool: Pool,
    rows: LabelledRows,
    *,
    k: int = 5,
    within: np.ndarray | None = None,
    metrics: tuple[str, ...] | None = None,
    projections: bool = True,
    step: float = WEIGHT_STEP,
    max_queries: int = MAX_QUERIES,
    progress: Progress | None = None,
) -> Tuning:
    """Choose each space's metric and the spaces' weights for the pool, from its rows' labels.

    Parameters
    ----------
    pool : Pool
        The vectors, every space fused.
    rows : LabelledRows
        Of the pool's rows.
    k : int
        Recommendations per query.
    within : np.ndarray, optional
        Positions of the rows to tune on: they are the queries (the labelled ones) and the candidates; by default
        all. Cross-validation passes the training folds' rows.
    metrics : tuple of str, optional
        The metrics to choose each space's from (e.g. :data:`TUNING_METRICS`); by default each space keeps its
        own default metric.
    projections : bool
        Whether to try a learned projection in the spaces that take one (see the module).
    step : float
        The weight grid's step.
    max_queries : int
        Queries scored at most.
    progress : Progress, optional
        Extended by the steps of the choice (each space's metrics, then the grid) and told of each.

    Returns
    -------
    Tuning
        ``created`` and ``extractors`` left empty (:func:`tune_catalog` fills them).

    Raises
    ------
    UsageError
        For k below 1 or an unknown metric.
    """
    if k < 1:
        raise UsageError("k must be at least 1")
    within = np.arange(pool.ids.size) if within is None else np.asarray(within)
    spaces = pool.spaces
    equal = {space: 1 / len(spaces) for space in spaces}
    labels = rows.labels[within]
    labelled = np.flatnonzero(np.not_equal(labels, None))
    fitted_on = within[labelled]  # every labelled row: what a projection is fitted on
    names = sorted({str(label) for label in labels[labelled]})
    default_metrics = {space: SPACES[space].default_metric if space in SPACES else "cosine" for space in spaces}
    if len(names) < MIN_LABELS or labelled.size < MIN_LABELLED:
        return Tuning(weights=equal, metrics=default_metrics, k=k, labels=names, videos=int(labelled.size),
                      score=None, equal_score=None, created="", extractors={}, tuned=False,
                      reason=f"kept equal weights: tuning needs at least {MIN_LABELS} labels and {MIN_LABELLED}"
                             f" labelled videos, these have {len(names)} and {labelled.size}")
    used = int(labelled.size)
    if labelled.size > max_queries:
        labelled = labelled[np.linspace(0, labelled.size - 1, max_queries).round().astype(np.int64)]
    queries, candidates = within[labelled], within
    excluded = excluded_pairs(rows.keys[queries], rows.groups[queries], rows.keys[candidates],
                              rows.groups[candidates])
    relevant = (rows.labels[queries][:, None] == rows.labels[candidates][None, :]) & ~excluded
    answerable = relevant.any(axis=1)
    if not answerable.any():
        return Tuning(weights=equal, metrics=default_metrics, k=k, labels=names, videos=used,
                      score=None, equal_score=None, created="", extractors={}, tuned=False,
                      reason="kept equal weights: no labelled video has a same-label video outside its group")
    relevant, excluded = relevant[answerable], excluded[answerable]
    queries = queries[answerable]
    candidate_pool = pool.subset(candidates)
    tried = {space: (default_metrics[space],) if metrics is None else
             # The space's own default first, so that it wins a tie.
             tuple(sorted(metrics, key=lambda m, s=space: (m != default_metrics[s], METRICS.index(m))))
             for space in spaces}
    learning = [space for space in spaces if projections and space in SPACES and SPACES[space].learns_projection]
    if progress is not None:
        progress.extend(sum(len(found) for found in tried.values()) + len(learning) + 1)
    chosen, scaled, learned, learned_scores = {}, {}, {}, {}
    for space in spaces:
        single = Pool(ids=candidate_pool.ids, matrices={space: candidate_pool.matrices[space]})
        best = None
        for metric in tried[space]:
            found = distances({space: pool.matrices[space][queries]}, single, metric, None, excluded).total
            if progress is not None:
                progress.update()
            if not np.isfinite(found).any(axis=1).all():
                continue  # a metric that cannot rank some query is not a candidate
            precision = precision_at_k(found, relevant, k)
            if best is None or precision > best[0]:
                best = (precision, metric, found)
        if best is None:
            raise UsageError(f"{space}: none of {', '.join(tried[space])} ranks every query")
        chosen[space] = best[1]
        measured = best[2]
        if space in learning:
            out_of_fold = _out_of_fold_distances(pool.matrices[space], rows, fitted_on, queries, candidates, excluded)
            if progress is not None:
                progress.update()
            if out_of_fold is not None:
                precision = precision_at_k(out_of_fold, relevant, k)
                learned_scores[space] = {"stored": round(best[0], 4), LDA: round(precision, 4)}
                fitted = fit_lda(pool.matrices[space][fitted_on], rows.labels[fitted_on]) \
                    if precision > best[0] else None
                if fitted is not None:
                    learned[space], measured = fitted.to_dict(), out_of_fold
        scaled[space] = row_z_scores(measured).astype(np.float32)
    equal_point = np.full(len(spaces), 1 / len(spaces))
    grid = weight_grid(len(spaces), step)
    if not np.isclose(grid, equal_point).all(axis=1).any():
        grid = np.vstack([grid, equal_point])
    hits = np.stack([query_hits(_weighted(scaled, spaces, point), relevant, k) for point in grid])
    if progress is not None:
        progress.update()
    balance = np.abs(grid - equal_point).sum(axis=1)
    # Simplest first: equal weights (nothing fitted), one space alone, then any mix of the grid.
    rules = {"equal": np.flatnonzero(balance < 1e-9), "single": np.flatnonzero(grid.max(axis=1) == 1.0),
             "mix": np.arange(grid.shape[0])}
    rule_scores = _out_of_fold_rules(hits, balance, rules, rows.groups[queries], rows.keys[queries], k)
    # A rule must out-rank the simpler ones on queries it was not chosen on: on a few dozen labels a mix can fit
    # them and lose on the next (docs/evaluation.md, coupled small). Equal scores keep the simpler rule.
    kept = max(rules, key=lambda name: (rule_scores[name], -list(rules).index(name)))
    totals = hits.sum(axis=1)
    winner = _best_point(totals, balance, rules[kept])
    scores = totals / (queries.size * k)
    weights = {space: round(float(w), 6) for space, w in zip(spaces, grid[winner], strict=True)}
    equal_score = float(scores[rules["equal"][0]])
    projected = f", a learned projection in {', '.join(learned)}" if learned else ""
    rule = ", ".join(f"{RULES[name]} {rule_scores[name]:.3f}" for name in rules)
    return Tuning(weights=weights, metrics=chosen, k=k, labels=names, videos=used,
                  score=round(float(scores[winner]), 4), equal_score=round(equal_score, 4), created="",
                  extractors={}, tuned=True,
                  reason=f"tuned on {queries.size} labelled videos ({len(names)} labels), {grid.shape[0]} weight"
                         f" points{projected}; kept {RULES[kept]}, best out of fold (one group left out at a"
                         f" time: {rule})",
                  rule_scores={name: round(found, 4) for name, found in rule_scores.items()}, rule=kept,
                  projections=learned, projection_scores=learned_scores)


def _best_point(totals: np.ndarray, balance: np.ndarray, points: np.ndarray) -> int:
    """The grid point among ``points`` with the most hits (``totals``, one per grid point), equal ones to the most
    balanced."""
    return int(points[np.lexsort((balance[points], -totals[points]))[0]])


def _out_of_fold_rules(hits: np.ndarray, balance: np.ndarray, rules: Mapping[str, np.ndarray], groups: np.ndarray,
                       keys: np.ndarray, k: int) -> dict[str, float]:
    """Each rule's (a set of grid points to choose among) precision@k out of fold, leaving one group out: each
    group's queries scored with the point the rule chose on the other groups'.

    ``hits``: ``(points, q)`` relevant results among each query's first ``k`` at each grid point.
    """
    # One group a fold: each choice is made on all but one track, as the final choice is made on all of them
    # (five folds made it noisier on 32 videos: docs/evaluation.md).
    dealt = group_folds(groups, keys, groups.size)
    totals = hits.sum(axis=1)
    held_out = [hits[:, fold].sum(axis=1) for fold in dealt]  # each fold's hits at every grid point
    found = {}
    for name, points in rules.items():
        total = 0
        for fold_hits in held_out:
            total += int(fold_hits[_best_point(totals - fold_hits, balance, points)])
        found[name] = total / (hits.shape[1] * k)
    return found


def _out_of_fold_distances(vectors: np.ndarray, rows: LabelledRows, labelled: np.ndarray, queries: np.ndarray,
                           candidates: np.ndarray, excluded: np.ndarray) -> np.ndarray | None:
    """The queries' distances to the candidates in learned projections, each query's from one fitted without
    its fold, float64 ``(q, n)`` (NaN where ``excluded``); None where a fold's projection cannot be fitted.

    ``labelled``: the pool positions of every labelled row, dealt into :data:`FOLDS` folds by group;
    ``queries`` (among them) and ``candidates``: pool positions.
    """
    fold_of = np.full(rows.labels.size, -1)
    for number, members in enumerate(group_folds(rows.groups[labelled], rows.keys[labelled], FOLDS)):
        fold_of[labelled[members]] = number
    found = np.full((queries.size, candidates.size), np.nan)
    for number in np.unique(fold_of[queries]):
        asked = np.flatnonzero(fold_of[queries] == number)
        training = labelled[fold_of[labelled] != number]
        projection = fit_lda(vectors[training], rows.labels[training])
        if projection is None:
            return None
        searcher = ExactSearcher(np.arange(candidates.size), projection.apply(vectors[candidates]),
                                 PROJECTED_METRIC)
        found[asked] = searcher.distances(projection.apply(vectors[queries[asked]]), excluded[asked])
    return found


def group_folds(groups: np.ndarray, keys: np.ndarray, folds: int = FOLDS) -> list[np.ndarray]:
    """Deal videos into ``folds`` folds, whole groups at a time.

    Groups go largest first (equal sizes in the order of their name's SHA-256, so that the deal does not depend
    on indexing order) to the fold with the fewest videos so far (the first such). A video with no group is a
    group of its own, named by its key.

    Parameters
    ----------
    groups : np.ndarray
        object ``(n,)``: each video's group, or None.
    keys : np.ndarray
        object ``(n,)``: each video's content hash.
    folds : int
        How many folds (fewer when there are fewer groups).

    Returns
    -------
    list of np.ndarray
        Each fold's positions, ascending; together they hold every position once.
    """
    names = np.array([f"group:{g}" if g is not None else f"video:{key}" for g, key in zip(groups, keys,
                                                                                        strict=True)], dtype=object)
    unique, sizes = np.unique(names, return_counts=True)
    order = sorted(range(unique.size),
                   key=lambda i: (-sizes[i], hashlib.sha256(str(unique[i]).encode()).hexdigest()))
    count = min(folds, unique.size)
    members: list[list[int]] = [[] for _ in range(count)]
    fill = np.zeros(count, dtype=np.int64)
    for i in order:
        target = int(np.argmin(fill))
        members[target].append(i)
        fill[target] += sizes[i]
    return [np.flatnonzero(np.isin(names, unique[chosen])) for chosen in members]


def _weighted(scaled: dict[str, np.ndarray], spaces: tuple[str, ...], point: np.ndarray) -> np.ndarray:
    total = None
    for space, weight in zip(spaces, point, strict=True):
        if weight:
            total = weight * scaled[space] if total is None else total + weight * scaled[space]
    return total


def query_hits(found: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """int ``(q,)``: each ranking's relevant candidates among its first ``k`` by mvr's ranking rule.

    ``found`` is ``(q, n)`` (NaN: not ranked, columns in ascending id), ``relevant`` bool ``(q, n)``.
    """
    return (first_k(found, k).taken & relevant).sum(axis=1)


def precision_at_k(found: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Precision@k of many rankings at once (:func:`query_hits` over ``q x k``)."""
    return float(query_hits(found, relevant, k).sum() / (found.shape[0] * k))


def labelled_rows(pool: Pool, videos: Mapping[int, Video]) -> LabelledRows:
    """The labels, groups and content hashes of the pool's videos (``videos``: id -> video)."""
    found = [videos[int(i)] for i in pool.ids]
    return LabelledRows(labels=np.array([video.label or None for video in found], dtype=object),
                        groups=np.array([video.group or None for video in found], dtype=object),
                        keys=np.array([video.content_hash for video in found], dtype=object))


def catalog_spaces(catalog: Catalog) -> tuple[str, ...]:
    """The registered spaces the catalog has vectors of, in fusing order."""
    return tuple(space for space in space_names() if catalog.setting(f"extractor.{space}") is not None)


def tune_catalog(catalog: Catalog, k: int = 5, pool: Pool | None = None, *, metrics: tuple[str, ...] | None = None,
                 projections: bool = True, progress: bool | None = None) -> Tuning:
    """Tune the fusion of every space the catalog holds on its labelled videos (see :func:`tune_pool`).

    ``pool`` (the catalog's vectors of those spaces, from :meth:`mvr.retrieval.search.SearcherCache.pool`) is
    loaded when not given; ``metrics``: the metrics to choose each space's from (by default each keeps its own);
    ``projections``: whether to learn projections where they pay; ``progress`` shows the metrics tried and the
    grid (:class:`mvr.progress.Progress`).

    Raises
    ------
    CatalogError
        When no video has every space.
    UsageError
        For k below 1, or a catalog of fewer than two spaces.
    """
    from mvr.retrieval.search import SearcherCache  # the searchers' module loads the index builders

    spaces = catalog_spaces(catalog)
    if len(spaces) < 2:
        raise UsageError(f"{catalog.root}: fusion needs two feature spaces, this catalog has {', '.join(spaces)}")
    pool = pool or SearcherCache().pool(catalog, spaces)
    with Progress("tuning", 0, unit="step", show=progress) as bar:
        found = tune_pool(pool, labelled_rows(pool, {video.id: video for video in catalog.videos()}), k=k,
                          metrics=metrics, projections=projections, progress=bar)
    extractors = {space: catalog.setting(f"extractor.{space}") for space in spaces}
    return Tuning(**{**found.to_dict(), "created": datetime.now(UTC).isoformat(timespec="seconds"),
                     "extractors": extractors})


def store_tuning(catalog: Catalog, tuning: Tuning) -> None:
    """Keep a tuning in the catalog's settings, for fused queries to use by default."""
    catalog.set_setting(TUNING_KEY, json.dumps(tuning.to_dict(), sort_keys=True))


def stored_tuning(catalog: Catalog) -> Tuning | None:
    """The catalog's stored tuning, when there is one and its extractors are still the catalog's."""
    text = catalog.setting(TUNING_KEY)
    if text is None:
        return None
    found = Tuning.from_dict(json.loads(text))
    current = {space: catalog.setting(f"extractor.{space}") for space in found.weights}
    return found if found.tuned and current == found.extractors else None


def parse_weights(text: str | Mapping[str, float]) -> dict[str, float]:
    """Fusion weights from ``audio=0.7,visual=0.3`` (or a mapping), scaled to add up to 1.

    The spaces named are the spaces fused, in the registry's order.

    Raises
    ------
    UsageError
        For text that is not ``space=number`` pairs, an unknown space, a negative weight, or weights adding up to
        nothing.
    """
    if isinstance(text, str):
        found = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            try:
                found[name.strip()] = float(value) if sep else float("nan")
            except ValueError:
                found[name.strip()] = float("nan")
            if not np.isfinite(found[name.strip()]):
                raise UsageError(f"weights: '{item}' is not space=number (example: audio=0.7,visual=0.3)")
    else:
        found = {str(name): float(value) for name, value in text.items()}
    unknown = [name for name in found if name not in SPACES]
    if unknown:
        raise UsageError(f"weights: unknown feature space '{unknown[0]}'; choose among {', '.join(space_names())}")
    if any(value < 0 or not np.isfinite(value) for value in found.values()):
        raise UsageError("weights: every weight must be a non-negative number")
    total = sum(found.values())
    if total <= 0:
        raise UsageError("weights: at least one weight must be above 0 (example: audio=0.7,visual=0.3)")
    return {space: found[space] / total for space in space_names() if space in found}
