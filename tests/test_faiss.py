"""FaissSearcher against the exact scipy scan: recall, exact distances, persistence, staleness, tombstones, the
scale sample saved with the index; a large catalog's pool read from the saved index's mapped vectors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mvr.errors import UsageError
from mvr.index.base import METRICS, SCALE_SAMPLE_ROWS
from mvr.index.exact import ExactSearcher
from mvr.index.faiss import FAISS_METRICS, FLAT_MAX_WORK, LAYOUT, SCALAR_FLAT_MAX_WORK, FaissSearcher, _Projection
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.search import SearcherCache, rank
from mvr.store import Catalog, NewVideo

K = 5


def clustered(count: int, dims: int, generator: np.random.Generator, *, non_negative: bool = False,
              seeds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """bench_query.py's recipe on synthetic seeds: each row a seed moved towards another, plus 15% noise.

    Returns the rows (float32 ``(count, dims)``) and the seeds, so that queries can come from the same ones.
    """
    if seeds is None:
        if non_negative:  # like CNN features: low-rank, correlated, never negative
            seeds = np.maximum(generator.standard_normal((50, 24)) @ generator.standard_normal((24, dims)) / 5, 0)
        else:
            centres = generator.standard_normal((8, dims))
            seeds = centres[generator.integers(8, size=50)] + 0.6 * generator.standard_normal((50, dims))
    first, second = generator.integers(len(seeds), size=(2, count))
    moved = seeds[first] + generator.uniform(0, 0.5, (count, 1)) * (seeds[second] - seeds[first])
    moved += 0.15 * seeds.std(axis=0) * generator.standard_normal(moved.shape)
    if non_negative:
        moved = np.maximum(moved, 0)
    return moved.astype(np.float32), seeds


def exact(queries: np.ndarray, ids: np.ndarray, rows: np.ndarray, metric: str, k: int = K,
          exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """The reference: scipy over every row, non-finite left out, ties by id."""
    with np.errstate(divide="ignore", invalid="ignore"):
        found = cdist(np.asarray(queries, np.float64), rows.astype(np.float64), metric)
    out_d, out_i = np.full((len(queries), k), np.inf), np.full((len(queries), k), -1)
    for i, row in enumerate(found):
        keep = np.isfinite(row)
        if exclude is not None:
            keep &= ~np.isin(ids, list(exclude[i]))
        order = np.lexsort((ids[keep], row[keep]))[:k]
        out_d[i, :order.size], out_i[i, :order.size] = row[keep][order], ids[keep][order]
    return out_d, out_i


def recall(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(e[e >= 0]) & set(g)) / max((e >= 0).sum(), 1) for e, g in zip(expected, got)]))


@pytest.fixture(scope="module")
def narrow():
    generator = np.random.default_rng(1)
    rows, seeds = clustered(3000, 48, generator, non_negative=True)
    queries, _ = clustered(40, 48, generator, non_negative=True, seeds=seeds)
    ids = np.arange(rows.shape[0], dtype=np.int64) * 2 + 11  # not positions: ids must be mapped back
    return ids, rows, queries.astype(np.float64)


@pytest.mark.parametrize("metric", sorted(FAISS_METRICS))
def test_each_metric_recall_and_exact_distances(narrow, metric):
    ids, rows, queries = narrow
    searcher = FaissSearcher.build(ids, rows, metric, kind="hnsw")
    assert searcher.kind == "hnsw" and searcher.metric == metric
    distances, found = searcher.search(queries, K)
    expected_d, expected_i = exact(queries, ids, rows, metric)
    assert distances.dtype == np.float64 and found.dtype == np.int64 and found.shape == (len(queries), K)
    assert recall(expected_i, found) >= 0.97
    # Every returned distance is scipy's for that id, to rounding (the float32 rows are the catalog's own).
    truth = cdist(queries, rows.astype(np.float64), metric)
    position = (found - 11) // 2
    np.testing.assert_allclose(distances, np.take_along_axis(truth, position, axis=1), rtol=1e-9, atol=0)
    assert (np.diff(distances, axis=1) >= 0).all()


def test_auto_chooses_flat_then_hnsw_at_the_measured_thresholds():
    generator = np.random.default_rng(2)
    rows, seeds = clustered(SCALAR_FLAT_MAX_WORK // 136 + 1, 136, generator)
    ids = np.arange(len(rows))
    # FAISS's SIMD metrics scan these rows flat (Bray-Curtis too: its shortlist is L2's); its scalar ones
    # (Canberra) already pay for a graph.
    assert FLAT_MAX_WORK > rows.size and FaissSearcher.build(ids, rows, "euclidean").kind == "flat"
    assert FaissSearcher.build(ids, rows, "braycurtis").kind == "flat"
    searcher = FaissSearcher.build(ids, rows, "canberra")
    assert searcher.kind == "hnsw"
    queries, _ = clustered(30, 136, generator, seeds=seeds)
    assert recall(exact(queries, ids, rows, "canberra")[1], searcher.search(queries, K)[1]) >= 0.97
    assert FaissSearcher.build(ids[:100], rows[:100], "canberra").kind == "flat"


@pytest.mark.parametrize("kind,metric", [("hnsw", "cosine"), ("ivf", "correlation"), ("flat", "euclidean")])
def test_wide_vectors_behind_principal_axes(kind, metric):
    generator = np.random.default_rng(3)
    rows, seeds = clustered(2000, 640, generator, non_negative=True)
    queries, _ = clustered(30, 640, generator, non_negative=True, seeds=seeds)
    ids = np.arange(2000, dtype=np.int64)
    searcher = FaissSearcher.build(ids, rows, metric, kind=kind)
    distances, found = searcher.search(queries, K)
    expected_d, expected_i = exact(queries, ids, rows, metric)
    assert recall(expected_i, found) >= 0.95
    truth = cdist(queries, rows.astype(np.float64), metric)
    np.testing.assert_allclose(distances, np.take_along_axis(truth, found, axis=1), rtol=1e-9)


def test_a_projection_keeps_each_rows_distance_from_its_axes():
    generator = np.random.default_rng(9)
    rows = generator.standard_normal((300, 600)).astype(np.float32)
    projection = _Projection.fit(rows, 20, generator)
    # A query on the axes (through the mean) has no residual of its own: a row's squared distance to it is then
    # the distance along the axes plus the row's residual, which is what the projected rows give.
    query = (projection.mean + generator.standard_normal(20) @ projection.axes)[None].astype(np.float32)
    exact = ((rows.astype(np.float64) - query) ** 2).sum(axis=1)
    moved = projection.apply(rows).astype(np.float64) - projection.apply(query, queries=True)
    np.testing.assert_allclose((moved ** 2).sum(axis=1), exact, rtol=1e-4)
    # Without the residual the rows would all look nearer than they are.
    assert ((moved[:, :-1] ** 2).sum(axis=1) < 0.9 * exact).all()


def test_an_inverted_file_of_projections_keeps_tombstones_out(tmp_path):
    generator = np.random.default_rng(5)
    rows, seeds = clustered(3000, 640, generator, non_negative=True)
    queries, _ = clustered(20, 640, generator, non_negative=True, seeds=seeds)
    ids = np.arange(3000, dtype=np.int64)
    searcher = FaissSearcher.build(ids, rows, "cosine", kind="ivf")
    # 127 principal axes and each row's residual, in 75 lists (3,000 rows, 40 training rows a list).
    assert isinstance(searcher._index, faiss.IndexIVFFlat)
    assert (searcher._index.d, searcher._index.nlist) == (128, 75)
    first = searcher.search(queries, K)[1]
    gone = np.unique(first[:, :2])
    searcher.remove(gone.tolist())
    searcher.save(tmp_path / "v", meta={})
    reopened = FaissSearcher.load(tmp_path / "v")
    for found in (searcher.search(queries, K)[1], reopened.search(queries, K)[1]):
        assert not set(found.ravel().tolist()) & set(gone.tolist())
        keep = ~np.isin(ids, gone)
        expected_i = ids[keep][np.argsort(cdist(queries, rows[keep].astype(np.float64), "cosine"), axis=1)[:, :K]]
        assert recall(expected_i, found) >= 0.95


def test_boolean_and_wide_unsupported_metrics_are_refused():
    rows = np.random.default_rng(4).random((100, 8)).astype(np.float32)
    for metric in ("hamming", "jaccard", "sokalsneath"):
        assert not FaissSearcher.supports(metric, 8)
        with pytest.raises(ValueError):
            FaissSearcher.build(np.arange(100), rows, metric)
    with pytest.raises(UsageError, match="unknown metric"):
        FaissSearcher.supports("minkowski", 8)
    assert not FaissSearcher.supports("braycurtis", 2560) and FaissSearcher.supports("braycurtis", 136)
    assert set(FAISS_METRICS) < set(METRICS)


def test_exclude_padding_and_non_finite(narrow):
    ids, rows, queries = narrow
    searcher = FaissSearcher.build(ids, rows, "euclidean", kind="hnsw")
    first = searcher.search(queries[:3], K)[1]
    exclude = [set(first[0][:3].tolist()), set(), {int(ids[0])}]
    distances, found = searcher.search(queries[:3], K, exclude=exclude)
    assert not set(found[0]) & exclude[0]
    np.testing.assert_array_equal(found[1], first[1])
    np.testing.assert_array_equal(found[0][:2], first[0][3:])
    # More answers asked for than rows: padded with (inf, -1).
    small = FaissSearcher.build(np.array([5, 3, 9]), rows[:3], "cosine")
    distances, found = small.search(queries[:1], 5)
    assert sorted(found[0][:3]) == [3, 5, 9] and (found[0][3:] == -1).all() and np.isinf(distances[0][3:]).all()
    # A zero query has no cosine with anything: all padding; a zero row is never returned.
    with_zero = rows[:50].copy()
    with_zero[7] = 0
    searcher = FaissSearcher.build(np.arange(50), with_zero, "cosine")
    assert (searcher.search(np.zeros((1, 48)), 3)[1] == -1).all()
    assert 7 not in searcher.search(np.zeros((1, 48)) + with_zero[7] + 1e-3, 49)[1]


def test_ties_in_id_order():
    generator = np.random.default_rng(5)
    rows = generator.standard_normal((300, 16)).astype(np.float32)
    rows[[10, 40, 70, 100]] = rows[10]  # four identical rows
    ids = np.arange(300, dtype=np.int64)[::-1].copy()  # descending storage order: ties must still be by id
    searcher = FaissSearcher.build(ids, rows, "cityblock", kind="hnsw")
    _, found = searcher.search(rows[10][None], 4)
    assert found[0].tolist() == sorted(ids[[10, 40, 70, 100]].tolist())


def test_tombstones_and_rebuild_flag(narrow):
    ids, rows, queries = narrow
    searcher = FaissSearcher.build(ids, rows, "braycurtis", kind="hnsw")
    before = searcher.search(queries, K)[1]
    gone = np.unique(before[:, :2])
    assert searcher.remove(gone.tolist()) == gone.size
    assert not np.isin(gone, searcher.ids).any() and searcher.ids.size == ids.size - gone.size
    after_d, after = searcher.search(queries, K)
    assert not np.isin(after, gone).any()
    keep = ~np.isin(ids, gone)
    assert recall(exact(queries, ids[keep], rows[keep], "braycurtis")[1], after) >= 0.97
    assert not searcher.needs_rebuild
    searcher.remove(ids[: len(ids) // 10])
    assert searcher.needs_rebuild


def test_save_reopen_add_search_follows(tmp_path, narrow):
    ids, rows, queries = narrow
    meta = {"generation": 7, "extractor": "audio-v1"}
    half = len(ids) // 2
    searcher = FaissSearcher.build(ids[:half], rows[:half], "euclidean", kind="hnsw")
    searcher.remove([int(ids[0])])
    searcher.save(tmp_path / "audio", meta=meta)
    assert FaissSearcher.saved_meta(tmp_path / "audio") == {**meta, "metric": "euclidean"}
    reopened = FaissSearcher.load(tmp_path / "audio")
    assert reopened is not None and isinstance(reopened._rows.segments[0], np.memmap)  # the rerank reads a file
    np.testing.assert_array_equal(reopened.ids, searcher.ids)
    np.testing.assert_array_equal(reopened.search(queries, K)[1], searcher.search(queries, K)[1])
    # Add the other half: the reopened index answers for the whole catalog (less the tombstone).
    reopened.add(ids[half:], rows[half:])
    assert reopened.needs_rebuild  # doubled since the fit
    keep = ids != ids[0]
    distances, found = reopened.search(queries, K)
    assert recall(exact(queries, ids[keep], rows[keep], "euclidean")[1], found) >= 0.97
    assert (found >= ids[half]).any()
    # Saved again over its own folder (the mapped segment linked, the added rows written), reopened: same answers.
    reopened.save(tmp_path / "audio", meta=dict(meta, generation=8))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audio"]  # no temporary folder is left
    again = FaissSearcher.load(tmp_path / "audio")
    assert len(again._rows.segments) == 2
    np.testing.assert_array_equal(again.search(queries, K)[1], found)
    np.testing.assert_allclose(again.search(queries, K)[0], distances, rtol=1e-12)
    with pytest.raises(ValueError):
        again.add(ids[half:half + 1], rows[half:half + 1])  # already held


def test_wide_rows_codes_and_file_reads_follow_saves_and_adds(tmp_path):
    # 1,024 float32 numbers: a row fills a page, so a reopened searcher reads its rerank's rows from the file.
    generator = np.random.default_rng(13)
    rows, seeds = clustered(2400, 1024, generator, non_negative=True)
    queries = clustered(20, 1024, generator, non_negative=True, seeds=seeds)[0].astype(np.float64)
    ids = np.arange(rows.shape[0], dtype=np.int64) + 100
    half = 1600
    searcher = FaissSearcher.build(ids[:half], rows[:half], "cosine", kind="hnsw")
    # The codes rank like the rows: the ten nearest by the codes hold the five nearest by scipy.
    moved = (rows[:half] / np.linalg.norm(rows[:half], axis=1, keepdims=True)).astype(np.float32)
    for query in queries[:5]:
        unit = (query / np.linalg.norm(query)).astype(np.float32)
        by_codes = searcher._codes.nearest(unit, np.arange(half), 10)
        assert set(np.argsort(((moved - unit) ** 2).sum(axis=1))[:5]) <= set(by_codes.tolist())
    before = searcher.search(queries, K)
    searcher.save(tmp_path / "visual", meta={})
    reopened = FaissSearcher.load(tmp_path / "visual")
    slots = np.array([5, 3, 1500, 17])
    np.testing.assert_array_equal(reopened._rows.gather(slots), rows[slots].astype(np.float64))
    for got, expected in zip(reopened.search(queries, K), before):
        np.testing.assert_array_equal(got, expected)
    reopened.add(ids[half:], rows[half:])
    slots = np.array([2000, 4, half])  # the file's rows and the added ones, in memory
    np.testing.assert_array_equal(reopened._rows.gather(slots), rows[slots].astype(np.float64))
    distances, found = reopened.search(queries, K)
    assert recall(exact(queries, ids, rows, "cosine")[1], found) >= 0.95
    truth = cdist(queries, rows.astype(np.float64), "cosine")
    np.testing.assert_allclose(distances, np.take_along_axis(truth, found - 100, axis=1), rtol=1e-9)
    reopened.save(tmp_path / "visual", meta={})  # the codes of the added rows are saved with the others
    again = FaissSearcher.load(tmp_path / "visual")
    np.testing.assert_array_equal(again._codes.codes, reopened._codes.codes)
    np.testing.assert_array_equal(again.search(queries, K)[1], found)


def test_equal_wide_rows_past_the_measured_ones_still_tie_by_id():
    # 30 equal rows (a catalog's black frames, say) just behind the nearest: more than the codes' measured rows,
    # and all with the same codes; the five nearest are the near one and the tied rows of lowest id.
    generator = np.random.default_rng(0)
    rows = generator.normal(size=(3000, 512)).astype(np.float32)
    query = generator.normal(size=512)
    rows[generator.choice(np.arange(1, 3000), 30, replace=False)] = query + 0.5 * generator.normal(size=512)
    rows[0] = query + 0.3 * generator.normal(size=512)
    ids = np.arange(3000, dtype=np.int64)[::-1].copy()  # the slot order is not the id order
    searcher = FaissSearcher.build(ids, rows, "euclidean", kind="hnsw")
    got = searcher.search(query[None], K)
    expected = exact(query[None], ids, rows, "euclidean")
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def test_a_loaded_searcher_reads_its_own_rows_after_its_folder_is_replaced(tmp_path):
    generator = np.random.default_rng(1)
    first, second = generator.random((2, 2000, 1024)).astype(np.float32)  # rows of a page: read with preadv
    ids = np.arange(2000, dtype=np.int64)
    FaissSearcher.build(ids, first, "cosine", kind="hnsw").save(tmp_path / "visual", meta={})
    served = FaissSearcher.load(tmp_path / "visual")
    # Another process saves a new index in its place (`mvr reindex`): the loaded one keeps answering from its rows.
    FaissSearcher.build(ids, second, "cosine", kind="hnsw").save(tmp_path / "visual", meta={})
    queries = first[:3].astype(np.float64) + 0.01
    distances, found = served.search(queries, K)
    truth = cdist(queries, first.astype(np.float64), "cosine")
    np.testing.assert_array_equal(distances, np.take_along_axis(truth, found, axis=1))


def test_a_folder_of_another_layout_or_cut_short_is_not_loaded(tmp_path, narrow):
    ids, rows, _ = narrow
    FaissSearcher.build(ids[:500], rows[:500], "cosine").save(tmp_path / "v", meta={"generation": 3})
    assert FaissSearcher.load(tmp_path / "v") is not None
    assert FaissSearcher.load(tmp_path / "missing") is None and FaissSearcher.saved_meta(tmp_path / "missing") is None
    with open(tmp_path / "v" / "vectors-0.f32", "ab") as handle:  # a vectors file of the wrong size
        handle.write(b"\0" * 16)
    assert FaissSearcher.load(tmp_path / "v") is None
    record = (tmp_path / "v" / "meta.json").read_text().replace(f'"layout": {LAYOUT}', '"layout": 99')
    (tmp_path / "v" / "meta.json").write_text(record)
    assert FaissSearcher.saved_meta(tmp_path / "v") is None and FaissSearcher.load(tmp_path / "v") is None


def test_float16_storage_halves_the_rows_and_keeps_the_neighbours(tmp_path, narrow):
    ids, rows, queries = narrow
    searcher = FaissSearcher.build(ids, rows, "cosine", kind="hnsw", storage="float16")
    searcher.save(tmp_path / "half", meta={})
    assert (tmp_path / "half" / "vectors-0.f16").stat().st_size == rows.size * 2
    found = FaissSearcher.load(tmp_path / "half").search(queries, K)[1]
    assert recall(exact(queries, ids, rows, "cosine")[1], found) >= 0.95


def test_the_scale_sample_is_fixed_saved_with_the_index_and_follows_tombstones(tmp_path, narrow):
    ids, rows, _ = narrow
    searcher = FaissSearcher.build(ids, rows, "braycurtis", kind="hnsw")
    sample_ids, sample_rows = searcher.sample()
    assert sample_ids.size == min(len(ids), SCALE_SAMPLE_ROWS) < len(ids)
    assert np.unique(sample_ids).size == sample_ids.size
    # The sample's rows are the catalog's own numbers, as float64; a build of the same rows draws the same sample.
    np.testing.assert_array_equal(sample_rows, rows[np.searchsorted(ids, sample_ids)].astype(np.float64))
    np.testing.assert_array_equal(FaissSearcher.build(ids, rows, "braycurtis", kind="hnsw").sample()[0], sample_ids)
    searcher.save(tmp_path / "a", meta={})
    reopened = FaissSearcher.load(tmp_path / "a")
    np.testing.assert_array_equal(reopened.sample()[0], sample_ids)
    np.testing.assert_array_equal(reopened.sample()[1], sample_rows)
    # Tombstoned videos leave the sample (and a reload keeps them out).
    reopened.remove(sample_ids[:10])
    np.testing.assert_array_equal(reopened.sample()[0], sample_ids[10:])
    reopened.save(tmp_path / "a", meta={})
    np.testing.assert_array_equal(FaissSearcher.load(tmp_path / "a").sample()[0], sample_ids[10:])


def test_braycurtis_through_an_l2_graph_equals_the_exact_scan():
    # Above the flat scan's size: an HNSW graph on L2 (SIMD) shortlists, the rerank is scipy's Bray-Curtis.
    generator = np.random.default_rng(6)
    rows, seeds = clustered(FLAT_MAX_WORK // 136 + 4000, 136, generator)
    queries, _ = clustered(30, 136, generator, seeds=seeds)
    ids = np.arange(len(rows), dtype=np.int64) + 5
    searcher = FaissSearcher.build(ids, rows, "braycurtis")
    assert searcher.kind == "hnsw" and searcher._index.metric_type == faiss.METRIC_L2
    got = searcher.search(queries.astype(np.float64), K)
    expected = ExactSearcher(ids, rows, "braycurtis").search(queries.astype(np.float64), K)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def fused_catalog(folder, count: int, generator: np.random.Generator) -> dict[str, np.ndarray]:
    """A catalog of ``count`` videos with audio (24 numbers) and visual (640) vectors, through the store; returns
    each space's vectors, in id order (ids 1 to ``count``)."""
    vectors = {"audio": clustered(count, 24, generator)[0],
               "visual": clustered(count, 640, generator, non_negative=True)[0]}
    media_file = folder / "clip.mp4"
    media_file.write_bytes(b"clip")
    with Catalog.open(folder / "cat") as catalog:
        for number in range(count):
            catalog.add(NewVideo(content_hash=f"{number:064x}", source=f"video-{number}", media_file=media_file,
                                 title=f"video {number}", duration=1.0,
                                 vectors={space: (f"{space}-v1", rows[number]) for space, rows in vectors.items()}))
    return vectors


def test_a_large_spaces_pool_reads_the_saved_index_rows_not_a_float64_copy(tmp_path):
    generator = np.random.default_rng(8)
    vectors = fused_catalog(tmp_path, 700, generator)
    held = np.arange(1, 701)
    query = {space: rows[-1].astype(np.float64) + 0.01 for space, rows in vectors.items()}
    fusion = Fusion("late", {"audio": 0.5, "visual": 0.5})
    with Catalog.open(tmp_path / "cat") as catalog:
        # Before any index is saved: the catalog's float32 rows (a small catalog's would be float64).
        assert SearcherCache(min_rows=500).pool(catalog, ("audio",)).matrices["audio"].dtype == np.float32
        assert SearcherCache(min_rows=1000).pool(catalog, ("audio",)).matrices["audio"].dtype == np.float64
        first = SearcherCache(min_rows=500)
        for space in vectors:
            assert isinstance(first.searcher(catalog, space, "cosine"), FaissSearcher)  # built and saved
        # A new process's cache: both spaces mapped from the saved indexes' vectors files, the catalog's numbers.
        later = SearcherCache(min_rows=500)
        pool = later.pool(catalog, ("audio", "visual"))
        np.testing.assert_array_equal(pool.ids, held)
        for space, rows in vectors.items():
            assert isinstance(pool.matrices[space], np.memmap) and pool.matrices[space].dtype == np.float32
            np.testing.assert_array_equal(pool.matrices[space], rows)
        searchers = {space: later.searcher(catalog, space, "cosine") for space in vectors}
        # Ranking from the mapped rows: the exhaustive fusion equals the one over float64 copies, bit for bit, and
        # the shortlists find it.
        copies = Pool(ids=held, matrices={space: rows.astype(np.float64) for space, rows in vectors.items()})
        exhaustive = rank(query, pool, "cosine", fusion=fusion, k=5, exclude={700})
        reference = rank(query, copies, "cosine", fusion=fusion, k=5, exclude={700})
        np.testing.assert_array_equal(exhaustive.ids, reference.ids)
        np.testing.assert_array_equal(exhaustive.distances, reference.distances)
        assert 700 not in exhaustive.ids
        shortlisted = rank(query, pool, "cosine", fusion=fusion, k=5, exclude={700}, searchers=searchers)
        assert len(set(shortlisted.ids.tolist()) & set(reference.ids.tolist())) >= 4 and 700 not in shortlisted.ids
        for space, rows in vectors.items():  # each space's part is scipy's: from its own shortlist, or measured
            exact = ExactSearcher(held, rows, "cosine").distances(query[space])[0]
            np.testing.assert_array_equal(shortlisted.parts[space], exact[shortlisted.ids - 1])
        single = rank({"visual": query["visual"]}, later.pool(catalog, ("visual",)), "cosine",
                      searchers={"visual": searchers["visual"]})
        expected = ExactSearcher(held, vectors["visual"], "cosine").search(query["visual"], 5)
        np.testing.assert_array_equal(single.ids, expected[1][0])
