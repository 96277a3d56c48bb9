"""The searchers: FAISS's shortlist-and-rerank answers against the exact scan, fused search at scale, and the
catalog's saved index (reopened, following added videos, rebuilt when stale)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mvr.index import faiss as faiss_index
from mvr.index.base import top_k
from mvr.index.build import FAISS_MIN_ROWS, build_searcher, reindex
from mvr.index.exact import ExactSearcher
from mvr.index.faiss import FaissSearcher
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.projection import fit_lda
from mvr.retrieval import search as search_module
from mvr.retrieval.search import SearcherCache, rank
from mvr.store import Catalog, NewVideo

ROWS = FAISS_MIN_ROWS
SOURCE = Path(__file__).resolve().parents[1] / "src"
AUDIO_DIMS, VISUAL_DIMS = 24, 640


def clustered(rows: int, dims: int, generator: np.random.Generator, non_negative: bool = False) -> np.ndarray:
    """Rows around 40 centres of random spreads, with a decaying spectrum: nearest neighbours are meaningful.

    The numbers are float32 ones (as a catalog stores them), held as float64: the exact scan and the FAISS
    searcher's rerank then see the same values, and their distances can be compared bit for bit.
    """
    scales = 1.0 / np.sqrt(1.0 + np.arange(dims))
    centres = generator.normal(size=(40, dims)) * scales * 4
    found = centres[generator.integers(40, size=rows)] + generator.normal(size=(rows, dims)) * scales
    return (np.abs(found) if non_negative else found).astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    generator = np.random.default_rng(11)
    return {"audio": clustered(ROWS + 30, AUDIO_DIMS, generator),
            "visual": clustered(ROWS + 30, VISUAL_DIMS, generator, non_negative=True)}


IDS = np.arange(10, 10 + ROWS, dtype=np.int64)


@pytest.mark.parametrize("space,metric", [("visual", "euclidean"), ("visual", "cosine"), ("visual", "correlation"),
                                          ("audio", "cityblock"), ("audio", "braycurtis")])
def test_faiss_ranking_equals_the_exact_one(vectors: dict[str, np.ndarray], space: str, metric: str) -> None:
    matrix = vectors[space][:ROWS]
    searcher = build_searcher(IDS, matrix, metric)
    assert isinstance(searcher, FaissSearcher)
    queries = vectors[space][ROWS:]  # not in the catalog
    got = searcher.search(queries, 5)
    expected = ExactSearcher(IDS, matrix, metric).search(queries, 5)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])  # scipy's distances, bit for bit


def test_the_query_is_left_out_of_its_own_ranking(vectors: dict[str, np.ndarray]) -> None:
    matrix = vectors["visual"][:ROWS]
    itself = int(IDS[7])
    searcher = build_searcher(IDS, matrix, "euclidean")
    got = searcher.search(matrix[7], 5, exclude=[{itself}])
    assert itself not in got[1][0]
    expected = ExactSearcher(IDS, matrix, "euclidean").search(matrix[7], 5, exclude=[{itself}])
    np.testing.assert_array_equal(got[1], expected[1])
    # One exclusion per query, in one call.
    both = searcher.search(matrix[[7, 8]], 5, exclude=[{itself}, set()])
    assert itself not in both[1][0] and both[1][1][0] == IDS[8]


def test_rows_are_padded_when_fewer_than_k_have_a_distance() -> None:
    found, ids = top_k(np.array([[0.5, np.nan, 0.1]]), np.array([3, 4, 5]), 4)
    assert ids.tolist() == [[5, 3, -1, -1]] and np.isinf(found[0, 2:]).all()
    found, ids = top_k(np.array([[0.5, 0.1], [0.2, np.inf]]), np.array([[3, 4], [6, 5]]), 2)  # ids per row
    assert ids.tolist() == [[4, 3], [6, -1]]


@pytest.mark.parametrize("projected", [False, True], ids=["stored", "audio-projected"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_fused_search_at_scale_finds_the_exhaustive_neighbours(vectors: dict[str, np.ndarray], metric: str,
                                                               projected: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The searchers' scale samples hold every row here: the shortlist's scores are then the exhaustive ones.
    monkeypatch.setattr(faiss_index, "SCALE_SAMPLE_ROWS", ROWS)
    pool = Pool(ids=np.arange(ROWS, dtype=np.int64),
                matrices={space: matrix[:ROWS] for space, matrix in vectors.items()})
    searchers = {space: build_searcher(pool.ids, matrix, metric) for space, matrix in pool.matrices.items()}
    assert all(isinstance(searcher, FaissSearcher) for searcher in searchers.values())
    # A tuned catalog's audio space in its learned projection: shortlisted on the stored vectors, ranked projected.
    labels = np.argmax(pool.matrices["audio"][:, 5:9], axis=1).astype(str)
    projections = {"audio": fit_lda(pool.matrices["audio"], labels)} if projected else {}
    fusion = Fusion("late", {"audio": 0.5, "visual": 0.5}, projections=projections)
    found, total = 0, 0
    for row in range(ROWS, ROWS + 10):
        query = {space: matrix[row] for space, matrix in vectors.items()}
        expected = rank(query, pool, metric, fusion=fusion, k=5)
        got = rank(query, pool, metric, fusion=fusion, k=5, searchers=searchers)
        found += len(set(got.ids.tolist()) & set(expected.ids.tolist()))
        total += 5
        # The shortlist's scores use each space's scale estimated on a sample of the catalog (here all of it), in
        # float32 where the metric allows it.
        same = np.isin(got.ids, expected.ids)
        reference = dict(zip(expected.ids.tolist(), expected.distances.tolist()))
        for video_id, score in zip(got.ids[same].tolist(), got.distances[same].tolist()):
            assert score == pytest.approx(reference[video_id], rel=1e-6)
        assert set(got.parts) == {"audio", "visual"}
    assert found / total >= 0.95


@pytest.mark.parametrize("agreeing", [True, False], ids=["spaces-agree", "spaces-disagree"])
def test_fused_shortlists_grow_only_while_an_unseen_video_could_rank(agreeing: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Each video's two spaces seen from one latent vector (its neighbours are the same in both), or the visual
    # ones dealt to other videos (its neighbours differ).
    generator = np.random.default_rng(12)
    latent = generator.normal(size=(ROWS + 10, 8))
    spaces = {"audio": latent @ generator.normal(size=(8, AUDIO_DIMS)),
              "visual": np.abs(latent @ generator.normal(size=(8, VISUAL_DIMS)))}
    if not agreeing:
        spaces["visual"] = spaces["visual"][generator.permutation(ROWS + 10)]
    spaces = {space: rows.astype(np.float32).astype(np.float64) for space, rows in spaces.items()}
    pool = Pool(ids=IDS, matrices={space: rows[:ROWS] for space, rows in spaces.items()})
    searchers = {space: build_searcher(IDS, matrix, "cosine") for space, matrix in pool.matrices.items()}
    asked: list[int] = []
    for searcher in searchers.values():
        monkeypatch.setattr(searcher, "search", lambda q, k, *, exclude=None, _search=searcher.search:
                            asked.append(k) or _search(q, k, exclude=exclude))
    fusion = Fusion("late", {"audio": 0.5, "visual": 0.5})
    grew, same = 0, 0
    for row in range(ROWS, ROWS + 10):
        query = {space: rows[row] for space, rows in spaces.items()}
        asked.clear()
        got = rank(query, pool, "cosine", fusion=fusion, k=5, searchers=searchers)
        grew += max(asked) > search_module._FUSED_FIRST
        with monkeypatch.context() as longest:  # the longest shortlists from the start: the union of old
            longest.setattr(search_module, "_FUSED_FIRST", search_module._FUSED_SHORTLIST)
            whole = rank(query, pool, "cosine", fusion=fusion, k=5, searchers=searchers)
        if np.array_equal(got.ids, whole.ids):
            same += 1
            # The same videos get the same scores and the same measured parts, whatever the shortlists' length.
            np.testing.assert_array_equal(got.distances, whole.distances)
            for space in fusion.weights:
                np.testing.assert_array_equal(got.parts[space], whole.parts[space])
    assert same >= 9  # an approximate shortlist may still differ at its end
    # Where the spaces agree the first shortlists settle most queries; where they differ they must grow.
    assert grew <= 2 if agreeing else grew >= 8


@pytest.mark.parametrize("metric", ["cosine", "correlation", "euclidean"])
def test_scale_sample_distances_in_float32_are_scipys_to_rounding(vectors: dict[str, np.ndarray], metric: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss_index, "SCALE_SAMPLE_ROWS", ROWS)  # every row, the one without a direction too
    # Far from the origin, as a space's numbers can be: a float32 |r|^2 - 2 r.q + |q|^2 would cancel away.
    matrix = vectors["visual"][:ROWS] + 1000.0
    matrix[7] = 0.0
    searcher = build_searcher(IDS, matrix, metric)
    sample_rows = searcher.sample()[1]
    for query in vectors["visual"][ROWS:ROWS + 3] + 1000.0:
        estimated = search_module._estimate_sample_distances(searcher, metric, query)
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = cdist(query[None], sample_rows, metric)[0]
        np.testing.assert_array_equal(np.isnan(estimated), np.isnan(expected))
        np.testing.assert_allclose(estimated, expected, rtol=1e-5, atol=1e-6)
    # Prepared once for this searcher's sample, and reused by every later query.
    assert search_module._prepared_samples[searcher][metric][0] is sample_rows


def test_metrics_without_an_index_and_small_sets_are_scanned(vectors) -> None:
    matrix = vectors["visual"][:ROWS]
    assert isinstance(build_searcher(IDS, matrix, "canberra"), ExactSearcher)  # wide: the axes do not keep it
    assert isinstance(build_searcher(IDS, vectors["audio"][:ROWS], "hamming"), ExactSearcher)  # boolean
    assert isinstance(build_searcher(IDS[: ROWS // 2], matrix[: ROWS // 2], "euclidean"), ExactSearcher)
    assert isinstance(build_searcher(IDS, matrix, "cosine", exact=True), ExactSearcher)


def test_undecidable_shortlists_fall_back_to_the_full_scan() -> None:
    matrix = np.ones((ROWS, VISUAL_DIMS))
    matrix[0] = 0.0  # a row without a direction: its cosine distance is undefined
    searcher = build_searcher(IDS, matrix, "euclidean")
    exact = ExactSearcher(IDS, matrix, "euclidean")
    # Every distance ties: the nearest are the lowest ids, which the shortlist need not hold; a zero query.
    for query in (matrix[1] * 2, np.zeros(VISUAL_DIMS)):
        np.testing.assert_array_equal(searcher.search(query, 5)[1], exact.search(query, 5)[1])
    few = np.zeros((ROWS, VISUAL_DIMS))
    few[-3:] = np.random.default_rng(3).normal(size=(3, VISUAL_DIMS))  # only 3 rows have a cosine distance
    got = build_searcher(IDS, few, "cosine").search(np.ones(VISUAL_DIMS), 5)
    expected = ExactSearcher(IDS, few, "cosine").search(np.ones(VISUAL_DIMS), 5)
    np.testing.assert_array_equal(got[1], expected[1])
    assert (got[1][0] >= 0).sum() == 3


# The catalog's saved index ----------------------------------------------------------------------------------------


def add_videos(catalog: Catalog, folder: Path, audio: np.ndarray, *, extractor: str = "a-v1") -> None:
    media_file = folder / "clip.mp4"
    media_file.write_bytes(b"clip")
    start = len(catalog)
    for number, vector in enumerate(audio, start=start):
        catalog.add(NewVideo(content_hash=f"{number:064x}", source=f"clip-{number}", media_file=media_file,
                             title=f"clip {number}", duration=1.0, vectors={"audio": (extractor, vector)}))


CATALOG_ROWS = 600  # videos of the test catalogs: their caches keep an index from 500 on (a flat one at this size)


def cache() -> SearcherCache:
    return SearcherCache(min_rows=500)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return clustered(CATALOG_ROWS + 80, AUDIO_DIMS, np.random.default_rng(12))


@pytest.fixture(scope="module")
def catalog_template(tmp_path_factory: pytest.TempPathFactory, audio: np.ndarray) -> Path:
    """A catalog of ``CATALOG_ROWS`` videos with audio vectors, made once (each test copies it)."""
    folder = tmp_path_factory.mktemp("template")
    with Catalog.open(folder / "cat") as catalog:
        add_videos(catalog, folder, audio[:CATALOG_ROWS])
    return folder / "cat"


@pytest.fixture
def catalog_dir(tmp_path: Path, catalog_template: Path) -> Path:
    return Path(shutil.copytree(catalog_template, tmp_path / "cat"))


def test_the_saved_index_is_reopened_and_follows_added_videos(catalog_dir: Path, audio: np.ndarray) -> None:
    queries = audio[-10:]
    with Catalog.open(catalog_dir) as catalog:
        first = cache().searcher(catalog, "audio", "euclidean")
        assert isinstance(first, FaissSearcher)
        folder = catalog.index_folder("audio", "euclidean")
        assert FaissSearcher.saved_meta(folder) == {"generation": CATALOG_ROWS, "extractor": "a-v1",
                                                    "metric": "euclidean"}
        # Another process (a new cache) loads what was saved: its vectors mapped from the folder, same answers.
        reopened = cache().searcher(catalog, "audio", "euclidean")
        assert reopened is not first and isinstance(reopened._rows.segments[0], np.memmap)
        np.testing.assert_array_equal(reopened.search(queries, 5)[1], first.search(queries, 5)[1])
        # Videos added: the saved index takes their rows (one more segment), and finds them.
        add_videos(catalog, catalog_dir.parent, audio[CATALOG_ROWS:CATALOG_ROWS + 40])
        grown = cache().searcher(catalog, "audio", "euclidean")
        assert len(grown) == CATALOG_ROWS + 40 and len(grown._rows.segments) == 2
        assert FaissSearcher.saved_meta(folder)["generation"] == CATALOG_ROWS + 40
        held, added = np.arange(1, CATALOG_ROWS + 41), audio[CATALOG_ROWS:CATALOG_ROWS + 40]
        expected = ExactSearcher(held, audio[:CATALOG_ROWS + 40], "euclidean").search(added, 5)
        got = grown.search(added, 5)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])


def test_threads_asking_at_once_share_one_build(catalog_dir: Path) -> None:
    shared = cache()

    def ask(_: int) -> FaissSearcher:
        with Catalog.open(catalog_dir) as catalog:  # a connection per thread, as the web service has
            return shared.searcher(catalog, "audio", "cityblock")

    with ThreadPoolExecutor(4) as threads:
        found = list(threads.map(ask, range(4)))
    assert isinstance(found[0], FaissSearcher) and all(searcher is found[0] for searcher in found)


def test_a_stale_or_foreign_index_is_rebuilt_never_used(catalog_dir: Path, audio: np.ndarray) -> None:
    with Catalog.open(catalog_dir) as catalog:
        cache().searcher(catalog, "audio", "cosine")
        folder = catalog.index_folder("audio", "cosine")
    # Another extractor's index under the same name (vectors of another catalog): never loaded, built again.
    foreign = FaissSearcher.build(np.arange(1, CATALOG_ROWS + 1), -audio[:CATALOG_ROWS], "cosine")
    foreign.save(folder, meta={"generation": CATALOG_ROWS, "extractor": "a-v0"})
    with Catalog.open(catalog_dir) as catalog:
        rebuilt = cache().searcher(catalog, "audio", "cosine")
        held = np.arange(1, CATALOG_ROWS + 1)
        expected = ExactSearcher(held, audio[:CATALOG_ROWS], "cosine").search(audio[-5:], 5)
        np.testing.assert_array_equal(rebuilt.search(audio[-5:], 5)[1], expected[1])
        assert FaissSearcher.saved_meta(folder)["extractor"] == "a-v1"
    # The right extractor at another generation, holding ids the catalog does not have: they are never returned.
    stale = FaissSearcher.build(np.arange(1, CATALOG_ROWS + 1) + 10**6, audio[:CATALOG_ROWS], "cosine")
    stale.save(folder, meta={"generation": 3, "extractor": "a-v1"})
    with Catalog.open(catalog_dir) as catalog:
        rebuilt = cache().searcher(catalog, "audio", "cosine")
        np.testing.assert_array_equal(rebuilt.ids, np.arange(1, CATALOG_ROWS + 1))
        np.testing.assert_array_equal(rebuilt.search(audio[-5:], 5)[1], expected[1])
        assert FaissSearcher.saved_meta(folder)["generation"] == CATALOG_ROWS


def test_reindex_rebuilds_the_saved_indexes(catalog_dir: Path) -> None:
    with Catalog.open(catalog_dir) as catalog:
        cache().searcher(catalog, "audio", "euclidean")
        before = (catalog.index_folder("audio", "euclidean") / "index.faiss").stat().st_ino
        done = reindex(catalog, min_rows=500, metrics={"audio": {"cosine"}})
        # The saved euclidean index, the audio default (braycurtis) and the one asked for, each built again.
        assert {(item.space, item.metric, item.rows) for item in done} == {
            ("audio", "braycurtis", CATALOG_ROWS), ("audio", "cosine", CATALOG_ROWS),
            ("audio", "euclidean", CATALOG_ROWS)}
        assert (catalog.index_folder("audio", "euclidean") / "index.faiss").stat().st_ino != before
        assert FaissSearcher.saved_meta(catalog.index_folder("audio", "braycurtis"))["generation"] == CATALOG_ROWS


def test_faiss_is_loaded_only_to_rank_a_large_catalog() -> None:
    # A new interpreter: this one has imported faiss for the other tests.
    code = "\n".join(["import sys", "import numpy as np", "import mvr.cli.commands, mvr.retrieval.search",
                      "from mvr.index.build import build_searcher",
                      "build_searcher(np.arange(10), np.ones((10, 3)), 'cosine')  # a small catalog: exact",
                      "assert 'faiss' not in sys.modules"])
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SOURCE)})
