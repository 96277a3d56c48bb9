"""The tuned fusion measured honestly: by cross-validation over groups, never on the labels it was tuned on.

The labelled videos are dealt into :data:`FOLDS` folds by group, so that the excerpts of one track always share a
fold (:func:`group_folds`, like scikit-learn's GroupKFold, and deterministic). For each fold, the weights and
metrics are tuned (:func:`mvr.retrieval.tuning.tune_pool`) on the other folds' videos alone, as queries and as
candidates; then that fold's queries are ranked against the whole catalog, less their own group, with that
tuning, and scored as every other method (:mod:`mvr.evaluation.scoring`). The folds' scores add up to one result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mvr.evaluation.scoring import QueryScores, QuerySet, Result, score_queries, summarise
from mvr.progress import Progress
from mvr.retrieval.fusion import Pool
from mvr.retrieval.targets import FUSED
from mvr.retrieval.tuning import LabelledRows, Tuning, tune_pool

FOLDS = 5
TUNED = "tuned"
"""The method name of the cross-validated tuned fusion in the results."""


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


@dataclass(frozen=True)
class Fold:
    """One fold: its queries' positions among the labelled queries, the pool rows tuned on (none of the fold's
    groups), and the tuning fitted on them."""

    queries: np.ndarray
    training: np.ndarray
    tuning: Tuning

    def to_dict(self) -> dict:
        """The JSON form: how many queries, and what was chosen for them."""
        return {"queries": int(self.queries.size), "weights": self.tuning.weights,
                "metrics": self.tuning.metrics, "tuned": self.tuning.tuned, "training_score": self.tuning.score}


@dataclass(frozen=True)
class CrossValidation:
    """The tuned fusion's cross-validated result, and each fold's tuning."""

    result: Result
    folds: list[Fold]

    def to_dict(self) -> dict:
        """The JSON form in ``mvr evaluate --json`` (``"tuned"``)."""
        return {"result": self.result.to_dict(), "folds": [fold.to_dict() for fold in self.folds]}


def cross_validate(pool: Pool, rows: LabelledRows, found: QuerySet, k: int, folds: int = FOLDS, *,
                   metrics: tuple[str, ...] | None = None, progress: Progress | None = None) -> CrossValidation:
    """Score the tuned late fusion of ``pool``'s spaces by cross-validation over groups.

    Parameters
    ----------
    pool : Pool
        The catalog's vectors of every fused space.
    rows : LabelledRows
        Of the pool's rows.
    found : QuerySet
        The leave-one-out queries over ``pool`` (:func:`mvr.evaluation.scoring.query_set`).
    k : int
        Recommendations per query.
    folds : int
        How many folds.
    metrics : tuple of str, optional
        The metrics each fold chooses each space's from; by default each space keeps its own, as ``mvr tune``.
    progress : Progress, optional
        Extended by the folds dealt, and told as each is scored.
    """
    dealt = group_folds(rows.groups[found.rows], rows.keys[found.rows], folds)
    if progress is not None:
        progress.extend(len(dealt))
    scored: list[QueryScores] = []
    chosen: list[Fold] = []
    for fold in dealt:
        training = np.setdiff1d(np.arange(pool.ids.size), found.rows[fold])
        tuning = tune_pool(pool, rows, k=k, within=training, metrics=metrics)
        scored.append(score_queries(found, "cosine", tuning.fusion(), k, rows=fold))
        chosen.append(Fold(queries=fold, training=training, tuning=tuning))
        if progress is not None:
            progress.update()
    order = np.concatenate(dealt)
    answerable = found.answerable[order]
    scores = QueryScores.concatenate(scored).subset(answerable)
    result = summarise(scores, found.labels[order][answerable], FUSED, TUNED, k, found.chance(k), method=TUNED)
    return CrossValidation(result=result, folds=chosen)
