"""Why a result is close: each feature group's part of one space's distance (or similarity) to the query.

A metric that is a sum over the vector's columns splits exactly by group (the columns of each
:class:`mvr.features.FeatureGroup`):

* ``cityblock`` and ``braycurtis``: each group's sum of ``|q - r|`` (for braycurtis, the numerator; the
  denominator is shared), as a share of the whole: a *distance* share, small where the group agrees;
* ``euclidean``: each group's sum of ``(q - r)^2``, a share of the squared distance;
* ``canberra``: each group's sum of ``|q - r| / (|q| + |r|)``;
* ``cosine``: each group's part of the dot product, ``sum q_i r_i / (|q| |r|)``, as a share of the cosine
  similarity: a *similarity* share, large where the group agrees (it can be negative: a group pointing away);
* ``correlation``: the same on the vectors less their means.

``chebyshev`` (one column decides) and the metrics that do not rank real-valued vectors have no split.

In a space measured in a learned projection (:mod:`mvr.retrieval.projection`), each group's part is the squared
projection of its own columns' difference, ``|d_g|^2`` (the distance were the two alike in every other group),
as a share of the groups' sum: a distance share. The projection mixes the columns, so unlike the sums above this
split leaves out the cross terms between groups, which belong to none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mvr.features import FeatureGroup
from mvr.retrieval.projection import Projection

DISTANCE_SHARE = "share of the distance"
SIMILARITY_SHARE = "share of the similarity"


@dataclass(frozen=True)
class GroupShares:
    """Each feature group's part of one distance: ``shares`` (group name -> fraction, adding up to 1) and what
    they are a share of (:data:`DISTANCE_SHARE` or :data:`SIMILARITY_SHARE`)."""

    shares: dict[str, float]
    measure: str


def group_shares(query: np.ndarray, result: np.ndarray, metric: str,
                 groups: Sequence[FeatureGroup], *, projection: Projection | None = None) -> GroupShares | None:
    """Split one space's distance between ``query`` and ``result`` by feature group (see the module's rules).

    ``projection``: the space's learned projection, in which ``metric`` then measures. Returns None for a metric
    with no split, or a distance of nothing to split (identical vectors).
    """
    query, result = np.asarray(query, dtype=np.float64), np.asarray(result, dtype=np.float64)
    measure = DISTANCE_SHARE
    if projection is not None:
        return _shares(projection.group_parts(query, result, [group.columns for group in groups]), groups, measure)
    if metric in ("cityblock", "braycurtis"):
        terms = np.abs(query - result)
    elif metric == "euclidean":
        terms = (query - result) ** 2
    elif metric == "canberra":
        scale = np.abs(query) + np.abs(result)
        terms = np.divide(np.abs(query - result), scale, out=np.zeros_like(scale), where=scale > 0)
    elif metric in ("cosine", "correlation"):
        if metric == "correlation":
            query, result = query - query.mean(), result - result.mean()
        terms = query * result
        measure = SIMILARITY_SHARE
    else:
        return None
    return _shares(np.array([terms[group.columns].sum() for group in groups]), groups, measure)


def _shares(parts: np.ndarray, groups: Sequence[FeatureGroup], measure: str) -> GroupShares | None:
    total = parts.sum()
    if not np.isfinite(total) or total == 0:
        return None
    return GroupShares({group.name: float(part / total) for group, part in zip(groups, parts, strict=True)},
                       measure)
