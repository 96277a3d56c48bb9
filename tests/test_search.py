"""Ranking, the study's eleven metrics against scipy's own cdist, and late fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mvr.catalog import Catalog, NewVideo
from mvr.errors import DegenerateMetricError
from mvr.search import METRICS, Block, Candidates, candidates, distance_matrix, rank


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


def late_pool(audio: np.ndarray, visual: np.ndarray, weights: tuple[float, float] = (0.6, 0.4)) -> Candidates:
    width = audio.shape[1]
    blocks = (Block("audio", slice(0, width), weights[0]), Block("visual", slice(width, width + visual.shape[1]),
                                                                 weights[1]))
    return Candidates(ids=np.arange(len(audio)), matrix=np.hstack([audio, visual]), blocks=blocks)


def test_late_fusion_adds_each_modalitys_weighted_z_scores() -> None:
    generator = np.random.default_rng(2)
    audio, visual = generator.normal(size=(12, 3)), generator.normal(size=(12, 5))
    queries = np.hstack([generator.normal(size=(2, 3)), generator.normal(size=(2, 5))])
    expected = 0.0
    for weight, part, columns in ((0.6, audio, slice(0, 3)), (0.4, visual, slice(3, 8))):
        found = cdist(queries[:, columns], part, "cityblock")
        expected = expected + weight * (found - found.mean(axis=1, keepdims=True)) / found.std(axis=1, keepdims=True)
    np.testing.assert_allclose(distance_matrix(queries, late_pool(audio, visual), "cityblock"), expected)


def test_late_fusion_ignores_the_units_of_each_modality() -> None:
    # Visual numbers a thousand times larger would drown the audio in a concatenation, not in late fusion.
    generator = np.random.default_rng(4)
    audio, visual = generator.normal(size=(30, 4)), generator.normal(size=(30, 40))
    query_audio, query_visual = audio[0] + 0.3, visual[0] + 0.3
    ranked = rank(np.concatenate([query_audio, query_visual]), late_pool(audio, visual), "euclidean", k=10)
    scaled = rank(np.concatenate([query_audio, 1000 * query_visual]), late_pool(audio, 1000 * visual), "euclidean",
                  k=10)
    assert [video_id for video_id, _ in ranked] == [video_id for video_id, _ in scaled]


def test_late_fusion_scales_over_the_ranked_candidates_only() -> None:
    generator = np.random.default_rng(5)
    pool = late_pool(generator.normal(size=(10, 3)), generator.normal(size=(10, 6)))
    excluded = np.zeros(10, dtype=bool)
    excluded[[0, 4]] = True
    masked = distance_matrix(pool.matrix[0], pool, "cosine", excluded[None, :])[0]
    assert np.isnan(masked[excluded]).all()
    np.testing.assert_allclose(masked[~excluded], distance_matrix(pool.matrix[0], pool.subset(~excluded), "cosine")[0])


def test_late_fusion_ranks_by_the_other_modality_when_one_ties() -> None:
    audio = np.ones((6, 2))  # every candidate sounds the same
    visual = np.arange(6, dtype=float)[:, None] * np.ones((6, 3))
    pool = late_pool(audio, visual)
    assert [video_id for video_id, _ in rank(np.concatenate([audio[0], visual[4]]), pool, "euclidean", k=3)] == \
        [4, 3, 5]
    with pytest.raises(DegenerateMetricError, match="same distance"):
        rank(np.ones(5), late_pool(audio, np.ones((6, 3))), "euclidean")


def test_candidates_are_prepared_once_until_the_catalog_changes(tmp_path: Path) -> None:
    def add(catalog: Catalog, name: str) -> None:
        media_file = tmp_path / f"{name}.mp4"
        media_file.write_bytes(name.encode())
        catalog.add(NewVideo(content_hash=f"{name:0<64}", source=name, media_file=media_file, title=name,
                             duration=1.0, vectors={"audio": ("a-v1", np.ones(3)), "visual": ("v-v1", np.ones(4))}))

    with Catalog.open(tmp_path / "cat") as catalog:
        add(catalog, "a")
        first = candidates(catalog, "fused")
        assert candidates(catalog, "fused") is first
        assert first.matrix.dtype == np.float64 and [b.modality for b in first.blocks] == ["audio", "visual"]
        assert candidates(catalog, "fused", "concat").blocks == ()
        add(catalog, "b")
        assert candidates(catalog, "fused").ids.tolist() == [1, 2]
    with pytest.raises(ValueError, match="unknown fusion 'early'"):
        candidates(catalog, "fused", "early")
