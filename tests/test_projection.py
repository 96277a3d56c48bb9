"""The learned projection (LDA) of a space: against scikit-learn, kept with the tuning, applied by the fusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from mvr.features import FeatureGroup
from mvr.retrieval.collection_map import neighbour_graph
from mvr.retrieval.explain import DISTANCE_SHARE, group_shares
from mvr.retrieval.fusion import Fusion, Pool, distances
from mvr.retrieval.projection import Projection, fit_lda
from mvr.retrieval.query import SearchPlan, catalog_fusion, fusion_dict
from mvr.retrieval.search import rank
from mvr.retrieval.tuning import LabelledRows, store_tuning, stored_tuning, tune_catalog, tune_pool
from mvr.store import Catalog, NewVideo


def labelled_vectors(seed: int = 3, per_label: int = 12, dims: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """4 labels whose means differ along a few low-variance columns, drowned by wide noise in the others."""
    generator = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_label)
    vectors = generator.normal(size=(labels.size, dims)) * np.linspace(5.0, 0.2, dims)
    vectors[:, -4:] += 0.8 * np.eye(4)[labels]
    return vectors, labels.astype(str)


def test_lda_matches_scikit_learns_shrunk_eigen_solver() -> None:
    sklearn = pytest.importorskip("sklearn")
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    vectors, labels = labelled_vectors()
    # A column of one repeated value (its computed spread is the rounding of its mean, about 1e-17) and one that is
    # constant within each label, as a ReLU layer's outputs can be: both must count as constant, as in scikit-learn.
    vectors[:, 0] = 0.1
    vectors[:, 1] = np.repeat([0.3, 0.7, 0.1, 0.9], 12)
    assert np.std(vectors[:, 0]) > 0 or np.std(vectors[:12, 1]) > 0
    reference = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"))
    expected = reference.fit(vectors, labels).transform(vectors)
    found = fit_lda(vectors, labels)
    assert found is not None and found.components.shape == (40, 3), sklearn.__version__
    projected = found.apply(vectors)
    # Each direction is defined up to its sign: the distances between the projected videos are not.
    assert np.allclose(pdist(projected), pdist(expected), rtol=1e-9, atol=1e-12)
    assert np.allclose(np.abs(projected - projected.mean(axis=0)), np.abs(expected - expected.mean(axis=0)),
                       rtol=1e-9, atol=1e-12)


def test_lda_cannot_be_fitted_on_one_label_or_on_too_few_videos() -> None:
    vectors, labels = labelled_vectors()
    assert fit_lda(vectors, np.full(labels.size, "a")) is None
    assert fit_lda(vectors[:4], labels[:4]) is None  # as many videos as labels: no spread within a label


def test_a_projection_survives_its_json_exactly_and_splits_its_distance_by_group() -> None:
    vectors, labels = labelled_vectors()
    found = fit_lda(vectors, labels)
    again = Projection.from_dict(json.loads(json.dumps(found.to_dict())))
    assert np.array_equal(again.apply(vectors), found.apply(vectors))
    groups = (FeatureGroup("wide", np.arange(36)), FeatureGroup("telling", np.arange(36, 40)))
    # Two videos that differ in one group only: that group's part is the whole squared projected distance.
    other = vectors[0].copy()
    other[36:] = vectors[20][36:]
    parts = found.group_parts(vectors[0], other, [group.columns for group in groups])
    squared = float(((found.apply(vectors[0]) - found.apply(other)) ** 2).sum())
    assert parts[0] == 0.0 and parts[1] == pytest.approx(squared, rel=1e-12)
    shares = group_shares(vectors[0], vectors[20], "euclidean", groups, projection=found)
    assert shares.measure == DISTANCE_SHARE and sum(shares.shares.values()) == pytest.approx(1.0)
    assert all(0.0 <= share <= 1.0 for share in shares.shares.values())


def projected_fusion(audio_weight: float) -> tuple[np.ndarray, Projection, Pool, Fusion]:
    """:func:`labelled_vectors` as audio (in its LDA projection, braycurtis on the stored vectors) and reversed as
    visual (cosine), with their pool and a late fusion of ``audio_weight``."""
    vectors, labels = labelled_vectors()
    projection = fit_lda(vectors, labels)
    pool = Pool(ids=np.arange(labels.size), matrices={"audio": vectors, "visual": vectors[:, ::-1].copy()})
    fusion = Fusion(weights={"audio": audio_weight, "visual": 1.0 - audio_weight},
                    metrics={"audio": "braycurtis", "visual": "cosine"}, projections={"audio": projection})
    return vectors, projection, pool, fusion


def test_the_fusion_measures_a_projected_space_in_its_projection() -> None:
    vectors, projection, pool, fusion = projected_fusion(1.0)
    assert fusion.metric_of("audio", "cosine") == "euclidean"
    assert fusion.searcher_metric("audio", "cosine") == "braycurtis" and fusion.metric_of("visual", "x") == "cosine"
    found = distances({space: matrix[:3] for space, matrix in pool.matrices.items()}, pool, "cosine", fusion)
    assert np.allclose(found.parts["audio"], cdist(projection.apply(vectors[:3]), projection.apply(vectors)))
    ranked = rank({space: matrix[5] for space, matrix in pool.matrices.items()}, pool, "cosine", fusion=fusion, k=5,
                  exclude={5})
    expected = np.argsort(cdist(projection.apply(vectors[5:6]), projection.apply(vectors))[0])
    assert ranked.ids.tolist() == [i for i in expected if i != 5][:5]
    assert fusion_dict(fusion, "cosine", "tuned")["projections"] == {"audio": "lda"}
    with pytest.raises(Exception, match="takes no projection"):
        Fusion(method="concat", projections={"audio": projection})


def test_a_projection_is_kept_only_where_it_ranks_better_out_of_fold() -> None:
    vectors, labels = labelled_vectors(per_label=12)
    groups = np.array([f"song{i // 2}" for i in range(labels.size)], dtype=object)
    keys = np.array([f"{i:064d}" for i in range(labels.size)], dtype=object)
    telling = LabelledRows(labels=labels.astype(object), groups=groups, keys=keys)
    pool = Pool(ids=np.arange(labels.size), matrices={"audio": vectors, "visual": np.random.default_rng(5).normal(
        size=vectors.shape)})
    found = tune_pool(pool, telling, k=5)
    # The label lies in the narrow columns that braycurtis hardly sees: the projection finds them.
    assert set(found.projections) == {"audio"} and "visual" not in found.projection_scores
    assert found.projection_scores["audio"]["lda"] > found.projection_scores["audio"]["stored"] + 0.2
    assert found.weights["audio"] >= 0.8 and "a learned projection in audio" in found.reason
    # Labels unrelated to the vectors: in-sample LDA would separate them anyway; out of fold it cannot.
    shuffled = LabelledRows(labels=np.random.default_rng(9).permutation(labels).astype(object), groups=groups,
                            keys=keys)
    in_sample = fit_lda(vectors, shuffled.labels).apply(vectors)
    distance = cdist(in_sample, in_sample)
    distance[groups[:, None] == groups[None, :]] = np.inf
    nearest = np.argsort(distance, axis=1)[:, :5]
    assert (shuffled.labels[nearest] == shuffled.labels[:, None]).mean() > 0.5
    noise = tune_pool(pool, shuffled, k=5)
    assert noise.projection_scores["audio"]["lda"] < 0.4
    assert not tune_pool(pool, telling, k=5, projections=False).projections


def test_a_catalog_keeps_its_projection_and_fused_queries_use_it(tmp_path: Path) -> None:
    vectors, labels = labelled_vectors()
    noise = np.random.default_rng(5).normal(size=vectors.shape)
    with Catalog.open(tmp_path / "cat") as catalog:
        for index in range(labels.size):
            media_file = tmp_path / f"v{index}.mp4"
            media_file.write_bytes(b"x" * (index + 1))
            catalog.add(NewVideo(
                content_hash=f"{index:064d}", source=str(media_file), media_file=media_file, title=f"v{index}",
                duration=30.0, label=labels[index], group=f"song{index // 2}",
                vectors={"audio": ("audio-v1", vectors[index]), "visual": ("visual-v1", noise[index])},
            ))
        found = tune_catalog(catalog, k=5)
        assert "audio" in found.projections
        store_tuning(catalog, found)
        assert stored_tuning(catalog) == found
        fusion, origin = catalog_fusion(catalog, "fused")
        assert origin == "tuned" and set(fusion.projections) == {"audio"}
        assert np.array_equal(fusion.projections["audio"].apply(vectors),
                              Projection.from_dict(found.projections["audio"]).apply(vectors))
        # A search that names its metric compares the stored vectors with it.
        assert not catalog_fusion(catalog, "fused", metric_given=True)[0].projections
        # Weights asked for replace the tuned weights only: audio alone, in its projection.
        alone, origin = catalog_fusion(catalog, "fused", weights={"audio": 1.0})
        assert origin == "explicit" and dict(alone.weights) == {"audio": 1.0}
        assert set(alone.projections) == {"audio"} and dict(alone.metrics) == {"audio": found.metrics["audio"]}
        assert not catalog_fusion(catalog, "fused", weights={"audio": 1.0}, metric_given=True)[0].projections


def test_a_tuning_stored_before_projections_reads_as_one_without_them() -> None:
    vectors, labels = labelled_vectors()
    rows = LabelledRows(labels=labels.astype(object), groups=np.array([None] * labels.size, dtype=object),
                        keys=np.array([str(i) for i in range(labels.size)], dtype=object))
    found = tune_pool(Pool(ids=np.arange(labels.size), matrices={"audio": vectors, "visual": vectors}), rows)
    older = {name: value for name, value in found.to_dict().items()
             if name not in ("projections", "projection_scores")}
    again = type(found).from_dict(older)
    assert again.projections == {} and again.projection_scores == {} and not again.fusion().projections


def test_the_map_places_a_tuned_catalog_by_its_projected_distances() -> None:
    vectors, _, pool, fusion = projected_fusion(0.7)
    plan = SearchPlan(modality="fused", metric="cosine", fusion=fusion, weights_from="tuned", pool=pool)
    graph = neighbour_graph(plan, 5)
    total = distances(dict(pool.matrices), pool, "cosine", fusion).total
    np.fill_diagonal(total, np.inf)
    for row in range(pool.ids.size):
        columns = graph.indices[graph.indptr[row]:graph.indptr[row + 1]]
        assert set(columns[1:]) == set(np.argsort(total[row])[:5])
    # Without its projection the same fusion places the videos otherwise: the test tells the two apart.
    stored = Fusion(weights=dict(fusion.weights), metrics=dict(fusion.metrics))
    raw = neighbour_graph(SearchPlan(modality="fused", metric="cosine", fusion=stored, weights_from="tuned",
                                     pool=pool), 5)
    assert not np.array_equal(np.sort(raw.indices.reshape(pool.ids.size, -1), axis=1),
                              np.sort(graph.indices.reshape(pool.ids.size, -1), axis=1))
