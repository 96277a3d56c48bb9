"""What a wide searcher's rerank costs at scale: reading full rows, ranking by codes, the scale sample's distances.

Builds (or reuses, ``--folder``) a saved FAISS searcher over synthetic visual rows in ``bench_faiss.py``'s recipe
(2,560 non-negative numbers, cosine), loads it as a server does, and times, one query at a time on one thread,
each on rows no earlier query read:

* ``rows_map_ms``: 400 random rows through the memory map into new float64 arrays (what the rerank did before);
* ``rows_gather_ms``: the same count through :meth:`mvr.index.faiss._Rows.gather` (``preadv`` into kept buffers);
* ``codes_ms``: the 8-bit codes' estimates for 400 random rows (:meth:`mvr.index.faiss._Codes.nearest`);
* ``codes_top10_holds_top5``: over ``--flat-rows`` rows, the share of each query's five nearest (scipy's cosine)
  found among the ten nearest by the codes;
* ``sample_scipy_ms`` / ``sample_float32_ms``: a query's distances to the 1,024-row scale sample, by scipy's
  ``cdist`` and by :func:`mvr.retrieval.search._estimate_sample_distances`.

Usage::

    python benchmarks/bench_rerank_reads.py [--rows 200000] [--folder DIR] [--queries 30]

The last line printed is one JSON object with every figure. A folder it builds is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_faiss import bootstrap, read_through, seeds  # noqa: E402  (a sibling script: the same rows)

from mvr.index.faiss import FaissSearcher  # noqa: E402
from mvr.retrieval.search import _estimate_sample_distances  # noqa: E402

DIMS = 2560
READ_ROWS = 400


def median_ms(function, count: int) -> float:
    seconds = []
    for number in range(count):
        start = time.perf_counter()
        function(number)
        seconds.append(time.perf_counter() - start)
    return round(1e3 * float(np.median(seconds)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--folder", help="a saved cosine searcher over 2,560-wide rows, used as it is")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--flat-rows", type=int, default=200_000, help="rows the codes' ranking is checked on")
    args = parser.parse_args()
    threadpool_limits(1)
    generator = np.random.default_rng(0)
    seed = seeds(DIMS, True, generator)
    folder, built = args.folder, args.folder is None
    if built:
        pairs = (generator.integers(50, size=args.rows), generator.integers(50, size=args.rows),
                 generator.uniform(0, .5, args.rows))
        rows = bootstrap(seed, pairs, generator)
        folder = tempfile.mkdtemp(prefix="bench-rerank-")
        FaissSearcher.build(np.arange(args.rows), rows, "cosine").save(folder, meta={})
        del rows
    query_pairs = (generator.integers(50, size=args.queries), generator.integers(50, size=args.queries),
                   generator.uniform(0, .5, args.queries))
    queries = bootstrap(seed, query_pairs, generator).astype(np.float64)
    searcher = FaissSearcher.load(folder)
    stored = searcher._rows
    count = len(stored)
    read_through(folder)
    draws = [np.sort(generator.choice(count, READ_ROWS, replace=False)) for _ in range(3 * args.queries)]
    mapped = stored.segments[0]
    results = {
        "rows": count,
        "rows_map_ms": median_ms(lambda i: mapped[draws[i]].astype(np.float64), args.queries),
        "rows_gather_ms": median_ms(lambda i: stored.gather(draws[args.queries + i]), args.queries),
    }
    units = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    results["codes_ms"] = median_ms(
        lambda i: searcher._codes.nearest(units[i].astype(np.float32), draws[2 * args.queries + i], 10),
        args.queries)
    flat = min(args.flat_rows, count)
    rows = np.asarray(mapped[:flat], dtype=np.float64)
    truth = np.argsort(cdist(queries, rows, "cosine"), axis=1)[:, :5]
    held = [len(set(expected.tolist()) & set(searcher._codes.nearest(unit.astype(np.float32), np.arange(flat),
                                                                     10).tolist())) / 5
            for expected, unit in zip(truth, units, strict=True)]
    results["codes_top10_holds_top5"] = round(float(np.mean(held)), 3)
    sample_rows = searcher.sample()[1]
    results["sample_scipy_ms"] = median_ms(lambda i: cdist(queries[i][None], sample_rows, "cosine"), args.queries)
    results["sample_float32_ms"] = median_ms(lambda i: _estimate_sample_distances(searcher, "cosine", queries[i]),
                                             args.queries)
    if built:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
