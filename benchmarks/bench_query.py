"""Query speed: rank one query against catalogs of 1k, 10k and 100k videos, exactly and with mvr's searchers.

For each catalog size, modality (audio: 136 numbers, visual: 2 x 1280, fused: both, with mvr's late fusion and
with the study's concatenation) and metric, the time of one ranking (top 5), as p50 and p95 over the queries:

* ``exact``: :func:`mvr.retrieval.search.rank` without searchers, scipy's ``cdist`` over the whole pool;
* ``mvr``: :func:`mvr.retrieval.search.rank` with each space's searcher from
  :func:`mvr.index.build.build_searcher`, as ``mvr query`` ranks: a :class:`mvr.index.faiss.FaissSearcher`
  where it applies (a FAISS shortlist, on 128 principal axes for wide vectors, reranked exactly), an exact one
  elsewhere; late fusion unites the spaces' shortlists and reranks them exactly. The searchers are shared by the
  modalities of one catalog size, as a :class:`mvr.retrieval.search.SearcherCache` shares them per space and metric.

Both run side by side in this process on the same matrices and queries, so their ratio holds on a busy machine.
mvr's answers are checked against the exact ones: recall@5 (the share of the exact top 5 found), and the
largest difference between returned distances (0 unless late fusion, whose z-score statistics are estimated; its
distances are sums of z-scores, of the order of 1).

The catalogs are made from real vectors: those of an indexed catalog (``--catalog``; by default the first 50
videos of ``bench_throughput.py``'s collection, indexed once into the benchmark cache), each bootstrapped into
many: a real vector moved part of the way towards another, plus noise of 15% of each dimension's spread (visual
numbers, which are never negative, clipped at 0). The real vectors are in every catalog; the queries are real
vectors (each left out of its own ranking) and as many new bootstrapped ones. The time to build each FAISS index
(once per catalog state, space and metric; a catalog keeps it on disk) is reported apart.
``bench_faiss.py`` measures the FAISS searchers alone at 100k and 1M rows, with index sizes and memory.

Usage::

    python benchmarks/bench_query.py [--catalog DIR] [--sizes 1000 10000 100000] [--queries 40] [--queries-large 6]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mvr.config import RuntimeSettings
from mvr.errors import DegenerateMetricError
from mvr.index.base import METRICS, Searcher
from mvr.index.build import build_searcher
from mvr.index.faiss import FaissSearcher
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.search import SearcherCache, rank
from mvr.retrieval.targets import EQUAL_WEIGHTS
from mvr.store import Catalog

GOAL_MS = 5.0
GOAL_SIZE = 10_000
GOAL_METRICS = ("euclidean", "cityblock", "cosine")
NOISE = 0.15
K = 5
MODALITIES = ("audio", "visual", "fused-late", "fused-concat")
FUSED = {"fused-late": "late", "fused-concat": "concat"}  # modality -> fusion method
SPACES = tuple(EQUAL_WEIGHTS)  # the fused spaces, in fusing order: audio, visual


def default_catalog(cache_dir: Path) -> Path:
    """bench_throughput.py's 50 videos, indexed once under mvr's cache folder."""
    folder = cache_dir / "bench" / "query-catalog"
    if not (folder / "catalog.sqlite").exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_throughput import MVR, collection

        print(f"indexing the benchmark's real videos into {folder} once...", file=sys.stderr)
        subprocess.run([*MVR, "index", str(collection(cache_dir)), "--catalog", str(folder), "--quiet"], check=True)
    return folder


def real_vectors(catalog_dir: Path) -> dict[str, np.ndarray]:
    """The catalog's audio and visual vectors of the videos that have both, float64."""
    with Catalog.open(catalog_dir, create=False) as catalog:
        pool = SearcherCache().pool(catalog, SPACES)
    return dict(pool.matrices)


def bootstrap(real: dict[str, np.ndarray], count: int, generator: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` new videos, each a real one moved towards another real one, plus per-dimension noise."""
    first, second = generator.integers(len(real["audio"]), size=(2, count))
    towards = generator.uniform(0.0, 0.5, size=(count, 1))
    made = {}
    for modality, vectors in real.items():
        moved = vectors[first] + towards * (vectors[second] - vectors[first])
        moved += NOISE * vectors.std(axis=0) * generator.standard_normal(moved.shape)
        made[modality] = np.maximum(moved, 0.0) if (vectors >= 0).all() else moved
    return made


def spaces_of(modality: str) -> tuple[str, ...]:
    return SPACES if modality in FUSED else (modality,)


def pool_of(vectors: dict[str, np.ndarray], modality: str) -> tuple[Pool, Fusion | None]:
    """The pool :meth:`mvr.retrieval.search.SearcherCache.pool` would prepare for ``modality``, and its fusion."""
    ids = np.arange(len(vectors["audio"]), dtype=np.int64)
    pool = Pool(ids=ids, matrices={space: np.ascontiguousarray(vectors[space]) for space in spaces_of(modality)})
    fusion = Fusion(FUSED[modality], weights=dict(EQUAL_WEIGHTS)) if modality in FUSED else None
    return pool, fusion


def query_of(vectors: dict[str, np.ndarray], row: int, modality: str) -> dict[str, np.ndarray]:
    return {space: vectors[space][row] for space in spaces_of(modality)}


def searcher_of(vectors: dict[str, np.ndarray], space: str, metric: str) -> tuple[Searcher, float | None]:
    """A space's searcher, as mvr builds it for a catalog (FAISS where it pays), and the seconds a FAISS index took
    to build (None for an exact searcher)."""
    matrix = np.ascontiguousarray(vectors[space])
    start = time.perf_counter()
    searcher = build_searcher(np.arange(len(matrix), dtype=np.int64), matrix, metric)
    seconds = time.perf_counter() - start
    return searcher, seconds if isinstance(searcher, FaissSearcher) else None


def timed_rank(query: dict[str, np.ndarray], pool: Pool, fusion: Fusion | None, metric: str, exclude: frozenset[int],
               searchers: dict[str, Searcher] | None) -> tuple[float, list[tuple[int, float]] | None]:
    start = time.perf_counter()
    try:
        found = rank(query, pool, metric, fusion=fusion, k=K, exclude=exclude, searchers=searchers)
    except DegenerateMetricError:
        found = None  # boolean metrics on real-valued vectors: timed all the same
    seconds = time.perf_counter() - start
    return seconds, None if found is None else list(zip(found.ids.tolist(), found.distances.tolist(), strict=True))


def measure(pool: Pool, fusion: Fusion | None, searchers: dict[str, Searcher],
            queries: list[tuple[dict[str, np.ndarray], frozenset[int]]], metric: str) -> dict:
    exact_s, mvr_s, recalls, differences = [], [], [], []
    for query, exclude in queries:
        seconds, expected = timed_rank(query, pool, fusion, metric, exclude, searchers=None)
        exact_s.append(seconds)
        seconds, got = timed_rank(query, pool, fusion, metric, exclude, searchers=searchers)
        mvr_s.append(seconds)
        if expected is not None and got is not None:
            recalls.append(len({i for i, _ in expected} & {i for i, _ in got}) / len(expected))
            truth = dict(expected)
            differences += [abs(d - truth[i]) for i, d in got if i in truth]
    return {
        "exact_p50_ms": 1e3 * float(np.percentile(exact_s, 50)),
        "exact_p95_ms": 1e3 * float(np.percentile(exact_s, 95)),
        "p50_ms": 1e3 * float(np.percentile(mvr_s, 50)),
        "p95_ms": 1e3 * float(np.percentile(mvr_s, 95)),
        "recall_at_5": float(np.mean(recalls)) if recalls else None,
        "max_distance_difference": float(max(differences)) if differences else None,
        "degenerate": not recalls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=os.environ.get("MVR_CATALOG"),
                        help="an indexed catalog whose vectors seed the synthetic ones (default: the benchmark's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=40, help="queries per size (half real, half new)")
    parser.add_argument("--queries-large", type=int, default=6,
                        help="queries per size above 10k, where one exact scan takes up to seconds")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    catalog_dir = args.catalog or default_catalog(RuntimeSettings.from_environment().cache_dir)
    real = real_vectors(catalog_dir)
    generator = np.random.default_rng(args.seed)
    results: dict[str, dict] = {}
    builds: dict[str, float] = {}
    print(f"real vectors: {len(real['audio'])} videos of {catalog_dir}; cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for size in args.sizes:
        count = args.queries if size <= GOAL_SIZE else args.queries_large
        made = bootstrap(real, size - len(real["audio"]), generator)
        vectors = {m: np.vstack([real[m], made.pop(m)]) for m in real}
        fresh = bootstrap(real, count - count // 2, generator)
        searchers: dict[tuple[str, str], Searcher] = {}  # (space, metric) -> searcher, shared by the modalities
        for modality in MODALITIES:
            pool, fusion = pool_of(vectors, modality)
            # Real queries are catalog rows, left out of their own ranking; new ones are not in the catalog.
            rows = generator.choice(len(real["audio"]), count // 2, replace=False)
            queries = [(query_of(vectors, int(r), modality), frozenset([int(r)])) for r in rows]
            queries += [(query_of(fresh, i, modality), frozenset()) for i in range(len(fresh["audio"]))]
            for metric in args.metrics:
                for space in pool.spaces:
                    if (space, metric) not in searchers:
                        searchers[space, metric], seconds = searcher_of(vectors, space, metric)
                        if seconds is not None:
                            builds[f"{size}/{space}/{metric}"] = seconds
                by_space = {space: searchers[space, metric] for space in pool.spaces}
                figures = measure(pool, fusion, by_space, queries, metric)
                results[f"{size}/{modality}/{metric}"] = figures
                print(f"{size:>7} {modality:<13} {metric:<14} exact {figures['exact_p50_ms']:8.2f} "
                      f"{figures['exact_p95_ms']:8.2f} ms   mvr {figures['p50_ms']:7.2f} {figures['p95_ms']:7.2f}"
                      f" ms   recall@5 {figures['recall_at_5'] if figures['recall_at_5'] is not None else '-'}",
                      file=sys.stderr)
            del pool
        del searchers

    print()
    print(f"{'size':>7} {'modality':<13} {'metric':<14} {'exact p50':>9} {'p95':>7} {'mvr p50':>8} {'p95':>7} "
          f"{'speed-up':>8} {'recall@5':>8} {'max dist diff':>13}")
    for key, figures in results.items():
        size, modality, metric = key.split("/")
        recall = "-" if figures["recall_at_5"] is None else f"{figures['recall_at_5']:.3f}"
        difference = figures["max_distance_difference"]
        print(f"{size:>7} {modality:<13} {metric:<14} {figures['exact_p50_ms']:>9.2f} {figures['exact_p95_ms']:>7.2f}"
              f" {figures['p50_ms']:>8.2f} {figures['p95_ms']:>7.2f}"
              f" {figures['exact_p50_ms'] / figures['p50_ms']:>7.1f}x {recall:>8}"
              f" {'-' if difference is None else f'{difference:.1e}':>13}")
    print("times in ms, one query, top 5; mvr = retrieval.search.rank with each space's searcher (FAISS where it"
          " applies);"
          " degenerate metrics (hamming, jaccard, sokalsneath on real values) are timed up to their error")
    if builds:
        print("FAISS indexes built: " + ", ".join(f"{k} {v:.2f} s" for k, v in builds.items()))
    goal = {key: figures["p50_ms"] < GOAL_MS for key, figures in results.items()
            if key.startswith(f"{GOAL_SIZE}/") and key.split("/")[2] in GOAL_METRICS}
    recall = [f["recall_at_5"] for f in results.values() if f["recall_at_5"] is not None]
    print(json.dumps({
        "catalog": str(catalog_dir),
        "real_videos": len(real["audio"]),
        "queries": {"up_to_10k": args.queries, "above_10k": args.queries_large},
        "k": K,
        "results": {key: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}
                    for key, figures in results.items()},
        "build_s": {key: round(value, 3) for key, value in builds.items()},
        "goal_p50_ms": GOAL_MS,
        "goal_met": all(goal.values()) if goal else None,
        "goal_misses": sorted(key for key, met in goal.items() if not met),
        "min_recall_at_5": min(recall) if recall else None,
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
