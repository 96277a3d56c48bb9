"""The tuned fusion measured honestly: by cross-validation over groups, never on the labels it was tuned on.

The labelled videos are dealt into :data:`~mvr.retrieval.tuning.FOLDS` folds by group, so that the excerpts of
one track always share a fold (:func:`mvr.retrieval.tuning.group_folds`, like scikit-learn's GroupKFold, and
deterministic). For each fold, the weights, metrics and learned projections are tuned
(:func:`mvr.retrieval.tuning.tune_pool`) on the other folds' videos alone, as queries and as candidates; then that
fold's queries are ranked against the whole catalog, less their own group, with that tuning, and scored as every
other method (:mod:`mvr.evaluation.scoring`). The folds' scores add up to one result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvr.evaluation.scoring import QueryScores, QuerySet, Result, score_queries, summarise
from mvr.progress import Progress
from mvr.retrieval.fusion import Pool
from mvr.retrieval.targets import FUSED
from mvr.retrieval.tuning import FOLDS, LabelledRows, Tuning, group_folds, tune_pool

TUNED = "tuned"
"""The method name of the cross-validated tuned fusion in the results."""
LEARNED = "learned"
"""The method name of one space with its learned projection (where the folds keep one), cross-validated."""


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
                "metrics": self.tuning.metrics, "projections": sorted(self.tuning.projections),
                "tuned": self.tuning.tuned, "training_score": self.tuning.score,
                "rule": self.tuning.rule, "rule_scores": self.tuning.rule_scores}


@dataclass(frozen=True)
class CrossValidation:
    """The tuned fusion's cross-validated result, and each fold's tuning."""

    result: Result
    folds: list[Fold]

    def to_dict(self) -> dict:
        """The JSON form in ``mvr evaluate --json`` (``"tuned"``)."""
        return {"result": self.result.to_dict(), "folds": [fold.to_dict() for fold in self.folds]}


def cross_validate(pool: Pool, rows: LabelledRows, found: QuerySet, k: int, folds: int = FOLDS, *,
                   metrics: tuple[str, ...] | None = None, modality: str = FUSED, method: str = TUNED,
                   progress: Progress | None = None) -> CrossValidation:
    """Score the tuned late fusion of ``pool``'s spaces by cross-validation over groups.

    A pool of one space is that space tuned alone: its metric and, where the space takes one, its learned
    projection (:func:`mvr.retrieval.tuning.tune_pool`).

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
    modality, method : str
        The result's search target and method name: :data:`FUSED` and :data:`TUNED`, or a space and
        :data:`LEARNED`.
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
    result = summarise(scores, found.labels[order][answerable], modality, method, k, found.chance(k), method=method)
    return CrossValidation(result=result, folds=chosen)
