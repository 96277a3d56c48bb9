"""Query speed: rank one query against catalogs of 1k, 10k and 100k videos, exactly and with compact vectors.

For each catalog size, modality (audio: 136 numbers, visual: 2 x 1280, fused: both, with mvr's late fusion and
with the study's concatenation) and metric, the time of one ranking (top 5), as p50 and p95 over the queries:

* ``exact``: :func:`mvr.search.rank` with ``exact=True``, scipy's ``cdist`` over the whole prepared matrix;
* ``compact``: :func:`mvr.search.rank`, which answers from :class:`mvr.vectorindex.VectorIndex` where it can
  (a shortlist from 128 principal components, reranked exactly) and falls back to the exact scan elsewhere.

Both run side by side in this process on the same matrices and queries, so their ratio holds on a busy machine.
The compact answers are checked against the exact ones: recall@5 (the share of the exact top 5 found), and the
largest difference between returned distances (0 unless late fusion, whose z-score statistics are estimated; its
distances are sums of z-scores, of the order of 1).

The catalogs are made from real vectors: those of an indexed catalog (``--catalog``; by default the first 50
videos of ``bench_throughput.py``'s collection, indexed once into the benchmark cache), each bootstrapped into
many: a real vector moved part of the way towards another, plus noise of 15% of each dimension's spread (visual
numbers, which are never negative, clipped at 0). The real vectors are in every catalog; the queries are real
vectors (each left out of its own ranking) and as many new bootstrapped ones. The time to build the compact
vectors (once per catalog state and metric family) is reported apart.

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

from mvr import dataset
from mvr.catalog import Catalog
from mvr.errors import DegenerateMetricError
from mvr.search import FUSION_WEIGHTS, METRICS, Block, Candidates, rank
from mvr.vectorindex import COMPACT_METRICS

GOAL_MS = 5.0
GOAL_SIZE = 10_000
GOAL_METRICS = ("euclidean", "cityblock", "cosine")
NOISE = 0.15
K = 5
MODALITIES = ("audio", "visual", "fused-late", "fused-concat")


def default_catalog() -> Path:
    """bench_throughput.py's 50 videos, indexed once."""
    folder = dataset.cache_root() / "bench" / "query-catalog"
    if not (folder / "catalog.sqlite").exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_throughput import collection

        print(f"indexing the benchmark's real videos into {folder} once...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "mvr.cli", "index", str(collection()), "--catalog", str(folder),
                        "--quiet"], check=True)
    return folder


def real_vectors(catalog_dir: Path) -> dict[str, np.ndarray]:
    """The catalog's audio and visual vectors of the videos that have both, float64."""
    with Catalog.open(catalog_dir, create=False) as catalog:
        audio, visual = catalog.matrix("audio"), catalog.matrix("visual")
    ids, in_audio, in_visual = np.intersect1d(audio.ids, visual.ids, return_indices=True)
    return {"audio": audio.vectors[in_audio].astype(np.float64), "visual": visual.vectors[in_visual].astype(np.float64)}


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


def pool_of(vectors: dict[str, np.ndarray], modality: str) -> Candidates:
    """The candidates :func:`mvr.search.candidates` would prepare for ``modality``."""
    ids = np.arange(len(vectors["audio"]), dtype=np.int64)
    if modality in ("audio", "visual"):
        return Candidates(ids=ids, matrix=np.ascontiguousarray(vectors[modality]))
    matrix = np.hstack([vectors["audio"], vectors["visual"]])
    width = vectors["audio"].shape[1]
    blocks = () if modality == "fused-concat" else (
        Block("audio", slice(0, width), FUSION_WEIGHTS["audio"]),
        Block("visual", slice(width, matrix.shape[1]), FUSION_WEIGHTS["visual"]),
    )
    return Candidates(ids=ids, matrix=matrix, blocks=blocks)


def query_of(vectors: dict[str, np.ndarray], row: int, modality: str) -> np.ndarray:
    if modality in ("audio", "visual"):
        return vectors[modality][row]
    return np.concatenate([vectors["audio"][row], vectors["visual"][row]])


def timed_rank(query: np.ndarray, pool: Candidates, metric: str, exclude: frozenset[int],
               exact: bool) -> tuple[float, list[tuple[int, float]] | None]:
    start = time.perf_counter()
    try:
        found = rank(query, pool, metric, k=K, exclude=exclude, exact=exact)
    except DegenerateMetricError:
        found = None  # boolean metrics on real-valued vectors: timed all the same
    return time.perf_counter() - start, found


def measure(pool: Candidates, queries: list[tuple[np.ndarray, frozenset[int]]], metric: str) -> dict:
    exact_s, compact_s, recalls, differences = [], [], [], []
    for query, exclude in queries:
        seconds, expected = timed_rank(query, pool, metric, exclude, exact=True)
        exact_s.append(seconds)
        seconds, got = timed_rank(query, pool, metric, exclude, exact=False)
        compact_s.append(seconds)
        if expected is not None and got is not None:
            recalls.append(len({i for i, _ in expected} & {i for i, _ in got}) / len(expected))
            truth = dict(expected)
            differences += [abs(d - truth[i]) for i, d in got if i in truth]
    return {
        "exact_p50_ms": 1e3 * float(np.percentile(exact_s, 50)),
        "exact_p95_ms": 1e3 * float(np.percentile(exact_s, 95)),
        "p50_ms": 1e3 * float(np.percentile(compact_s, 50)),
        "p95_ms": 1e3 * float(np.percentile(compact_s, 95)),
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

    catalog_dir = args.catalog or default_catalog()
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
        for modality in MODALITIES:
            pool = pool_of(vectors, modality)
            # Real queries are catalog rows, left out of their own ranking; new ones are not in the catalog.
            rows = generator.choice(len(real["audio"]), count // 2, replace=False)
            queries = [(query_of(vectors, int(r), modality), frozenset([int(r)])) for r in rows]
            queries += [(query_of(fresh, i, modality), frozenset()) for i in range(len(fresh["audio"]))]
            for metric in args.metrics:
                if metric in COMPACT_METRICS and pool.index.supports(metric):
                    start = time.perf_counter()
                    pool.index.prepare(metric)
                    builds[f"{size}/{modality}/{metric}"] = time.perf_counter() - start
                figures = measure(pool, queries, metric)
                results[f"{size}/{modality}/{metric}"] = figures
                print(f"{size:>7} {modality:<13} {metric:<14} exact {figures['exact_p50_ms']:8.2f} "
                      f"{figures['exact_p95_ms']:8.2f} ms   compact {figures['p50_ms']:7.2f} {figures['p95_ms']:7.2f}"
                      f" ms   recall@5 {figures['recall_at_5'] if figures['recall_at_5'] is not None else '-'}",
                      file=sys.stderr)
            del pool

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
    print("times in ms, one query, top 5; mvr = search.rank's default (compact vectors where they apply);"
          " degenerate metrics (hamming, jaccard, sokalsneath on real values) are timed up to their error")
    if builds:
        print("compact vectors built on first use: " + ", ".join(f"{k} {v:.2f} s" for k, v in builds.items()))
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
