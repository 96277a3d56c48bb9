"""Load on `mvr serve`: a real server process on 127.0.0.1, a bounded number of requests at a fixed concurrency.

Three phases, each a fixed count of requests from ``--concurrency`` client threads (loopback only):

* ``reads``: the catalog routes the page uses (info, a page of videos, one video, its thumbnail), in a seeded mix;
* ``queries``: ``POST /api/queries`` by catalog video (features extracted once per video, then served from the
  server's cache) in every search target, each accepted one polled until it ends: time to the result;
* ``uploads``: a burst of uploads of a real video, more than the queue holds: how many are refused with 503, and
  how soon (the place in the queue is taken before the body is read).

The server's resident memory (``VmRSS``) is read from ``/proc`` after start-up and after each phase, its peak
(``VmHWM``) at the end. The catalog: ``--catalog``, else the test fixtures' eight videos indexed into a temporary
one.

Usage::

    python benchmarks/bench_load.py [--catalog DIR] [--reads 600] [--queries 120] [--uploads 24] [--concurrency 12]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

MVR = [sys.executable, "-c", "import sys; from mvr.cli import main; sys.exit(main())"]
POLL_S = 0.1
QUERY_TIMEOUT_S = 120


def _fixture_catalog(folder: Path) -> Path:
    """The test fixtures' eight real videos, indexed once into ``folder``."""
    from mvr.config import RuntimeSettings
    from mvr.dataset.build import build_collection
    from mvr.dataset.spec import CollectionSpec
    spec = CollectionSpec(mode="coupled", duration=10.0, width=320, height=180, items_per_label=4,
                          audio_styles=("orchestral", "industrial"), visual_styles=("abstract", "film"))
    cache = RuntimeSettings.from_environment().cache_dir
    manifest = build_collection(cache / "fixtures" / "v1" / "music_videos", spec=spec, progress=False,
                                cache_dir=cache)
    subprocess.run([*MVR, "index", str(manifest), "--catalog", str(folder), "--quiet"], check=True)
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _memory_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan")}
    values = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 2), "p95_ms": round(float(np.percentile(values, 95)), 2),
            "max_ms": round(float(values.max()), 2)}


def _run(calls: list, concurrency: int) -> tuple[Counter, list[float], float]:
    """Run ``calls`` (functions returning a status code) on ``concurrency`` threads: status counts, latencies,
    wall time."""
    def timed(call) -> tuple[int, float]:  # noqa: ANN001 (a request function)
        started = time.perf_counter()
        try:
            status = call()
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return status, time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(timed, calls))
    return Counter(status for status, _ in outcomes), [seconds for _, seconds in outcomes], \
        time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--catalog", type=Path)
    parser.add_argument("--reads", type=int, default=600)
    parser.add_argument("--queries", type=int, default=120)
    parser.add_argument("--uploads", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2, help="the server's query workers")
    parser.add_argument("--queue-limit", type=int, default=8, help="the server's queue limit")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mvr-bench-load-"))
    catalog = args.catalog or _fixture_catalog(scratch / "catalog")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*MVR, "serve", "--catalog", str(catalog), "--port", str(port),
                               "--workers", str(args.workers), "--queue-limit", str(args.queue_limit)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    figures: dict = {"concurrency": args.concurrency, "workers": args.workers, "queue_limit": args.queue_limit}
    try:
        client = httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=args.concurrency * 2))
        deadline = time.monotonic() + 60
        while True:
            try:
                info = client.get("/api/info").json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mvr serve did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        figures["catalog_videos"] = info["videos"]
        figures["rss_start_mib"] = _memory_mib(server.pid)
        ids = [video["id"] for video in client.get("/api/videos", params={"limit": 500}).json()["items"]]
        rng = random.Random(15)

        paths = ["/api/info", "/api/videos"] + [f"/api/videos/{i}" for i in ids] + \
            [f"/api/videos/{i}/thumbnail" for i in ids]
        reads = [lambda path=rng.choice(paths): client.get(path).status_code for _ in range(args.reads)]
        statuses, seconds, wall = _run(reads, args.concurrency)
        figures["reads"] = {"requests": args.reads, "statuses": dict(statuses), **_percentiles(seconds),
                            "per_s": round(args.reads / wall, 1), "rss_mib": _memory_mib(server.pid)}

        targets = info["modalities"]
        accepted_latency: list[float] = []

        def query() -> int | str:
            body = {"video_id": rng.choice(ids), "modality": rng.choice(targets), "k": 5}
            started = time.perf_counter()
            answer = client.post("/api/queries", json=body)
            if answer.status_code != 202:
                return answer.status_code
            poll = answer.json()["poll"]
            while time.perf_counter() - started < QUERY_TIMEOUT_S:
                status = client.get(poll).json()["status"]
                if status in ("done", "failed"):
                    accepted_latency.append(time.perf_counter() - started)
                    return status
                time.sleep(POLL_S)
            return "timeout"
        statuses, seconds, wall = _run([query] * args.queries, args.concurrency)
        figures["queries"] = {"requests": args.queries, "outcomes": dict(statuses),
                              "time_to_result": _percentiles(accepted_latency), "per_s": round(args.queries / wall, 1),
                              "rss_mib": _memory_mib(server.pid)}

        video = client.get(f"/api/videos/{ids[0]}/media").content
        refused_latency: list[float] = []

        def upload() -> int:
            started = time.perf_counter()
            answer = client.post("/api/queries", files={"file": ("load.mp4", video)}, data={"modality": "audio"})
            if answer.status_code == 503:
                refused_latency.append(time.perf_counter() - started)
            return answer.status_code
        statuses, seconds, wall = _run([upload] * args.uploads, args.concurrency)
        figures["uploads"] = {"requests": args.uploads, "bytes_each": len(video), "statuses": dict(statuses),
                              "refused_in": _percentiles(refused_latency), "rss_mib": _memory_mib(server.pid)}
        figures["rss_peak_mib"] = _memory_mib(server.pid, "VmHWM")
        client.close()
    finally:
        server.terminate()
        server.wait(30)
    figures["cpus"] = os.cpu_count()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
