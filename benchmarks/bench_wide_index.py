"""Which FAISS index to put over the projections of wide (visual) vectors: recall@5 after the exact rerank.

The rows are ``bench_faiss.py``'s synthetic visual ones (2,560 non-negative numbers, cosine), with the same seed,
so that its figures and these agree. Each is projected as :class:`mvr.index.faiss.FaissSearcher` projects it (its
principal axes fitted on 2,048 rows, and each row's residual), and each index's shortlist of ``R`` rows is ranked
again with scipy's exact cosine: recall@5 against the exact top 5 of every row, and the time of one query's
shortlist (one thread). Compared: a flat scan of the projections (the best any index over them can do, for
``--ranks`` axes), an HNSW graph (``M`` 16, efConstruction 80, efSearch ``R``; ``mvr.index.faiss``'s recipe)
and inverted files of the projections with ``--lists`` lists.

Usage::

    python benchmarks/bench_wide_index.py [--rows 1000000] [--queries 30] [--ranks 127 255] [--lists 1024 4096]

About 14 GB of memory at 1M rows (the generated matrix and its unit rows). One JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_faiss import K, bootstrap, exact_distances, seeds  # noqa: E402  (a sibling script: the same rows)

from mvr.index.faiss import HNSW_EF_CONSTRUCTION, HNSW_M, IVF_TRAIN_PER_LIST, _Projection, _transform  # noqa: E402

CHUNK = 65_536


def reranked_recall(shortlists: np.ndarray, exact: np.ndarray, expected: np.ndarray) -> float:
    """recall@5 of each shortlist ``(q, R)`` ranked by the exact distances ``(q, n)``, ties by id."""
    found = []
    for row, shortlist in enumerate(shortlists):
        shortlist = shortlist[shortlist >= 0]
        top = shortlist[np.lexsort((shortlist, exact[row, shortlist]))[:K]]
        found.append(len(set(top.tolist()) & set(expected[row].tolist())) / K)
    return float(np.mean(found))


def per_query_ms(index: faiss.Index, queries: np.ndarray, size: int, params: faiss.SearchParameters) -> float:
    start = time.perf_counter()
    for row in range(queries.shape[0]):
        index.search(queries[row:row + 1], size, params=params)
    return 1e3 * (time.perf_counter() - start) / queries.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--ranks", type=int, nargs="+", default=[127, 255], help="principal axes (plus the residual)")
    parser.add_argument("--shortlists", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--lists", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    # The draws of bench_faiss.py --spaces visual: pairs, query pairs, then the visual seeds.
    generator = np.random.default_rng(args.seed)
    pairs = (generator.integers(50, size=args.rows), generator.integers(50, size=args.rows),
             generator.uniform(0, .5, args.rows))
    query_pairs = (generator.integers(50, size=args.queries), generator.integers(50, size=args.queries),
                   generator.uniform(0, .5, args.queries))
    seed = seeds(2560, True, generator)
    rows = bootstrap(seed, pairs, generator)
    queries = bootstrap(seed, query_pairs, generator).astype(np.float64)
    exact = exact_distances(queries, rows, "cosine")
    expected = np.argsort(exact, axis=1, kind="stable")[:, :K]
    for start in range(0, args.rows, CHUNK):
        rows[start:start + CHUNK] = _transform(rows[start:start + CHUNK], "unit")[0]
    query_units = _transform(queries, "unit")[0]
    fit_generator = np.random.default_rng(args.seed)
    fit = np.sort(fit_generator.choice(args.rows, min(args.rows, 2048), replace=False))
    longest = max(args.shortlists)
    for rank in args.ranks:
        projection = _Projection.fit(rows[fit], rank, fit_generator)
        projected = np.vstack([projection.apply(rows[s:s + CHUNK]) for s in range(0, args.rows, CHUNK)])
        points = projection.apply(query_units, queries=True)
        flat = faiss.IndexFlatL2(projection.width)
        flat.add(projected)
        _, found = flat.search(points, longest)
        for size in args.shortlists:
            print(json.dumps({"rank": rank, "index": "flat scan", "rerank": size,
                              "recall_at_5": reranked_recall(found[:, :size], exact, expected)}), flush=True)
        if rank != args.ranks[0]:
            continue  # the indexes: over the first rank's projections only
        graph = faiss.IndexHNSWFlat(projection.width, HNSW_M)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        start = time.perf_counter()
        graph.add(projected)
        built = time.perf_counter() - start
        for size in args.shortlists:
            params = faiss.SearchParametersHNSW(efSearch=size)
            _, found = graph.search(points, size, params=params)
            print(json.dumps({"rank": rank, "index": f"HNSW{HNSW_M}", "build_s": round(built, 1), "rerank": size,
                              "recall_at_5": reranked_recall(found, exact, expected),
                              "search_ms": round(per_query_ms(graph, points, size, params), 2)}), flush=True)
        del graph
        for lists in args.lists:
            inverted = faiss.IndexIVFFlat(faiss.IndexFlatL2(projection.width), projection.width, lists)
            start = time.perf_counter()
            train = np.sort(np.random.default_rng(1).choice(args.rows, min(args.rows, IVF_TRAIN_PER_LIST * lists),
                                                            replace=False))
            inverted.train(projected[train])
            inverted.add(projected)
            built = time.perf_counter() - start
            for nprobe in args.nprobe:
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                for size in args.shortlists:
                    _, found = inverted.search(points, size, params=params)
                    print(json.dumps({"rank": rank, "index": f"IVF{lists}", "nprobe": nprobe,
                                      "build_s": round(built, 1), "rerank": size, "recall_at_5": reranked_recall(found, exact, expected),
                                      "search_ms": round(per_query_ms(inverted, points, size, params), 2)}),
                          flush=True)


if __name__ == "__main__":
    main()
