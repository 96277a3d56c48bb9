"""Retrieval evaluation: precision@k and average precision on hand-computed cases, then `mvr evaluate` end to end."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mvr import progress
from mvr.cli import main
from mvr.errors import CatalogError, MvrError, UsageError
from mvr.evaluation.plots import AXES_BOX, FIGURE_DPI, FIGURE_INCHES, draw, plot
from mvr.evaluation.protocols import holdout_queries
from mvr.evaluation.report import RESULTS_FILE, metric_table, save
from mvr.evaluation.run import evaluate
from mvr.evaluation.scoring import chance_precision, excluded_pairs, score_rankings, summarise
from mvr.index.base import METRICS
from mvr.retrieval.targets import default_metrics
from mvr.retrieval.tuning import store_tuning, tune_catalog
from mvr.store import Catalog, NewVideo

# The toy catalogs hold the study's two spaces: evaluation scores what a catalog holds.
SEARCH_MODALITIES = ("audio", "visual", "fused")

NAN = np.nan


def test_precision_and_average_precision_by_hand() -> None:
    # Ranked by distance: ids 5 (a), 2 (b), 3 (a), 4 (b), 1 (a). Relevant (label a) at ranks 1, 3 and 5.
    distances = np.array([[0.9, 0.2, 0.3, 0.4, 0.1]])
    relevant = np.array([[True, False, True, False, True]])
    scores = score_rankings(distances, relevant, np.array([1, 2, 3, 4, 5]), k=3)
    assert scores.hits.tolist() == [2]  # ids 5 and 3 among the first three
    # AP = (1/1 + 2/3 + 3/5) / 3
    np.testing.assert_allclose(scores.average_precision, [(1 + 2 / 3 + 3 / 5) / 3])
    assert scores.degenerate.tolist() == [False] and scores.answerable.tolist() == [True]


def test_excluded_and_non_finite_candidates_are_not_ranked() -> None:
    # The query's near-copy (NaN: excluded) would have been first; the NaN of a metric counts as no answer.
    distances = np.array([[NAN, 0.5, 0.6, NAN, 0.7]])
    relevant = np.array([[False, False, True, True, True]])  # id 4 is relevant but got no finite distance
    scores = score_rankings(distances, relevant, np.arange(5), k=2)
    assert scores.hits.tolist() == [1]
    # Ranking: ids 1 (no), 2 (yes), 4 (yes); id 3 never ranked, yet it counts as a relevant video missed.
    np.testing.assert_allclose(scores.average_precision, [(1 / 2 + 2 / 3) / 3])


def test_ties_are_broken_by_id_as_in_search() -> None:
    distances = np.array([[1.0, 1.0, 2.0]])
    relevant = np.array([[False, True, False]])
    assert score_rankings(distances, relevant, np.array([9, 4, 7]), k=1).hits.tolist() == [1]
    assert score_rankings(distances, relevant, np.array([4, 9, 7]), k=1).hits.tolist() == [0]


def test_a_metric_that_ties_everything_answers_nothing() -> None:
    distances = np.array([[0.5, 0.5, 0.5], [NAN, NAN, NAN], [0.1, 0.5, NAN], [0.3, NAN, NAN]])
    relevant = np.array([[True, True, False], [True, False, False], [True, False, False], [True, False, False]])
    scores = score_rankings(distances, relevant, np.arange(3), k=2)
    assert scores.degenerate.tolist() == [True, True, False, False]  # a single finite candidate is an answer
    assert scores.hits.tolist() == [0, 0, 1, 1]
    assert scores.average_precision.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_map_and_each_labels_precision_by_hand() -> None:
    # Candidates 1-4 are labelled a, a, b, b; three queries, labelled a, b, a.
    distances = np.array([[0.1, 0.5, 0.2, 0.9],    # ranks 1 a, 3 b, 2 a, 4 b: 1 hit in 2, AP (1/1 + 2/3) / 2
                          [0.3, 0.4, 0.1, 0.2],    # ranks 3 b, 4 b, 1, 2: 2 hits, AP 1
                          [0.8, 0.7, 0.1, 0.2]])   # ranks 3, 4, 2 a, 1 a: no hit, AP (1/3 + 2/4) / 2
    labels = np.array(["a", "b", "a"], dtype=object)
    relevant = labels[:, None] == np.array(["a", "a", "b", "b"])[None, :]
    scores = score_rankings(distances, relevant, np.arange(1, 5), k=2)
    result = summarise(scores, labels, "audio", "euclidean", 2, chance=0.5)
    assert result.precision == pytest.approx(3 / 6)
    assert result.labels == pytest.approx({"a": (1 + 0) / 4, "b": 2 / 2})
    assert result.map == pytest.approx((5 / 6 + 1 + 5 / 12) / 3)


def test_chance_is_the_expected_precision_of_a_random_ranking() -> None:
    # Query 1 is candidate 0 (excluded): 1 relevant of 4 eligible. Query 2's group holds candidates 1 and 2:
    # 2 relevant of 3 eligible.
    excluded = np.array([[True, False, False, False, False], [False, True, True, False, False]])
    relevant = np.array([[False, True, False, False, False], [True, False, False, True, False]])
    assert chance_precision(relevant, excluded, k=2) == pytest.approx((1 / 4 + 2 / 3) / 2)
    # With k = 4, query 2 has only 3 candidates: a random ranking shows both relevant ones, 2 of 4 places.
    assert chance_precision(relevant, excluded, k=4) == pytest.approx((1 / 4 + 2 / 4) / 2)


def test_a_query_without_any_relevant_candidate_is_not_answerable() -> None:
    scores = score_rankings(np.array([[0.1, 0.2]]), np.array([[False, False]]), np.arange(2), k=1)
    assert scores.answerable.tolist() == [False]


def test_the_query_and_its_group_are_excluded() -> None:
    groups = np.array(["song1", "song1", "song2", None, None], dtype=object)
    ids = np.arange(10, 15)
    excluded = excluded_pairs(ids, groups, ids, groups)
    assert excluded.tolist() == [
        [True, True, False, False, False],
        [True, True, False, False, False],
        [False, False, True, False, False],
        [False, False, False, True, False],  # no group: only itself, not the other video without a group
        [False, False, False, False, True],
    ]


def test_holdout_takes_each_label_from_distinct_groups_the_same_way_everywhere() -> None:
    keys = np.array([f"hash{i}" for i in range(14)])
    labels = np.array(["a"] * 8 + ["b"] * 6, dtype=object)
    groups = np.array([f"s{i // 2}" for i in range(14)], dtype=object)  # two videos per song
    chosen = holdout_queries(keys, labels, groups, per_label=3)
    assert len(chosen) == 6 and sorted(labels[chosen]) == ["a"] * 3 + ["b"] * 3
    assert len(set(groups[chosen])) == 6  # label a has 4 songs and b has 3: one query per song
    # The order of the catalog does not matter, only the content.
    order = np.random.default_rng(0).permutation(14)
    again = holdout_queries(keys[order], labels[order], groups[order], per_label=3)
    assert sorted(keys[order][again]) == sorted(keys[chosen])
    # Label b has 3 songs for 4 queries: one song gives two.
    assert len(set(groups[holdout_queries(keys, labels, groups, per_label=4)])) == 7
    with pytest.raises(UsageError, match="'b' has 6"):
        holdout_queries(keys, labels, groups, per_label=6)


def toy_catalog(folder: Path, songs: int) -> Path:
    """3 labels x ``songs`` songs x 2 excerpts: audio separates the labels, visual is noise."""
    generator = np.random.default_rng(3)
    with Catalog.open(folder) as catalog:
        for index in range(3 * songs * 2):
            label = "abc"[index // (2 * songs)]
            media_file = folder.parent / f"v{index}.mp4"
            media_file.write_bytes(b"x" * (index + 1))
            audio = np.zeros(6)
            audio["abc".index(label)] = 10.0
            catalog.add(NewVideo(
                content_hash=f"{index:064d}", source=str(media_file), media_file=media_file, title=f"v{index}",
                duration=30.0, label=label, group=f"song{index // 2}",
                vectors={"audio": ("a-v1", audio + generator.normal(size=6)),
                         "visual": ("v-v1", generator.normal(size=8))},
            ))
    return folder


def test_evaluate_scores_every_method_modality_and_metric(tmp_path: Path) -> None:
    with Catalog.open(toy_catalog(tmp_path / "cat", songs=2), create=False) as catalog:
        found = evaluate(catalog, k=2)
    assert found.modalities == list(SEARCH_MODALITIES)
    assert len(found.results) == 2 * len(SEARCH_MODALITIES) * len(METRICS)
    audio = found.result("mvr", "audio", "euclidean")
    # 12 queries; each has 2 same-label candidates outside its own song, out of 10 candidates.
    assert audio.queries == 12 and audio.chance == pytest.approx(0.2)
    assert audio.precision == 1.0 and audio.map == 1.0 and set(audio.labels) == {"a", "b", "c"}
    # Both methods rank the same audio vectors; only the fused search differs between them.
    assert found.result("study", "audio", "euclidean") == replace(audio, method="study")
    # scipy's jensenshannon needs non-negative vectors: no finite distance at all on these.
    tie = found.result("mvr", "audio", "jensenshannon")
    assert tie.degenerate and tie.precision is None and tie.map is None and tie.labels["a"] is None
    header, rows = metric_table(found)
    assert header == ["metric", "audio", "visual", "fused (late)", "fused (concat, study)"]
    assert rows[METRICS.index("jensenshannon")][1] == "tie" and rows[-1][1] == "0.20"
    assert rows[METRICS.index("euclidean")][1] == "1.000 / 1.000 s"  # the study's choice for audio


def default_rows(evaluation: dict) -> dict[str, tuple[str, str]]:
    """Search target -> (method, metric) of the rows an evaluation's JSON marks as mvr's default."""
    rows = [*evaluation["results"], evaluation["tuned"]["result"], evaluation["adaptive"]]
    marked = [(row["modality"], (row["method"], row["metric"])) for row in rows if row["default"]]
    assert len(marked) == len(dict(marked)), marked  # one default row per search target
    return dict(marked)


def test_the_default_rows_follow_the_catalog_s_tuning(tmp_path: Path) -> None:
    with Catalog.open(toy_catalog(tmp_path / "cat", songs=2), create=False) as catalog:
        plain = evaluate(catalog, k=2).to_dict()
        tuning = tune_catalog(catalog, k=2)
        assert tuning.tuned  # 12 labelled videos of 3 labels are enough
        store_tuning(catalog, tuning)
        tuned = evaluate(catalog, k=2).to_dict()
    metrics = default_metrics()
    assert not plain["catalog_tuned"] and tuned["catalog_tuned"]
    # Untuned: mvr's method with its own metric everywhere, equal weights for fused.
    assert default_rows(plain) == {target: ("mvr", metrics[target]) for target in SEARCH_MODALITIES}
    # Tuned: fused searches use the tuning, so the tuned fusion's cross-validated row is the default.
    assert default_rows(tuned) == {**default_rows(plain), "fused": ("tuned", "tuned")}
    assert tuned["tuned"]["result"]["chance"] == plain["results"][0]["chance"] == pytest.approx(0.2)


def test_the_api_serves_the_defaults_chance_and_tuned_fusion(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from test_web import local_client  # the web stack is an optional extra: loaded only when installed

    from mvr.web import ServiceSettings

    folder = toy_catalog(tmp_path / "cat", songs=2)
    with Catalog.open(folder, create=False) as catalog:
        store_tuning(catalog, tune_catalog(catalog, k=2))
        written = evaluate(catalog, k=2)
        save(written, folder)
    with local_client(ServiceSettings(catalog=folder)) as app:
        found = app.get("/api/evaluation").json()
    assert found["catalog_tuned"] is True and found["defaults"]["mvr"]["fused"] == "cosine"
    tuned = found["tuned"]
    assert tuned["result"]["method"] == "tuned" and tuned["result"]["default"] is True
    assert len(tuned["folds"]) == 5 and all(set(fold["weights"]) == {"audio", "visual"} for fold in tuned["folds"])
    assert found["adaptive"]["method"] == "adaptive" and found["adaptive"]["default"] is False
    audio = next(row for row in found["results"] if (row["method"], row["modality"], row["metric"])
                 == ("mvr", "audio", "braycurtis"))
    assert audio["default"] is True and audio["chance"] == pytest.approx(0.2) and audio["tied_at_cut"] == 0
    assert audio["labels"] == written.result("mvr", "audio").labels
    assert audio["map"] == pytest.approx(written.result("mvr", "audio").map, abs=1e-4)


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_figures_are_large_with_the_legend_beside_the_bars_and_a_chance_line(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    with Catalog.open(toy_catalog(tmp_path / "cat", songs=2), create=False) as catalog:
        found = evaluate(catalog, k=2)
    written = plot(found, tmp_path / "plots")
    assert [path.name for path in written] == [f"loo-{modality}.png" for modality in SEARCH_MODALITIES]
    size = (round(FIGURE_INCHES[0] * FIGURE_DPI), round(FIGURE_INCHES[1] * FIGURE_DPI))
    assert size == (1200, 570) and all(png_size(path) == size for path in written)
    figure = draw(found, "fused")
    figure.canvas.draw()
    axes = figure.axes[0]
    legend, box = axes.get_legend().get_window_extent(), axes.get_window_extent()
    assert legend.x0 > box.x1 and legend.x1 <= size[0]  # right of the bars, inside the picture
    assert box.x0 == pytest.approx(AXES_BOX[0] * size[0])
    lines = {line.get_label().split(" (")[0]: line.get_ydata()[0] for line in axes.get_lines()}
    assert lines["chance"] == pytest.approx(found.result("mvr", "fused").chance)
    assert lines["tuned, 5-fold CV"] == pytest.approx(found.tuned.result.precision)
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["chance (0.20)", f"tuned, 5-fold CV ({found.tuned.result.precision:.2f})", "fused (late)",
                      "fused (concat, study)"]


def test_holdout_ranks_only_the_videos_not_held_out(tmp_path: Path) -> None:
    with Catalog.open(toy_catalog(tmp_path / "cat", songs=4), create=False) as catalog:
        found = evaluate(catalog, k=3, protocol="holdout")
    audio = found.result("mvr", "audio")
    assert audio.queries == 15
    # Per label, 5 of 8 excerpts are queries: one of each of the 4 songs, then a second one of one song. The pool
    # keeps the other excerpt of 3 songs, so 3 queries have 2 same-label candidates (their own song's is excluded)
    # and 2 have 3: 12 hits of 15 even with a perfect ranking. Were the queries in the pool, there would be 15.
    assert audio.precision == pytest.approx(12 / 15) and audio.map == 1.0


def test_evaluate_needs_labels(tmp_path: Path) -> None:
    media_file = tmp_path / "v.mp4"
    media_file.write_bytes(b"x")
    with Catalog.open(tmp_path / "cat") as catalog:
        catalog.add(NewVideo(content_hash="0" * 64, source="v", media_file=media_file, title="v", duration=1.0,
                             vectors={"audio": ("a-v1", np.ones(3))}))
        with pytest.raises(MvrError, match="no labelled video"):
            evaluate(catalog)


@pytest.mark.slow
def test_mvr_evaluate_on_real_music_videos(music_videos, tmp_path: Path, capsys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "cat"
    assert main(["index", str(music_videos.manifest), "--catalog", str(catalog), "--quiet"]) == 0
    capsys.readouterr()
    table, plots = tmp_path / "results.csv", tmp_path / "plots"
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a count line at every scoring
    code = main(["evaluate", "--catalog", str(catalog), "-k", "2", "--json", "--csv", str(table),
                 "--plots", str(plots)])
    out, err = capsys.readouterr()
    assert code == 0, err
    # One count line per scoring: each search target's, each fold of the tuned fusion (four groups: four folds,
    # counted once dealt), the adaptive fusion, each fold of the two audio spaces tuned alone (learned).
    counts = [tuple(map(int, line.split()[1].split("/"))) for line in err.splitlines() if line.startswith("eval")]
    assert [done for done, _ in counts] == list(range(1, len(counts) + 1))
    assert counts[-1] == (18, 18) and counts[0][1] == 6
    found = json.loads(out)
    # Each audio space alone with its projection where a fold keeps one, cross-validated: never a default.
    assert set(found["learned"]) == {"audio", "musicnn"}
    for space, learned in found["learned"].items():
        assert learned["result"]["method"] == "learned" and learned["result"]["modality"] == space
        assert learned["result"]["queries"] == 8 and not learned["result"]["default"]
        assert len(learned["folds"]) == 4 and all(set(fold["weights"]) == {space} for fold in learned["folds"])
    assert found["k"] == 2 and found["protocol"] == "loo"
    assert json.loads((catalog / RESULTS_FILE).read_text()) == found  # kept for the dashboard
    results = {(r["method"], r["modality"], r["metric"]): r for r in found["results"]}
    # mvr searches every space the catalog holds; the study's method, the study's two.
    every = ("audio", "musicnn", "visual", "fused")
    assert set(results) == ({("mvr", mod, met) for mod in every for met in METRICS}
                            | {("study", mod, met) for mod in SEARCH_MODALITIES for met in METRICS})
    for result in results.values():
        assert set(result) >= {"modality", "metric", "precision", "map", "queries", "degenerate"}
        assert result["queries"] == 8
    assert results["mvr", "audio", "jensenshannon"]["degenerate"]  # audio features have negative values
    for modality, metric in found["defaults"]["mvr"].items():  # two styles, easy to tell apart by either modality
        assert results["mvr", modality, metric]["precision"] > results["mvr", modality, metric]["chance"] + 0.3
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(results) and {"precision_orchestral", "precision_industrial"} <= set(rows[0])
    assert sorted(p.name for p in plots.iterdir()) == [f"loo-{m}.png" for m in ("audio", "fused", "musicnn", "visual")]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.iterdir())
    assert main(["evaluate", "--catalog", str(catalog)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("precision@5 / mean average precision, leave-one-out, 8 queries")
    assert "the study's method" in out and "braycurtis concat" in out
    assert "musicnn (learned)" in out and "cross-validated" in out
    # Its own videos as a query set: each recognised by its content, so the same numbers as leave-one-out.
    assert main(["evaluate", "--catalog", str(catalog), "-k", "2", "--queries", str(catalog), "--json"]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert asked["protocol"] == "queries" and asked["results"] == found["results"]
    # Four videos per label cannot spare five held-out queries: said in one line.
    assert main(["evaluate", "--catalog", str(catalog), "--protocol", "holdout"]) == 1
    assert "holdout needs more than 5 videos per label" in capsys.readouterr().err


def test_queries_from_another_catalog(tmp_path: Path) -> None:
    # The same 12 toy videos as queries of a catalog holding them too: each is recognised by its content and its
    # group is left out, so every query finds the 2 other excerpts of its label, as in leave-one-out.
    with Catalog.open(toy_catalog(tmp_path / "cat", songs=2), create=False) as catalog, \
            Catalog.open(toy_catalog(tmp_path / "asked" / "cat", songs=2), create=False) as asked:
        found = evaluate(catalog, k=2, queries=asked)
        assert found.protocol == "queries" and found.queries == str(asked.root)
        assert found.result("mvr", "audio") == evaluate(catalog, k=2).result("mvr", "audio")
        with pytest.raises(UsageError, match="'queries' protocol"):
            evaluate(catalog, protocol="holdout", queries=asked)
        asked.set_setting("extractor.audio", "a-v2")
        with pytest.raises(CatalogError, match="'a-v2'"):
            evaluate(catalog, queries=asked)
