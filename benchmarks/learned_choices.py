"""What learning from the labels buys, measured by cross-validation on labelled catalogs (not a timing).

Two choices of issue 11, each scored by leave-one-out precision@k with 5 folds by group
(:func:`mvr.retrieval.tuning.group_folds`: both excerpts of a track in one fold), fitted on the other folds only:

tuned fusion, metrics kept or chosen
    :func:`mvr.evaluation.crossval.cross_validate` with each space's own metric (mvr's default) and with each
    space's metric chosen per fold among :data:`mvr.retrieval.tuning.TUNING_METRICS` (``mvr tune
    --choose-metrics``).
a linear metric learned inside one space
    each space alone with its default metric, against standardised vectors ranked by cosine, and against
    scikit-learn's LinearDiscriminantAnalysis (standardised, shrinkage ``auto``) ranked by euclidean distance in
    its projection, fitted on the training folds' labelled videos. The held-out fold's videos are ranked against
    the whole catalog, less their own group.

Usage::

    python benchmarks/learned_choices.py CATALOG [CATALOG ...] [-k 5]

Needs scikit-learn (the ``map`` extra). The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mvr.evaluation.crossval import cross_validate
from mvr.evaluation.scoring import query_set
from mvr.features import SPACES
from mvr.retrieval.fusion import Pool
from mvr.retrieval.ranking import excluded_pairs, first_k
from mvr.retrieval.search import SearcherCache
from mvr.retrieval.tuning import TUNING_METRICS, LabelledRows, catalog_spaces, group_folds, labelled_rows
from mvr.store import Catalog


def hits_at_k(distances: np.ndarray, relevant: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """Same-label candidates among each query's first ``k`` (mvr's ranking rule), ``(q,)``."""
    return (first_k(np.where(excluded, np.nan, distances), k).taken & relevant).sum(axis=1)


def within_space(pool: Pool, rows: LabelledRows, space: str, k: int) -> dict[str, float]:
    """Cross-validated precision@k of one space: its default metric, standardised cosine, LDA."""
    vectors = pool.matrices[space]
    asked = np.flatnonzero(np.not_equal(rows.labels, None))
    excluded = excluded_pairs(rows.keys[asked], rows.groups[asked], rows.keys, rows.groups)
    relevant = (rows.labels[asked][:, None] == rows.labels[None, :]) & ~excluded
    scored = relevant.any(axis=1)
    default = SPACES[space].default_metric
    found = {default: hits_at_k(cdist(vectors[asked], vectors, default), relevant, excluded, k)}
    for name in ("standardised cosine", "LDA euclidean"):
        hits = np.zeros(asked.size)
        for fold in group_folds(rows.groups[asked], rows.keys[asked]):
            training = np.setdiff1d(np.arange(asked.size), fold)
            if name == "LDA euclidean":
                model = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"))
                model.fit(vectors[asked[training]], rows.labels[asked[training]].astype(str))
                metric = "euclidean"
            else:
                model = StandardScaler().fit(vectors[asked[training]])
                metric = "cosine"
            projected = model.transform(vectors)
            hits[fold] = hits_at_k(cdist(projected[asked[fold]], projected, metric), relevant[fold],
                                   excluded[fold], k)
        found[name] = hits
    return {name: round(float(hits[scored].sum() / (scored.sum() * k)), 4) for name, hits in found.items()}


def measure(folder: Path, k: int) -> dict:
    """Every figure of one catalog."""
    with Catalog.open(folder, create=False) as catalog:
        spaces = catalog_spaces(catalog)
        pool = SearcherCache().pool(catalog, spaces)
        videos = {video.id: video for video in catalog.videos()}
    rows = labelled_rows(pool, videos)
    found = query_set(pool, videos, "fused")
    tuned = {label: cross_validate(pool, rows, found, k, metrics=metrics)
             for label, metrics in (("metrics kept", None), ("metrics chosen", TUNING_METRICS))}
    return {
        "tuned": {label: {"precision": round(result.result.precision, 4),
                          "weights": [fold.tuning.weights for fold in result.folds]}
                  for label, result in tuned.items()},
        "spaces": {space: within_space(pool, rows, space, k) for space in spaces},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogs", nargs="+", type=Path, metavar="CATALOG")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    table = {str(folder): measure(folder, args.k) for folder in args.catalogs}
    print("| catalog | tuned, metrics kept | tuned, metrics chosen | space: default / standardised cosine / LDA |")
    print("|---|---|---|---|")
    for name, found in table.items():
        spaces = "; ".join(f"{space} " + " / ".join(f"{value:.3f}" for value in figures.values())
                           for space, figures in found["spaces"].items())
        print(f"| {name} | {found['tuned']['metrics kept']['precision']:.3f} |"
              f" {found['tuned']['metrics chosen']['precision']:.3f} | {spaces} |")
    print(json.dumps({"k": args.k, "catalogs": table}))


if __name__ == "__main__":
    main()
