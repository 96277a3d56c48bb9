"""Compact search vectors: the shortlist-and-rerank answers against the exact full scan of mvr.search."""

from __future__ import annotations

import numpy as np
import pytest

from mvr.search import Block, Candidates, rank
from mvr.vectorindex import MIN_ROWS, VectorIndex

ROWS = MIN_ROWS
AUDIO_DIMS, VISUAL_DIMS = 24, 640


def clustered(rows: int, dims: int, generator: np.random.Generator, non_negative: bool = False) -> np.ndarray:
    """Rows around 40 centres of random spreads, with a decaying spectrum: nearest neighbours are meaningful."""
    scales = 1.0 / np.sqrt(1.0 + np.arange(dims))
    centres = generator.normal(size=(40, dims)) * scales * 4
    found = centres[generator.integers(40, size=rows)] + generator.normal(size=(rows, dims)) * scales
    return np.abs(found) if non_negative else found


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    generator = np.random.default_rng(11)
    return {"audio": clustered(ROWS + 30, AUDIO_DIMS, generator),
            "visual": clustered(ROWS + 30, VISUAL_DIMS, generator, non_negative=True)}


def single(vectors: dict[str, np.ndarray]) -> Candidates:
    return Candidates(ids=np.arange(10, 10 + ROWS, dtype=np.int64), matrix=vectors["visual"][:ROWS])


def late(vectors: dict[str, np.ndarray]) -> Candidates:
    matrix = np.hstack([vectors["audio"][:ROWS], vectors["visual"][:ROWS]])
    blocks = (Block("audio", slice(0, AUDIO_DIMS), 0.5), Block("visual", slice(AUDIO_DIMS, matrix.shape[1]), 0.5))
    return Candidates(ids=np.arange(ROWS, dtype=np.int64), matrix=matrix, blocks=blocks)


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "cosine", "correlation"])
def test_compact_ranking_equals_the_exact_one(vectors: dict[str, np.ndarray], metric: str) -> None:
    pool = single(vectors)
    assert pool.index.supports(metric)
    for query in vectors["visual"][ROWS:]:  # not in the catalog
        expected = rank(query, pool, metric, k=5, exact=True)
        got = rank(query, pool, metric, k=5)
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert [d for _, d in got] == [d for _, d in expected]  # scipy's distances, bit for bit


def test_the_query_is_left_out_of_its_own_ranking(vectors: dict[str, np.ndarray]) -> None:
    pool = single(vectors)
    itself = int(pool.ids[7])
    got = rank(pool.matrix[7], pool, "euclidean", k=5, exclude=frozenset([itself]))
    assert itself not in [i for i, _ in got]
    assert got == rank(pool.matrix[7], pool, "euclidean", k=5, exclude=frozenset([itself]), exact=True)


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "cosine"])
def test_late_fusion_finds_the_exact_neighbours_with_close_scores(vectors: dict[str, np.ndarray],
                                                                   metric: str) -> None:
    pool = late(vectors)
    queries = np.hstack([vectors["audio"][ROWS:], vectors["visual"][ROWS:]])
    found, total = 0, 0
    for query in queries:
        expected = dict(rank(query, pool, metric, k=5, exact=True))
        got = pool.index.search(query, metric, 5)
        assert got is not None
        ids = pool.ids[got[0]]
        found += len(set(ids.tolist()) & expected.keys())
        total += len(expected)
        # The scores use estimated statistics: close for the euclidean geometry of the compact vectors, rougher
        # for cityblock, whose statistics come from a sample of rows.
        tolerance = 0.5 if metric == "cityblock" else 0.05
        for video_id, score in zip(ids.tolist(), got[1]):
            if video_id in expected:
                assert score == pytest.approx(expected[video_id], abs=tolerance)
    assert found / total >= 0.95


def test_metrics_without_compact_vectors_and_small_or_narrow_pools_are_scanned(vectors) -> None:
    pool = single(vectors)
    assert not pool.index.supports("canberra")
    assert pool.index.search(pool.matrix[0], "canberra", 5) is None
    small = Candidates(ids=np.arange(ROWS // 2), matrix=pool.matrix[: ROWS // 2])
    assert not small.index.supports("euclidean")
    narrow = Candidates(ids=np.arange(ROWS), matrix=vectors["audio"][:ROWS])
    assert not narrow.index.supports("euclidean")


def test_undecidable_shortlists_fall_back_to_the_full_scan() -> None:
    matrix = np.ones((ROWS, VISUAL_DIMS))
    matrix[0] = 0.0  # a row without a direction: its cosine distance is undefined
    index = VectorIndex(matrix)
    assert index.search(matrix[1] * 2, "euclidean", 5) is None  # every distance ties
    assert index.search(np.zeros(VISUAL_DIMS), "cosine", 5) is None  # the query has no direction
    few = np.zeros((ROWS, VISUAL_DIMS))
    few[-3:] = np.random.default_rng(3).normal(size=(3, VISUAL_DIMS))  # only 3 rows have a cosine distance
    pool = Candidates(ids=np.arange(ROWS), matrix=few)
    assert pool.index.search(np.ones(VISUAL_DIMS), "cosine", 5) is None
    assert rank(np.ones(VISUAL_DIMS), pool, "cosine") == rank(np.ones(VISUAL_DIMS), pool, "cosine", exact=True)


def test_the_compact_vectors_are_built_once_per_metric_family(vectors) -> None:
    index = single(vectors).index
    index.prepare("cosine")
    built = dict(index._compact)
    index.search(vectors["visual"][ROWS], "cosine", 5)
    index.prepare("cosine")
    assert index._compact == built  # the same objects, not rebuilt
    index.prepare("euclidean")  # euclidean and cityblock share the raw space
    index.prepare("cityblock")
    assert len(index._compact) == 2
