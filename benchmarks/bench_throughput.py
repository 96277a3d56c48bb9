"""Indexing throughput: ``mvr index --jobs N`` over 50 short real music videos, against ``--jobs 1``, side by side.

The 50 videos are the first 50 items of a ``coupled`` collection of 20 s items at 640x360 (four music styles over
four picture styles, H.264 + AAC) that :func:`mvr.dataset.build.build_collection` builds once into
``${MVR_CACHE:-~/.cache/mvr}/bench/throughput``. Each run is the real command in a new process, start-up and
model loading included, into a new catalog; the runs alternate (1, N, N, 1, ...) so that a change in the
machine's load weighs on both sides alike. The catalogs of the two settings are compared: the same videos with
the same ids and the same audio vectors; the visual vectors may differ in their last float32 bits, since torch
sums in another order with another number of threads.

Usage::

    python benchmarks/bench_throughput.py [--jobs 2] [--repeat 1]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mvr.config import RuntimeSettings
from mvr.dataset.build import build_collection
from mvr.dataset.spec import CollectionSpec

VIDEOS = 50
SPEC = CollectionSpec(mode="coupled", duration=20.0, width=640, height=360, items_per_label=13)
# The mvr command line of this interpreter (``mvr.cli`` is a package: no ``python -m mvr.cli``).
MVR = [sys.executable, "-c", "import sys; from mvr.cli import main; sys.exit(main())"]


def collection(cache_dir: Path) -> Path:
    """A manifest of the benchmark's videos, built (encoded) on first use under mvr's cache folder."""
    folder = cache_dir / "bench" / "throughput"
    manifest = build_collection(folder, spec=SPEC, progress=True, cache_dir=cache_dir)
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    chosen = folder / f"manifest-{VIDEOS}.csv"
    with open(chosen, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows[: VIDEOS + 1])  # the header and the first items
    return chosen


def index_once(manifest: Path, catalog: Path, jobs: int) -> float:
    """Wall seconds of ``mvr index MANIFEST --jobs JOBS`` into a new catalog."""
    command = [*MVR, "index", str(manifest), "--catalog", str(catalog), "--quiet", "--jobs", str(jobs)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or f"{VIDEOS} indexed" not in done.stdout:
        raise SystemExit(f"indexing failed ({done.returncode}): {done.stdout}{done.stderr}")
    return seconds


def catalog_rows(catalog: Path) -> dict[tuple[int, str, str], np.ndarray]:
    """(video id, title, modality) -> vector of a catalog."""
    with sqlite3.connect(catalog / "catalog.sqlite") as db:
        rows = db.execute("SELECT v.id, v.title, x.modality, x.vector FROM videos v JOIN vectors x"
                          " ON x.video_id = v.id").fetchall()
    return {(row[0], row[1], row[2]): np.frombuffer(row[3], dtype=np.float32) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="the parallel setting compared with --jobs 1")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting (alternating)")
    args = parser.parse_args()

    manifest = collection(RuntimeSettings.from_environment().cache_dir)  # $MVR_CACHE, or ~/.cache/mvr
    order = [1, args.jobs] * args.repeat
    for position in range(2, len(order), 4):  # 1, N, N, 1, 1, N, ...: ABBA, so that a trend in load cancels
        order[position], order[position + 1] = order[position + 1], order[position]
    seconds: dict[int, list[float]] = {1: [], args.jobs: []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mvr-bench-throughput-") as tmp:
        for run, jobs in enumerate(order):
            seconds[jobs].append(index_once(manifest, Path(tmp) / f"catalog-{run}", jobs))
            print(f"run {run + 1}/{len(order)}: --jobs {jobs}: {seconds[jobs][-1]:.1f} s", file=sys.stderr)
        serial = catalog_rows(Path(tmp) / f"catalog-{order.index(1)}")
        parallel = catalog_rows(Path(tmp) / f"catalog-{order.index(args.jobs)}")
    same_videos = serial.keys() == parallel.keys()
    audio_identical = same_videos and all(np.array_equal(serial[key], parallel[key]) for key in serial
                                          if key[2] == "audio")
    visual_difference = max((float(np.abs(serial[key] - parallel[key]).max() / np.abs(serial[key]).max())
                             for key in serial if key[2] == "visual" and key in parallel), default=float("nan"))

    rate = {jobs: VIDEOS * 60 / min(runs) for jobs, runs in seconds.items()}
    print(f"{VIDEOS} videos of {SPEC.duration:g} s, {SPEC.width}x{SPEC.height}; {os.cpu_count()} cores; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'command':<34} {'best s':>7} {'all runs s':>18} {'videos/min':>10}")
    for jobs, runs in seconds.items():
        print(f"{f'mvr index --jobs {jobs}':<34} {min(runs):>7.1f} {' '.join(f'{s:.1f}' for s in runs):>18} "
              f"{rate[jobs]:>10.1f}")
    print(f"speed-up of --jobs {args.jobs}: {rate[args.jobs] / rate[1]:.2f}x; same videos and ids: {same_videos}; "
          f"audio vectors identical: {audio_identical}; visual vectors differ by at most {visual_difference:.1e}"
          " of their largest value")
    print(json.dumps({
        "videos": VIDEOS,
        "video_seconds": SPEC.duration,
        "size": f"{SPEC.width}x{SPEC.height}",
        "jobs": args.jobs,
        "seconds": {f"jobs_{jobs}": [round(s, 2) for s in runs] for jobs, runs in seconds.items()},
        "videos_per_minute": {f"jobs_{jobs}": round(value, 1) for jobs, value in rate.items()},
        "speedup": round(rate[args.jobs] / rate[1], 2),
        "same_videos_and_ids": same_videos,
        "audio_vectors_identical": audio_identical,
        "visual_max_relative_difference": visual_difference,
        "cores": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
