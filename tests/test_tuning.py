"""Fusion tuned from labels, its cross-validation, explanations and ties: on constructed catalogs, then end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mvr import progress
from mvr.cli import main
from mvr.dataset.build import build_collection
from mvr.errors import UsageError
from mvr.evaluation.crossval import cross_validate
from mvr.evaluation.run import evaluate
from mvr.evaluation.scoring import query_set, score_candidates, score_rankings
from mvr.features import SPACES, FeatureGroup
from mvr.index.exact import ExactSearcher
from mvr.retrieval.fusion import Fusion, Pool, adaptive_weights
from mvr.retrieval.query import QueryVectors, catalog_fusion, recommend_vectors
from mvr.retrieval.ranking import first_k
from mvr.retrieval.search import SearcherCache, rank
from mvr.retrieval.tuning import (
    TUNING_METRICS,
    LabelledRows,
    group_folds,
    labelled_rows,
    parse_weights,
    store_tuning,
    stored_tuning,
    tune_catalog,
    tune_pool,
    weight_grid,
)
from mvr.store import Catalog, NewVideo
from tests.conftest import FIXTURE_SPEC


def synthetic(folder: Path, songs: int = 6, informative: str = "audio") -> Path:
    """4 labels x ``songs`` songs x 2 excerpts; the ``informative`` space carries the label, the other is noise;
    with ``informative="both"`` each space tells half of it (audio labels 0-1 from 2-3, visual 0 and 2 from 1 and 3).
    """
    generator = np.random.default_rng(11)
    with Catalog.open(folder) as catalog:
        for index in range(4 * songs * 2):
            label = index // (2 * songs)
            media_file = folder.parent / f"v{index}.mp4"
            media_file.write_bytes(b"x" * (index + 1))
            signal = {space: np.zeros(8) for space in ("audio", "visual")}
            if informative == "both":
                signal["audio"][label // 2] = signal["visual"][2 + label % 2] = 3.0
            else:
                signal[informative][label] = 3.0
            vectors = {space: generator.normal(size=8) + signal[space] for space in ("audio", "visual")}
            catalog.add(NewVideo(
                content_hash=f"{index:064d}", source=str(media_file), media_file=media_file, title=f"v{index}",
                duration=30.0, label=f"l{label}", group=f"song{index // 2}",
                vectors={space: (f"{space}-v1", vector) for space, vector in vectors.items()},
            ))
    return folder


@pytest.mark.parametrize("informative", ["audio", "visual"])
def test_the_tuned_weight_goes_to_the_space_that_carries_the_label(tmp_path: Path, informative: str) -> None:
    with Catalog.open(synthetic(tmp_path / "cat", informative=informative), create=False) as catalog:
        found = tune_catalog(catalog, k=5)
        assert found.tuned and found.videos == 48 and found.labels == ["l0", "l1", "l2", "l3"]
        noise = "visual" if informative == "audio" else "audio"
        assert found.weights[informative] >= 0.8 > found.weights[noise]
        assert found.score >= found.equal_score and found.extractors == {"audio": "audio-v1", "visual": "visual-v1"}
        store_tuning(catalog, found)
        assert stored_tuning(catalog) == found
        fusion, origin = catalog_fusion(catalog, "fused")
        assert origin == "tuned" and dict(fusion.weights) == found.weights and dict(fusion.metrics) == found.metrics
        # A metric asked for replaces the tuned ones; weights asked for replace the tuned ones.
        assert catalog_fusion(catalog, "fused", metric_given=True)[0].metrics is None
        assert catalog_fusion(catalog, "fused", weights={"audio": 1.0})[1] == "explicit"
        # Vectors of another extractor make the stored choice stale: equal weights again.
        catalog.set_setting("extractor.audio", "audio-v2")
        assert stored_tuning(catalog) is None and catalog_fusion(catalog, "fused")[1] == "equal"


def test_a_fitted_rule_is_kept_only_where_it_beats_the_simpler_ones_out_of_fold(tmp_path: Path) -> None:
    with Catalog.open(synthetic(tmp_path / "one", informative="visual"), create=False) as catalog:
        alone = tune_catalog(catalog, k=5)
    with Catalog.open(synthetic(tmp_path / "both", informative="both"), create=False) as catalog:
        both = tune_catalog(catalog, k=5)
    # One space tells the label: no mix ranks better out of fold, and that space alone is chosen.
    assert alone.weights == {"audio": 0.0, "visual": 1.0} and "kept the best single space" in alone.reason
    assert alone.rule_scores["single"] >= alone.rule_scores["mix"] > alone.rule_scores["equal"]
    # Each tells half of it: one space alone cannot tell it all, out of fold either; equal weights can.
    assert min(both.rule_scores["equal"], both.rule_scores["mix"]) > both.rule_scores["single"] + 0.1
    assert both.weights == {"audio": 0.5, "visual": 0.5} and "kept equal weights" in both.reason


def test_each_space_keeps_its_metric_unless_asked_to_choose(tmp_path: Path) -> None:
    with Catalog.open(synthetic(tmp_path / "cat", informative="audio"), create=False) as catalog:
        kept = tune_catalog(catalog, k=5)
        chosen = tune_catalog(catalog, k=5, metrics=TUNING_METRICS)
    assert kept.metrics == {space: SPACES[space].default_metric for space in ("audio", "visual")}
    assert set(chosen.metrics.values()) <= set(TUNING_METRICS)
    # Choosing among more metrics can only raise the in-sample score.
    assert chosen.score >= kept.score


def test_too_few_labels_keep_equal_weights(tmp_path: Path) -> None:
    pool = Pool(ids=np.arange(8), matrices={"audio": np.eye(8), "visual": np.eye(8)})
    rows = LabelledRows(labels=np.array(["a", "b"] * 4, dtype=object), groups=np.array([None] * 8, dtype=object),
                        keys=np.array([str(i) for i in range(8)], dtype=object))
    found = tune_pool(pool, rows)
    assert not found.tuned and found.weights == {"audio": 0.5, "visual": 0.5}
    assert "at least 2 labels and 10 labelled videos" in found.reason


def test_the_weight_grid_covers_the_simplex() -> None:
    grid = weight_grid(3, 0.1)
    assert grid.shape == (66, 3) and np.allclose(grid.sum(axis=1), 1.0) and (grid >= 0).all()
    assert weight_grid(2, 0.5).tolist() == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]


def test_weights_text_is_checked() -> None:
    assert parse_weights("visual=1, audio=3") == {"audio": 0.75, "visual": 0.25}
    for text, reason in [("audio", "is not space=number"), ("audio=x", "is not space=number"),
                         ("sound=1", "unknown feature space 'sound'"), ("audio=-1", "non-negative"),
                         ("audio=0", "above 0")]:
        with pytest.raises(UsageError, match=reason):
            parse_weights(text)


def test_cross_validation_folds_are_disjoint_groups_and_never_tuned_on(tmp_path: Path) -> None:
    with Catalog.open(synthetic(tmp_path / "cat"), create=False) as catalog:
        videos = {video.id: video for video in catalog.videos()}
        pool = SearcherCache().pool(catalog, ("audio", "visual"))
    rows = labelled_rows(pool, videos)
    found = query_set(pool, videos, "fused")
    result = cross_validate(pool, rows, found, k=5)
    queries = [found.rows[fold.queries] for fold in result.folds]
    assert len(queries) == 5 and sorted(np.concatenate(queries).tolist()) == list(range(48))
    for i, fold in enumerate(result.folds):
        own_groups = set(rows.groups[queries[i]])
        for j in range(i):
            assert not own_groups & set(rows.groups[queries[j]])  # a track's excerpts share one fold
        # Tuned on every other video, and on none of the fold's groups.
        assert not set(fold.training) & set(queries[i]) and not own_groups & set(rows.groups[fold.training])
        assert fold.training.size == 48 - queries[i].size and fold.tuning.tuned
        assert fold.tuning.weights["audio"] >= 0.8
    # As good as the space that carries the label, alone with its own metric.
    alone, = score_candidates(Pool(ids=pool.ids, matrices={"audio": pool.matrices["audio"]}), videos, "audio", 5,
                              metrics=(SPACES["audio"].default_metric,))
    assert result.result.method == "tuned" and result.result.queries == 48
    assert result.result.precision >= alone.precision - 0.01 > 0.7
    # The deal depends on the groups and keys alone, not on their order.
    order = np.random.default_rng(0).permutation(48)
    dealt = group_folds(rows.groups[order], rows.keys[order])
    assert sorted(sorted(order[fold].tolist()) for fold in dealt) == sorted(sorted(q.tolist()) for q in queries)


def test_evaluate_reports_the_tuned_fusion_beside_the_presets(tmp_path: Path) -> None:
    with Catalog.open(synthetic(tmp_path / "cat"), create=False) as catalog:
        found = evaluate(catalog, k=5)
    data = found.to_dict()
    assert len(data["tuned"]["folds"]) == 5 and data["tuned"]["result"]["queries"] == 48
    assert data["adaptive"]["method"] == "adaptive"
    # Noise in one space halves the equal fusion's evidence; the tuned fusion ignores it.
    assert found.tuned.result.precision >= found.result("mvr", "audio").precision - 0.01
    assert found.tuned.result.precision > found.result("mvr", "fused").precision


def test_explanations_add_up_to_the_fused_score(tmp_path: Path) -> None:
    with Catalog.open(synthetic(tmp_path / "cat"), create=False) as catalog:
        pool = SearcherCache().pool(catalog, ("audio", "visual"))
        query = QueryVectors({"source": "q", "title": "q", "id": 1, "label": "l0"},
                             {space: pool.matrices[space][0] for space in pool.spaces}, [])
        groups = {"audio": (_group("low", range(4)), _group("high", range(4, 8))),
                  "visual": (_group("all", range(8)),)}
        fusion = Fusion("late", {"audio": 0.7, "visual": 0.3}, {"audio": "cityblock", "visual": "cosine"})
        found = recommend_vectors(catalog, pool, query, "fused", "cosine", fusion=fusion, k=5,
                                  weights_from="explicit", groups=groups)
    for match in found.matches:
        assert sum(reason["score"] for reason in match.why.values()) == pytest.approx(match.distance)
        assert match.why["audio"]["metric"] == "cityblock" and match.why["visual"]["metric"] == "cosine"
        assert sum(match.why["audio"]["groups"].values()) == pytest.approx(1.0)
        assert match.why["audio"]["groups_measure"] == "share of the distance"
        assert match.why["visual"]["groups"] == {"all": pytest.approx(1.0)}
        assert 0.0 <= match.similarity <= 1.0
    similarities = [match.similarity for match in found.matches]
    assert similarities == sorted(similarities, reverse=True) and similarities[0] > 0.9
    data = found.to_dict()
    assert data["fusion"]["weights_from"] == "explicit" and "why" in data["results"][0]
    # The equal default keeps the JSON it always had.
    assert set(replace(found, weights_from="equal").to_dict()["results"][0]) == {
        "rank", "id", "title", "label", "source", "distance"}


def _group(name: str, columns: range) -> FeatureGroup:
    return FeatureGroup(name, np.array(list(columns), dtype=np.int64))


def test_ties_at_the_cut_are_said_and_broken_by_id() -> None:
    # Candidates 3, 5, 8 and 9 are equally near: k=3 takes 1, then 3 and 5, and leaves 8 and 9 level with them.
    pool = Pool(ids=np.array([1, 3, 5, 8, 9, 12]),
                matrices={"audio": np.array([[0.0], [1.0], [1.0], [1.0], [1.0], [4.0]])})
    found = rank({"audio": np.array([0.0])}, pool, "cityblock", k=3)
    assert found.ids.tolist() == [1, 3, 5] and found.tied_at_cut
    assert not rank({"audio": np.array([0.0])}, pool, "cityblock", k=5).tied_at_cut
    assert not rank({"audio": np.array([0.0])}, pool, "cityblock", k=1).tied_at_cut
    # The searchers' path and the many-queries rule agree.
    searchers = {"audio": ExactSearcher(pool.ids, pool.matrices["audio"], "cityblock")}
    assert rank({"audio": np.array([0.0])}, pool, "cityblock", k=3, searchers=searchers).tied_at_cut
    distances = np.array([[0.0, 1.0, 1.0, 1.0, 1.0, 4.0], [0.0, 1.0, 2.0, 3.0, 3.0, np.nan]])
    cut = first_k(distances, 3)
    assert cut.taken.tolist() == [[True, True, True, False, False, False], [True, True, True, False, False, False]]
    assert cut.tied_at_cut.tolist() == [True, False]
    relevant = np.ones_like(distances, dtype=bool)
    assert score_rankings(distances, relevant, pool.ids, 3).tied_at_cut.tolist() == [True, False]


def test_adaptive_weights_trust_the_l_shaped_curve() -> None:
    generator = np.random.default_rng(5)
    sharp = np.concatenate([[0.0, 0.1], 5.0 + generator.random(98)])  # two stand out: an L-shaped curve
    flat = np.linspace(0.0, 5.0, 100)
    weights = adaptive_weights({"audio": sharp[None], "visual": flat[None]}, {"audio": 0.5, "visual": 0.5})
    assert weights["audio"][0, 0] > weights["visual"][0, 0] and weights["audio"][0, 0] + weights["visual"][0, 0] \
        == pytest.approx(1.0)


@pytest.fixture(scope="module")
def labelled_catalog(fixture_cache: Path, runtime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 real music videos (two styles, three tracks each, two excerpts a track), indexed."""
    spec = replace(FIXTURE_SPEC, items_per_label=6)
    manifest = build_collection(fixture_cache / "tuning_videos", spec=spec, progress=False,
                                cache_dir=runtime.cache_dir)
    folder = tmp_path_factory.mktemp("tuned") / "cat"
    assert main(["index", str(manifest), "--catalog", str(folder), "--quiet"]) == 0
    return folder


@pytest.mark.slow
def test_mvr_tune_then_query_uses_and_explains_the_tuned_weights(labelled_catalog: Path, capsys,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    capsys.readouterr()
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a count line at every step
    assert main(["tune", "--catalog", str(labelled_catalog), "--json"]) == 0
    out, err = capsys.readouterr()
    tuned = json.loads(out)
    # Each space's own metric, a learned projection in the two audio spaces, then the weight grid.
    steps = 3 + 2 + 1
    assert [line.split(",")[0] for line in err.splitlines()] == [f"tuning: {n}/{steps} done"
                                                                 for n in range(1, steps + 1)]
    # Tuned over every space the catalog holds.
    assert tuned["tuned"] and tuned["videos"] == 12 and set(tuned["weights"]) == {"audio", "musicnn", "visual"}
    with Catalog.open(labelled_catalog, create=False) as catalog:
        query = catalog.videos()[0]
    assert main(["query", query.source, "--catalog", str(labelled_catalog), "--modality", "fused", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["fusion"]["weights"] == tuned["weights"] and found["fusion"]["weights_from"] == "tuned"
    # A space kept in its learned projection is measured by euclidean distance there.
    # (On 8 training videos, musicnn's 200 columns leave a fold's within-label covariance singular: not tried.)
    assert "audio" in tuned["projection_scores"] and set(tuned["projections"]) <= {"audio", "musicnn"}
    assert found["fusion"]["projections"] == {space: "lda" for space in tuned["projections"]}
    assert found["fusion"]["metrics"] == {space: "euclidean" if space in tuned["projections"] else metric
                                          for space, metric in tuned["metrics"].items()}
    for result in found["results"]:
        assert sum(reason["score"] for reason in result["why"].values()) == pytest.approx(result["distance"])
        why = result["why"]
        assert why and set(why) <= set(tuned["weights"])
        expected = {"audio": {"energy", "spectral", "MFCC / timbre", "chroma / harmony"},
                    "musicnn": {"learned embedding"}, "visual": {"keyframes' mean", "keyframes' spread"}}
        for space, reason in why.items():
            assert set(reason["groups"]) == expected[space]
    assert main(["query", query.source, "--catalog", str(labelled_catalog), "--modality", "fused"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "tuned weights" in lines[0] and lines[1].split()[-2:] == ["similarity", "why"]
    assert all("%" in line and any(space in line for space in tuned["weights"]) for line in lines[2:])
    # Explicit weights override the tuned ones; a bad one is a usage error.
    assert main(["query", query.source, "--catalog", str(labelled_catalog), "--modality", "fused", "--json",
                 "--fusion-weights", "audio=1"]) == 0
    alone = json.loads(capsys.readouterr().out)["fusion"]
    # Only the weights are replaced: audio keeps its tuned metric and projection.
    assert alone["weights"] == {"audio": 1.0} and alone["weights_from"] == "explicit"
    assert alone["projections"] == ({"audio": "lda"} if "audio" in tuned["projections"] else {})
    assert main(["query", query.source, "--catalog", str(labelled_catalog), "--modality", "fused",
                 "--fusion-weights", "sound=1"]) == 1
    assert "unknown feature space 'sound'" in capsys.readouterr().err
