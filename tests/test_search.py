"""Ranking and the study's eleven metrics, against scipy's own cdist."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mvr.errors import DegenerateMetricError
from mvr.search import METRICS, Candidates, rank


@pytest.fixture
def pool() -> Candidates:
    generator = np.random.default_rng(7)
    matrix = np.abs(generator.normal(size=(40, 16)))  # non-negative, so that every metric is defined
    return Candidates(ids=np.arange(100, 140, dtype=np.int64), matrix=matrix)


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "cosine", "correlation", "chebyshev", "canberra",
                                    "braycurtis", "jensenshannon"])
def test_rank_follows_scipy_cdist(pool: Candidates, metric: str) -> None:
    query = pool.matrix[3] + 0.01
    expected = cdist(query[None], pool.matrix, metric)[0]
    top = rank(query, pool, metric, k=5)
    order = np.argsort(expected, kind="stable")[:5]
    assert [video_id for video_id, _ in top] == [int(pool.ids[i]) for i in order]
    np.testing.assert_allclose([d for _, d in top], expected[order], rtol=1e-12)
    assert top[0][0] == 103


def test_rank_excludes_the_query_itself(pool: Candidates) -> None:
    top = rank(pool.matrix[3], pool, "euclidean", k=5, exclude=frozenset([103]))
    assert 103 not in [video_id for video_id, _ in top]
    assert len(top) == 5


def test_ties_are_broken_by_id() -> None:
    pool = Candidates(ids=np.array([9, 4, 7, 1]), matrix=np.array([[1.0, 0], [0, 1.0], [1.0, 0], [5.0, 5.0]]))
    top = rank(np.array([1.0, 0]), pool, "euclidean", k=3)
    assert [video_id for video_id, _ in top] == [7, 9, 4]


@pytest.mark.parametrize("metric", ["hamming", "jaccard", "sokalsneath"])
def test_boolean_metrics_on_real_vectors_are_degenerate(pool: Candidates, metric: str) -> None:
    # Real-valued features: every component differs (hamming, jaccard) or is "true" (sokalsneath).
    with pytest.raises(DegenerateMetricError, match=metric):
        rank(pool.matrix[0] + 0.5, pool, metric)


def test_jensenshannon_on_negative_values_is_degenerate() -> None:
    matrix = -np.abs(np.random.default_rng(1).normal(size=(10, 8)))
    pool = Candidates(ids=np.arange(10), matrix=matrix)
    with pytest.raises(DegenerateMetricError, match="jensenshannon"):
        rank(matrix[0], pool, "jensenshannon")


def test_every_metric_of_the_study_is_known() -> None:
    assert len(METRICS) == 11
    for metric in METRICS:
        cdist(np.ones((1, 3)), np.ones((2, 3)), metric)  # scipy knows the name


def test_unknown_metric_is_a_clear_error(pool: Candidates) -> None:
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        rank(pool.matrix[0], pool, "manhattan")
