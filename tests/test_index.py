"""The searchers: the compact shortlist-and-rerank answers against the exact scan, and fused search at scale."""

from __future__ import annotations

import numpy as np
import pytest

from mvr.index.base import top_k
from mvr.index.build import build_searcher
from mvr.index.compact import MIN_ROWS, CompactSearcher
from mvr.index.exact import ExactSearcher
from mvr.retrieval import search
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.search import rank

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


IDS = np.arange(10, 10 + ROWS, dtype=np.int64)


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "cosine", "correlation"])
def test_compact_ranking_equals_the_exact_one(vectors: dict[str, np.ndarray], metric: str) -> None:
    matrix = vectors["visual"][:ROWS]
    searcher = build_searcher(IDS, matrix, metric)
    assert isinstance(searcher, CompactSearcher)
    queries = vectors["visual"][ROWS:]  # not in the catalog
    got = searcher.search(queries, 5)
    expected = ExactSearcher(IDS, matrix, metric).search(queries, 5)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])  # scipy's distances, bit for bit


def test_the_query_is_left_out_of_its_own_ranking(vectors: dict[str, np.ndarray]) -> None:
    matrix = vectors["visual"][:ROWS]
    itself = int(IDS[7])
    got = CompactSearcher(IDS, matrix, "euclidean").search(matrix[7], 5, exclude=[{itself}])
    assert itself not in got[1][0]
    expected = ExactSearcher(IDS, matrix, "euclidean").search(matrix[7], 5, exclude=[{itself}])
    np.testing.assert_array_equal(got[1], expected[1])


def test_rows_are_padded_when_fewer_than_k_have_a_distance() -> None:
    found, ids = top_k(np.array([[0.5, np.nan, 0.1]]), np.array([3, 4, 5]), 4)
    assert ids.tolist() == [[5, 3, -1, -1]] and np.isinf(found[0, 2:]).all()


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "cosine"])
def test_fused_search_at_scale_finds_the_exhaustive_neighbours(vectors: dict[str, np.ndarray], metric: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The shortlists take over from the scale sample's size on: here the sample is every row.
    monkeypatch.setattr(search, "_SCALE_SAMPLE_ROWS", ROWS)
    pool = Pool(ids=np.arange(ROWS, dtype=np.int64),
                matrices={space: matrix[:ROWS] for space, matrix in vectors.items()})
    searchers = {space: build_searcher(pool.ids, matrix, metric) for space, matrix in pool.matrices.items()}
    fusion = Fusion("late", {"audio": 0.5, "visual": 0.5})
    found, total = 0, 0
    for row in range(ROWS, ROWS + 10):
        query = {space: matrix[row] for space, matrix in vectors.items()}
        expected = rank(query, pool, metric, fusion=fusion, k=5)
        got = rank(query, pool, metric, fusion=fusion, k=5, searchers=searchers)
        found += len(set(got.ids.tolist()) & set(expected.ids.tolist()))
        total += 5
        # The shortlist's scores use each space's scale estimated on a sample of the catalog (here all of it).
        same = np.isin(got.ids, expected.ids)
        reference = dict(zip(expected.ids.tolist(), expected.distances.tolist()))
        for video_id, score in zip(got.ids[same].tolist(), got.distances[same].tolist()):
            assert score == pytest.approx(reference[video_id], rel=1e-9)
        assert set(got.parts) == {"audio", "visual"}
    assert found / total >= 0.95


def test_metrics_without_compact_vectors_and_small_or_narrow_sets_are_scanned(vectors) -> None:
    matrix = vectors["visual"][:ROWS]
    assert isinstance(build_searcher(IDS, matrix, "canberra"), ExactSearcher)
    assert isinstance(build_searcher(IDS[: ROWS // 2], matrix[: ROWS // 2], "euclidean"), ExactSearcher)
    assert isinstance(build_searcher(IDS, vectors["audio"][:ROWS], "euclidean"), ExactSearcher)
    assert isinstance(build_searcher(IDS, matrix, "cosine", exact=True), ExactSearcher)


def test_undecidable_shortlists_fall_back_to_the_full_scan() -> None:
    matrix = np.ones((ROWS, VISUAL_DIMS))
    matrix[0] = 0.0  # a row without a direction: its cosine distance is undefined
    searcher = CompactSearcher(IDS, matrix, "euclidean")
    exact = ExactSearcher(IDS, matrix, "euclidean")
    for query in (matrix[1] * 2, np.zeros(VISUAL_DIMS)):  # every distance ties; a query with no direction
        np.testing.assert_array_equal(searcher.search(query, 5)[1], exact.search(query, 5)[1])
    few = np.zeros((ROWS, VISUAL_DIMS))
    few[-3:] = np.random.default_rng(3).normal(size=(3, VISUAL_DIMS))  # only 3 rows have a cosine distance
    got = CompactSearcher(IDS, few, "cosine").search(np.ones(VISUAL_DIMS), 5)
    expected = ExactSearcher(IDS, few, "cosine").search(np.ones(VISUAL_DIMS), 5)
    np.testing.assert_array_equal(got[1], expected[1])
    assert (got[1][0] >= 0).sum() == 3


def test_the_compact_vectors_are_built_once(vectors) -> None:
    searcher = CompactSearcher(IDS, vectors["visual"][:ROWS], "cosine")
    searcher.search(vectors["visual"][ROWS], 5)
    built = searcher._compact
    searcher.search(vectors["visual"][ROWS + 1], 5)
    assert searcher._compact is built
