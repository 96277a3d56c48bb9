"""The Ray engine's cost: per-video overhead against the local executor on the same videos, and cluster start-up.

A two-node Ray cluster (one CPU slot each) on this machine, run as the cluster test runs it: in a network
namespace with only loopback and a PID namespace of its own (``unshare``), so that Ray binds nothing but
127.0.0.1 and everything it started ends with the namespace. In there, the real command line, each run in a new
process into a new catalog, start-up and model loading included:

* ``--jobs 1`` (this process, every core's threads), ``--jobs 2`` (two worker processes of one thread each: the
  cluster's shape), ``--engine ray`` (two actors of one thread each), each batch in a new process, start-up,
  connection and model loading included, into a new catalog;
* the same three again over their committed catalogs: every item is prepared (its bytes shipped, probed, hashed)
  and skipped, which isolates the engine's per-item plumbing from extraction.

Each run records when each item was committed: the first commit carries the fixed costs, the slope after it is
the steady cost of one more video. Overhead per video = ray's slope - ``--jobs 2``'s. The videos: the first
``--videos`` of ``/tmp/same/coupled`` when it is there (30 s, 640x360), else the test fixtures (10 s, 320x180).

Usage::

    python benchmarks/bench_ray.py [--videos 16] [--manifest PATH]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT = 6379  # the namespace's own loopback
ADDRESS = f"127.0.0.1:{PORT}"
SAME = Path("/tmp/same/coupled/manifest.csv")
STARTED = time.perf_counter()
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
RUN_S = 600


def _manifest(given: Path | None, videos: int, folder: Path) -> Path:
    """A manifest of the first ``videos`` items (absolute paths, so that it can live anywhere)."""
    if given is None and SAME.exists():
        given = SAME
    if given is None:
        from mvr.config import RuntimeSettings
        from mvr.dataset.build import build_collection
        from mvr.dataset.spec import CollectionSpec
        spec = CollectionSpec(mode="coupled", duration=10.0, width=320, height=180, items_per_label=4,
                              audio_styles=("orchestral", "industrial"), visual_styles=("abstract", "film"))
        cache = RuntimeSettings.from_environment().cache_dir
        given = build_collection(cache / "fixtures" / "v1" / "music_videos", spec=spec, progress=False,
                                 cache_dir=cache)
    with open(given, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:videos]
    chosen = folder / "manifest.csv"
    with open(chosen, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "source": str((given.parent / row["source"]).resolve())})
    return chosen


ENGINES = {"local_jobs_1": ("local", 1), "local_jobs_2": ("local", 2), "ray_2_nodes": ("ray", 1)}


def _one_run(engine: str, manifest: Path, catalog: Path) -> None:
    """One batch in this (new) process; prints when each item was committed, from the process's start."""
    from mvr.config import RuntimeSettings, prepare_process_environment
    from mvr.ingest.pipeline import index_sources
    from mvr.store import Catalog

    prepare_process_environment()
    kind, jobs = ENGINES[engine]
    committed: list[float] = []
    with Catalog.open(catalog) as opened:
        report = index_sources(opened, [str(manifest)], jobs=jobs, engine=kind, progress=False,
                               runtime=RuntimeSettings.from_environment(),
                               engine_options={"address": ADDRESS} if kind == "ray" else None,
                               on_outcome=lambda _outcome: committed.append(time.perf_counter() - STARTED))
    print(json.dumps({"committed": committed, "summary": report.summary()}))


def _timed(engine: str, manifest: Path, catalog: Path, expect: str) -> dict:
    """Wall seconds of one run in a new process, and when each of its items was committed."""
    start = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--run", engine, "--manifest", str(manifest),
               "--catalog", str(catalog)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_S)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{engine} failed ({done.returncode}):\n{done.stdout}{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if expect not in found["summary"]:
        raise RuntimeError(f"{engine}: {found['summary']}")
    times = found["committed"]
    # The first commit carries the fixed costs (start, connection, model loading); the slope after it is the
    # steady cost of one more video.
    return {"wall_s": wall, "first_s": times[0], "per_video_s": (times[-1] - times[0]) / max(1, len(times) - 1)}


def _ray_cli(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([*RAY, *args], capture_output=True, text=True, timeout=RUN_S)
    if done.returncode != 0:
        raise RuntimeError(f"ray {args[0]} failed:\n{done.stdout}{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _in_namespace(manifest: Path, work: Path, videos: int) -> dict:
    """Start the cluster (timed), run each engine twice (index, re-run), always stop the cluster."""
    figures: dict = {"videos": videos, "cores": os.cpu_count(), "load_average_before": os.getloadavg()[0]}
    try:
        figures["head_start_s"] = _ray_cli("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(PORT),
                                           "--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats",
                                           "--temp-dir", os.environ["RAY_TMPDIR"])
        figures["node_join_s"] = _ray_cli("start", "--address", ADDRESS, "--node-ip-address", "127.0.0.1",
                                          "--num-cpus", "1", "--disable-usage-stats")
        connect = "import ray, time; t = time.perf_counter(); ray.init(address='%s'); print(time.perf_counter() - t)"
        done = subprocess.run([sys.executable, "-c", connect % ADDRESS], capture_output=True, text=True, timeout=120)
        figures["driver_connect_s"] = float(done.stdout.strip().splitlines()[-1])
        for name in ENGINES:
            figures[name] = _timed(name, manifest, work / name, f"{videos} indexed")
            figures[f"{name}_rerun"] = _timed(name, manifest, work / name, f"{videos} skipped")
            print(f"{name}: {figures[name]}, re-run {figures[f'{name}_rerun']}", file=sys.stderr)
    finally:
        subprocess.run([*RAY, "stop", "--force"], capture_output=True, timeout=120)
    figures["load_average_after"] = os.getloadavg()[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=16, help="how many videos (default 16)")
    parser.add_argument("--manifest", type=Path, default=None, help="a collection's manifest.csv")
    parser.add_argument("--inside", type=Path, default=None, help=argparse.SUPPRESS)  # the namespace's half
    parser.add_argument("--run", choices=ENGINES, default=None, help=argparse.SUPPRESS)  # one batch
    parser.add_argument("--catalog", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        _one_run(args.run, args.manifest, args.catalog)
        return
    if args.inside is not None:
        figures = _in_namespace(args.manifest, args.inside, args.videos)
        (args.inside / "figures.json").write_text(json.dumps(figures))
        return

    namespace = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        namespace.insert(1, "--map-root-user")
    work = Path(tempfile.mkdtemp(prefix="mvr-bench-ray-"))  # short: Ray's socket paths must fit in 107 bytes
    try:
        manifest = _manifest(args.manifest, args.videos, work)
        home = work / "home"
        home.mkdir()
        import mvr
        from mvr.config import RuntimeSettings
        env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(work / "ray"), "RAY_USAGE_STATS_ENABLED": "0",
               "MVR_CACHE": str(RuntimeSettings.from_environment().cache_dir),
               "PYTHONPATH": os.pathsep.join([str(Path(mvr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        inner = (f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} --inside {work}"
                 f" --manifest {manifest} --videos {args.videos}")
        done = subprocess.run([*namespace, "sh", "-c", inner], env=env, timeout=3 * RUN_S, text=True,
                              stderr=subprocess.PIPE)
        if not (work / "figures.json").exists():
            raise SystemExit(f"no figures (exit {done.returncode}):\n{done.stderr[-4000:]}")
        sys.stderr.write(done.stderr)
        figures = json.loads((work / "figures.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = figures["videos"]
    local, ray_run = figures["local_jobs_2"], figures["ray_2_nodes"]
    figures["ray_overhead_per_video_s"] = ray_run["per_video_s"] - local["per_video_s"]
    figures["ray_fixed_overhead_s"] = ray_run["first_s"] - local["first_s"]
    figures["ray_plumbing_per_video_s"] = figures["ray_2_nodes_rerun"]["per_video_s"] \
        - figures["local_jobs_2_rerun"]["per_video_s"]
    figures["cluster_start_s"] = figures["head_start_s"] + figures["node_join_s"]
    print(f"{n} videos; {figures['cores']} cores; load average {figures['load_average_before']:.1f} before, "
          f"{figures['load_average_after']:.1f} after")
    print(f"cluster start: head {figures['head_start_s']:.1f} s + second node {figures['node_join_s']:.1f} s; "
          f"a driver connects in {figures['driver_connect_s']:.2f} s")
    print(f"{'engine':<14} {'wall s':>7} {'1st item s':>10} {'s/video':>8} | re-run: {'wall s':>6} {'s/video':>8}")
    for name in ENGINES:
        run, rerun = figures[name], figures[f"{name}_rerun"]
        print(f"{name:<14} {run['wall_s']:>7.1f} {run['first_s']:>10.1f} {run['per_video_s']:>8.2f} | "
              f"{rerun['wall_s']:>14.1f} {rerun['per_video_s']:>8.3f}")
    print(f"ray against --jobs 2: {figures['ray_overhead_per_video_s']:+.2f} s per video indexed (steady), "
          f"{figures['ray_fixed_overhead_s']:+.1f} s before the first; "
          f"{figures['ray_plumbing_per_video_s']:+.3f} s per video prepared and skipped")
    print(json.dumps(figures))

if __name__ == "__main__":
    main()
