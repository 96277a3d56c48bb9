"""FAISS searcher at scale: per-query latency, recall@5 against the exact scan, index size, build time, peak memory.

Synthetic catalogs in ``bench_query.py``'s style (each row a seed vector moved part of the way towards another,
plus noise of 15% of each dimension's spread), from synthetic seeds, so that no indexed catalog is needed: audio
136 numbers (8 clusters of seeds, braycurtis, mvr's audio default), visual 2,560 non-negative numbers (low-rank,
like CNN features; cosine), and fused late fusion over both (cosine, mvr's fused default), ranked by
:func:`mvr.retrieval.search.rank` with each space's searcher, as ``mvr query`` does: each space's shortlist, the
union reranked with exact distances and z-scores from each searcher's fixed sample of the catalog (saved with its
index), the rows read from the saved indexes' memory-mapped float32 vectors files. The reference is the exact
scan: scipy's ``cdist`` over every row (for fused, the exhaustive late fusion as ``rank`` without searchers
computes it, over the same mapped rows, a batch of queries a pass).

Each space's searcher is built as :func:`mvr.index.build.build_searcher` builds it, saved, and loaded again, so that
its rerank reads the memory-mapped vectors file as a reopened catalog's does; the generated rows are freed first,
as a server holds none. Timed per query: one query a call, first right after the load (``cold_p50``/``cold_p95``:
the pages of the vectors file the build's writes left in memory, the rest on disk), then as a server that has run
a while (``p50``/``p95``): the vectors files read through once and as many other queries answered first, and all
queries in one call (``batch``: FAISS searches them together; the time per query).

Usage::

    python benchmarks/bench_faiss.py [--sizes 100000] [--spaces audio visual] [--queries 30] [--threads 1]
        [--no-fused] [--wide-shortlist 2] [--wide-kind auto|flat|hnsw|ivf]

``--sizes 1000000 --spaces audio --no-fused`` measures 1M audio rows (about 2 GB of memory). The last line printed
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from scipy.spatial.distance import cdist

from mvr.index import faiss as faiss_index
from mvr.index.faiss import FaissSearcher
from mvr.retrieval.fusion import Fusion, Pool, distances
from mvr.retrieval.search import rank

K = 5
NOISE = 0.15
SPACES = {"audio": (136, "braycurtis", False), "visual": (2560, "cosine", True)}
FUSED_METRIC = "cosine"


def seeds(dims: int, non_negative: bool, generator: np.random.Generator) -> np.ndarray:
    """50 seed vectors: clustered (audio-like), or low-rank and non-negative (visual-like)."""
    if non_negative:
        return np.maximum(generator.standard_normal((50, 48)) @ generator.standard_normal((48, dims)) / 7, 0)
    centres = generator.standard_normal((8, dims))
    return centres[generator.integers(8, size=50)] + 0.6 * generator.standard_normal((50, dims))


def bootstrap(seed: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray], generator: np.random.Generator,
              chunk: int = 50_000) -> np.ndarray:
    """float32 rows ``seed[a] + t (seed[b] - seed[a]) + noise``, made in chunks (bounds the float64 temporaries)."""
    first, second, towards = pairs
    out = np.empty((first.size, seed.shape[1]), dtype=np.float32)
    spread = NOISE * seed.std(axis=0)
    for start in range(0, first.size, chunk):
        a, b, t = first[start:start + chunk], second[start:start + chunk], towards[start:start + chunk]
        moved = seed[a] + t[:, None] * (seed[b] - seed[a]) + spread * generator.standard_normal((a.size, seed.shape[1]))
        out[start:start + chunk] = np.maximum(moved, 0) if (seed >= 0).all() else moved
    return out


def exact_distances(queries: np.ndarray, rows: np.ndarray, metric: str, chunk: int = 50_000) -> np.ndarray:
    """float64 ``(q, n)``: scipy over every row, a chunk of float64 rows at a time."""
    return np.hstack([cdist(queries, rows[s:s + chunk].astype(np.float64), metric)
                      for s in range(0, rows.shape[0], chunk)])


def exhaustive_fused(queries: dict[str, np.ndarray], pool: Pool, fusion: Fusion, batch: int = 25) -> list[np.ndarray]:
    """Each query's top ``K`` by the exhaustive late fusion, as :func:`mvr.retrieval.search.rank` ranks without
    searchers (every distance by scipy, z-scores over the whole pool, ties by id), ``batch`` queries a pass over
    the mapped rows."""
    count = len(next(iter(queries.values())))
    found = []
    for start in range(0, count, batch):
        total = distances({space: rows[start:start + batch] for space, rows in queries.items()}, pool, FUSED_METRIC,
                          fusion).total
        found.extend(pool.ids[np.lexsort((pool.ids, np.where(np.isfinite(row), row, np.inf)))[:K]] for row in total)
    return found


def recall(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(e.tolist()) & set(g.tolist())) / len(e) for e, g in zip(expected, got)]))


def timed(function, count: int) -> tuple[list, float, float]:
    seconds, answers = [], []
    for i in range(count):
        start = time.perf_counter()
        answers.append(function(i))
        seconds.append(time.perf_counter() - start)
    return answers, 1e3 * float(np.percentile(seconds, 50)), 1e3 * float(np.percentile(seconds, 95))


def read_through(folder: str) -> None:
    """Read the saved vectors files once, in order: a server that has run a while has them in the page cache (if
    memory allows), where the first queries after a build may find them on disk."""
    for name in sorted(os.listdir(folder)):
        if name.startswith("vectors"):
            with open(os.path.join(folder, name), "rb") as handle:
                while handle.read(64 << 20):
                    pass


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mib(folder: str, prefix: str) -> float:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(prefix)) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--spaces", nargs="+", choices=tuple(SPACES), default=list(SPACES))
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-fused", action="store_true", help="skip the fused search (it needs both spaces)")
    parser.add_argument("--wide-shortlist", type=int, default=faiss_index.WIDE_SHORTLIST,
                        help="an experiment: wide vectors rerank this many times the shortlist")
    parser.add_argument("--wide-kind", choices=faiss_index.KINDS, default="auto",
                        help="an experiment: the FAISS index of the visual space")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faiss_index.WIDE_SHORTLIST = args.wide_shortlist
    results: dict[str, dict] = {}
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    for size in args.sizes:
        generator = np.random.default_rng(args.seed)
        pairs = (generator.integers(50, size=size), generator.integers(50, size=size), generator.uniform(0, .5, size))
        qpairs = (generator.integers(50, size=args.queries), generator.integers(50, size=args.queries),
                  generator.uniform(0, .5, args.queries))
        # Other queries, answered once before the timed ones: a server that has run a while (a generator of their
        # own, so that the catalog and the timed queries are those of earlier runs).
        warm_generator = np.random.default_rng([args.seed, 2])
        warm_pairs = (warm_generator.integers(50, size=args.queries), warm_generator.integers(50, size=args.queries),
                      warm_generator.uniform(0, .5, args.queries))
        ids = np.arange(size, dtype=np.int64)
        built, folders, queries, warmups = {}, {}, {}, {}
        for space in args.spaces:
            dims, metric, non_negative = SPACES[space]
            seed = seeds(dims, non_negative, generator)
            rows = bootstrap(seed, pairs, generator)
            queries[space] = bootstrap(seed, qpairs, generator).astype(np.float64)
            warmups[space] = bootstrap(seed, warm_pairs, warm_generator).astype(np.float64)
            start = time.perf_counter()
            searcher = FaissSearcher.build(ids, rows, metric, threads=args.threads,
                                           kind=args.wide_kind if non_negative else "auto")
            build_s = time.perf_counter() - start
            folder = tempfile.mkdtemp(prefix=f"bench-faiss-{space}-")
            searcher.save(folder, meta={})
            folders[space] = folder
            expected = np.argsort(exact_distances(queries[space], rows, metric), axis=1, kind="stable")[:, :K]
            # A server holds the index and maps the vectors file, not the generated matrix: freeing it leaves the
            # page cache room for the file (a 1M visual one is 10 GB), as on a server.
            del rows, searcher
            searcher = FaissSearcher.load(folder, threads=args.threads)
            _, cold_p50, cold_p95 = timed(lambda i: searcher.search(queries[space][i:i + 1], K)[1][0], args.queries)
            read_through(folder)
            timed(lambda i: searcher.search(warmups[space][i:i + 1], K), args.queries)
            answers, p50, p95 = timed(lambda i: searcher.search(queries[space][i:i + 1], K)[1][0], args.queries)
            start = time.perf_counter()
            batch = searcher.search(queries[space], K)[1]
            batch_ms = 1e3 * (time.perf_counter() - start) / args.queries
            results[f"{size}/{space}"] = {
                "metric": metric, "kind": searcher.kind, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                "cold_p50_ms": round(cold_p50, 3), "cold_p95_ms": round(cold_p95, 3),
                "batch_ms_per_query": round(batch_ms, 3), "recall_at_5": recall(expected, np.array(answers)),
                "batch_recall_at_5": recall(expected, batch), "index_mib": round(searcher.nbytes / 2**20, 1),
                "vectors_file_mib": round(folder_mib(folder, "vectors"), 1), "build_s": round(build_s, 1),
                "peak_rss_mib": round(peak_rss_mib()),
            }
            built[space] = searcher
            print(size, space, results[f"{size}/{space}"], file=sys.stderr, flush=True)
        if not args.no_fused and len(built) == len(SPACES):
            # The pool maps each saved index's float32 vectors file, as SearcherCache.pool does for a large catalog:
            # the shortlists' rerank reads their rows, the exhaustive reference scans it in chunks.
            pool = Pool(ids=ids, matrices={space: FaissSearcher.load_vectors(folders[space])[1] for space in SPACES})
            fusion = Fusion("late", {space: 0.5 for space in SPACES})
            searchers = {space: FaissSearcher.load(folders[space], threads=args.threads)
                         for space in SPACES}
            del built
            for space, searcher in searchers.items():
                if searcher.metric != FUSED_METRIC:  # the fused default metric: cosine in both spaces
                    searchers[space] = FaissSearcher.build(ids, pool.matrices[space], FUSED_METRIC,
                                                           threads=args.threads)

            def fused(i: int, asked: dict[str, np.ndarray] = queries) -> np.ndarray:
                query = {space: asked[space][i] for space in SPACES}
                return rank(query, pool, FUSED_METRIC, fusion=fusion, k=K, searchers=searchers).ids

            expected = exhaustive_fused(queries, pool, fusion)
            timed(lambda i: fused(i, warmups), args.queries)
            answers, p50, p95 = timed(fused, args.queries)
            results[f"{size}/fused"] = {
                "metric": FUSED_METRIC, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                "recall_at_5": recall(np.array(expected), np.array(answers)),
                "top5_differs": float(np.mean([set(e.tolist()) != set(g.tolist())
                                               for e, g in zip(expected, answers)])),
                "peak_rss_mib": round(peak_rss_mib()),
            }
            print(size, "fused", results[f"{size}/fused"], file=sys.stderr, flush=True)
        for folder in folders.values():  # a 1M visual folder holds 10 GB
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"results": results, "queries": args.queries, "threads": args.threads, "k": K,
                      "wide_shortlist": args.wide_shortlist, "load_average_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
