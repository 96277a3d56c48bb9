"""What ``mvr tune`` costs as a catalog grows: the weights alone, and with the learned projections (a timing).

A synthetic labelled pool of the three spaces' widths (audio 136, musicnn 200, visual 2,560 numbers), each
label's videos around their own centre, two excerpts per track, is tuned by :func:`mvr.retrieval.tuning.tune_pool`
with and without the out-of-fold LDA projections of the audio spaces; the wall and CPU seconds of each are
printed. (The vectors are drawn, so the precision figures mean nothing here: ``mvr evaluate`` on real collections
measures those.)

Usage::

    python benchmarks/bench_tune.py [--videos 10000] [--labels 20] [--threads 2]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mvr.retrieval.fusion import Pool
from mvr.retrieval.tuning import LabelledRows, tune_pool

WIDTHS = {"audio": 136, "musicnn": 200, "visual": 2560}


def synthetic_pool(videos: int, labels: int, seed: int = 7) -> tuple[Pool, LabelledRows]:
    """``videos`` labelled videos in the three spaces, two excerpts of a track alike."""
    generator = np.random.default_rng(seed)
    label = np.arange(videos) // 2 % labels
    matrices = {}
    for space, width in WIDTHS.items():
        centres = generator.normal(size=(labels, width))
        tracks = centres[label] + generator.normal(scale=2.0, size=(videos, width))
        matrices[space] = tracks + generator.normal(scale=0.3, size=(videos, width))
    rows = LabelledRows(labels=np.array([f"l{i}" for i in label], dtype=object),
                        groups=np.array([f"t{i // 2}" for i in range(videos)], dtype=object),
                        keys=np.array([f"{i:064d}" for i in range(videos)], dtype=object))
    return Pool(ids=np.arange(videos, dtype=np.int64), matrices=matrices), rows


def timed(pool: Pool, rows: LabelledRows, projections: bool) -> dict:
    """One tuning's wall and CPU seconds, and what it kept."""
    wall, cpu = time.perf_counter(), time.process_time()
    found = tune_pool(pool, rows, k=5, projections=projections)
    return {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "projections": sorted(found.projections), "weights": found.weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pool, rows = synthetic_pool(args.videos, args.labels)
    with threadpool_limits(args.threads):
        found = {"weights only": timed(pool, rows, False), "with projections": timed(pool, rows, True)}
    for name, figures in found.items():
        print(f"{name}: {figures['wall_s']:.1f} s wall, {figures['cpu_s']:.1f} s CPU,"
              f" projections kept: {', '.join(figures['projections']) or 'none'}")
    print(json.dumps({"videos": args.videos, "labels": args.labels, "threads": args.threads, **found}))


if __name__ == "__main__":
    main()
