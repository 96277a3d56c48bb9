"""Ranking, the study's eleven metrics against scipy's own cdist, late fusion, and the catalog's searchers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mvr.errors import CatalogError, DegenerateMetricError, UsageError
from mvr.index.base import METRICS
from mvr.retrieval.fusion import Fusion, Pool, distances
from mvr.retrieval.search import SearcherCache, rank
from mvr.store import Catalog, NewVideo


def single(ids: np.ndarray, matrix: np.ndarray) -> Pool:
    return Pool(ids=np.asarray(ids, dtype=np.int64), matrices={"audio": np.asarray(matrix, dtype=np.float64)})


def top(query: np.ndarray, pool: Pool, metric: str, k: int = 5, **options: object) -> list[tuple[int, float]]:
    spaces = pool.spaces
    if len(spaces) == 1:
        query = {spaces[0]: query}
    found = rank(query, pool, metric, k=k, **options)
    return list(zip(found.ids.tolist(), found.distances.tolist(), strict=True))


@pytest.fixture
def pool() -> Pool:
    generator = np.random.default_rng(7)
    matrix = np.abs(generator.normal(size=(40, 16)))  # non-negative, so that every metric is defined
    return single(np.arange(100, 140), matrix)


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "cosine", "correlation", "chebyshev", "canberra",
                                    "braycurtis", "jensenshannon"])
def test_rank_follows_scipy_cdist(pool: Pool, metric: str) -> None:
    matrix = pool.matrices["audio"]
    query = matrix[3] + 0.01
    expected = cdist(query[None], matrix, metric)[0]
    found = top(query, pool, metric, k=5)
    order = np.argsort(expected, kind="stable")[:5]
    assert [video_id for video_id, _ in found] == [int(pool.ids[i]) for i in order]
    np.testing.assert_allclose([d for _, d in found], expected[order], rtol=1e-12)
    assert found[0][0] == 103


def test_rank_excludes_the_query_itself(pool: Pool) -> None:
    found = top(pool.matrices["audio"][3], pool, "euclidean", k=5, exclude=frozenset([103]))
    assert 103 not in [video_id for video_id, _ in found]
    assert len(found) == 5


def test_ties_are_broken_by_id() -> None:
    pool = single([9, 4, 7, 1], [[1.0, 0], [0, 1.0], [1.0, 0], [5.0, 5.0]])
    assert [video_id for video_id, _ in top(np.array([1.0, 0]), pool, "euclidean", k=3)] == [7, 9, 4]


@pytest.mark.parametrize("metric", ["hamming", "jaccard", "sokalsneath"])
def test_boolean_metrics_on_real_vectors_are_degenerate(pool: Pool, metric: str) -> None:
    # Real-valued features: every component differs (hamming, jaccard) or is "true" (sokalsneath).
    with pytest.raises(DegenerateMetricError, match=metric):
        top(pool.matrices["audio"][0] + 0.5, pool, metric)


def test_jensenshannon_on_negative_values_is_degenerate() -> None:
    matrix = -np.abs(np.random.default_rng(1).normal(size=(10, 8)))
    with pytest.raises(DegenerateMetricError, match="jensenshannon"):
        top(matrix[0], single(np.arange(10), matrix), "jensenshannon")


def test_every_metric_of_the_study_is_known() -> None:
    assert len(METRICS) == 11
    for metric in METRICS:
        cdist(np.ones((1, 3)), np.ones((2, 3)), metric)  # scipy knows the name


def test_unknown_metric_is_a_clear_error(pool: Pool) -> None:
    with pytest.raises(UsageError, match="unknown metric 'manhattan'"):
        top(pool.matrices["audio"][0], pool, "manhattan")


def late_pool(audio: np.ndarray, visual: np.ndarray) -> Pool:
    return Pool(ids=np.arange(len(audio)), matrices={"audio": audio, "visual": visual})


LATE = Fusion("late", {"audio": 0.6, "visual": 0.4})


def test_late_fusion_adds_each_spaces_weighted_z_scores_and_keeps_them() -> None:
    generator = np.random.default_rng(2)
    audio, visual = generator.normal(size=(12, 3)), generator.normal(size=(12, 5))
    queries = {"audio": generator.normal(size=(2, 3)), "visual": generator.normal(size=(2, 5))}
    expected = 0.0
    for weight, space, part in ((0.6, "audio", audio), (0.4, "visual", visual)):
        found = cdist(queries[space], part, "cityblock")
        expected = expected + weight * (found - found.mean(axis=1, keepdims=True)) / found.std(axis=1, keepdims=True)
    fused = distances(queries, late_pool(audio, visual), "cityblock", LATE)
    np.testing.assert_allclose(fused.total, expected)
    np.testing.assert_allclose(fused.parts["visual"], cdist(queries["visual"], visual, "cityblock"))
    np.testing.assert_allclose(fused.scores["audio"] + fused.scores["visual"], fused.total)


def test_concat_fusion_is_one_distance_over_the_joined_vectors() -> None:
    generator = np.random.default_rng(3)
    audio, visual = generator.normal(size=(8, 2)), generator.normal(size=(8, 4))
    query = {"audio": audio[1], "visual": visual[1]}
    found = distances(query, late_pool(audio, visual), "euclidean", Fusion("concat"))
    np.testing.assert_allclose(found.total, cdist(np.hstack([audio[1], visual[1]])[None], np.hstack([audio, visual])))
    assert found.parts == {}


def test_late_fusion_ignores_the_units_of_each_space() -> None:
    # Visual numbers a thousand times larger would drown the audio in a concatenation, not in late fusion.
    generator = np.random.default_rng(4)
    audio, visual = generator.normal(size=(30, 4)), generator.normal(size=(30, 40))
    query = {"audio": audio[0] + 0.3, "visual": visual[0] + 0.3}
    ranked = top(query, late_pool(audio, visual), "euclidean", k=10, fusion=LATE)
    scaled = top({"audio": query["audio"], "visual": 1000 * query["visual"]}, late_pool(audio, 1000 * visual),
                 "euclidean", k=10, fusion=LATE)
    assert [video_id for video_id, _ in ranked] == [video_id for video_id, _ in scaled]


def test_late_fusion_scales_over_the_ranked_candidates_only() -> None:
    generator = np.random.default_rng(5)
    pool = late_pool(generator.normal(size=(10, 3)), generator.normal(size=(10, 6)))
    excluded = np.zeros(10, dtype=bool)
    excluded[[0, 4]] = True
    query = {space: matrix[0] for space, matrix in pool.matrices.items()}
    masked = distances(query, pool, "cosine", LATE, excluded[None, :]).total[0]
    assert np.isnan(masked[excluded]).all()
    np.testing.assert_allclose(masked[~excluded], distances(query, pool.subset(~excluded), "cosine", LATE).total[0])


def test_late_fusion_ranks_by_the_other_space_when_one_ties() -> None:
    audio = np.ones((6, 2))  # every candidate sounds the same
    visual = np.arange(6, dtype=float)[:, None] * np.ones((6, 3))
    found = top({"audio": audio[0], "visual": visual[4]}, late_pool(audio, visual), "euclidean", k=3, fusion=LATE)
    assert [video_id for video_id, _ in found] == [4, 3, 5]
    with pytest.raises(DegenerateMetricError, match="same distance"):
        top({"audio": np.ones(2), "visual": np.ones(3)}, late_pool(audio, np.ones((6, 3))), "euclidean", fusion=LATE)


def test_unknown_fusion_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="unknown fusion 'early'"):
        Fusion("early")


def test_pools_and_searchers_are_built_once_until_the_catalog_changes(tmp_path: Path) -> None:
    def add(catalog: Catalog, name: str) -> None:
        media_file = tmp_path / f"{name}.mp4"
        media_file.write_bytes(name.encode())
        catalog.add(NewVideo(content_hash=f"{name:0<64}", source=name, media_file=media_file, title=name,
                             duration=1.0, vectors={"audio": ("a-v1", np.ones(3)), "visual": ("v-v1", np.ones(4))}))

    cache = SearcherCache()
    with Catalog.open(tmp_path / "cat") as catalog:
        with pytest.raises(CatalogError, match="no video in this catalog has audio"):
            cache.pool(catalog, ("audio",))
        add(catalog, "a")
        first = cache.pool(catalog, ("audio", "visual"))
        assert first.matrices["audio"].dtype == np.float64 and first.spaces == ("audio", "visual")
        searcher = cache.searcher(catalog, "audio", "cosine")
        # Another connection (another thread of a server) finds what this one built.
        with Catalog.open(tmp_path / "cat") as other:
            assert cache.pool(other, ("audio", "visual")) is first
            assert cache.searcher(other, "audio", "cosine") is searcher
        add(catalog, "b")
        assert cache.pool(catalog, ("audio", "visual")).ids.tolist() == [1, 2]
        assert cache.searcher(catalog, "audio", "cosine") is not searcher
