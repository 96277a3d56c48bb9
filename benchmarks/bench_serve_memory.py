"""`mvr serve`'s memory over a large catalog: a real video among synthetic ones, its saved indexes, fused queries.

Issue 13's goal: ``mvr serve`` over a 1M fused catalog under 8 GB. The catalog is made as a user's would be, but
for its size: one real music video indexed by ``mvr index`` (its vectors, extractor settings and media), then
``--rows - 1`` videos whose vectors are synthetic (``bench_faiss.py``'s recipe for audio and visual, the same
clustered one for MusiCNN), written into the catalog's SQLite tables in one transaction per 20,000 rows (adding
them one by one through ``mvr index`` would take days of extraction). Their media path is the real video's;
they have no thumbnail. Then, each timed and measured as its own process:

1. ``mvr reindex`` builds every saved index (each space's default metric and the fused search's);
2. ``mvr serve`` starts on 127.0.0.1, answers ``--queries`` fused queries of the real video (``POST /api/queries``
   with its id: the server extracts its features again and searches the 1M catalog), and its memory is read
   from ``/proc/PID/status``: peak and current resident set (``VmHWM``, ``VmRSS``), split into anonymous memory
   (the process's own) and file pages (the mapped vectors files, which the kernel can drop and read again).

Usage::

    python benchmarks/bench_serve_memory.py --video FILE --folder DIR [--rows 1000000] [--queries 5]

``DIR`` is made afresh (about 11 GB of SQLite and 11 GB of indexes at 1M rows). The last line printed is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_faiss import bootstrap, seeds  # noqa: E402  (a sibling script: the same synthetic recipe)

CHUNK = 20_000
MVR = [str(Path(sys.executable).with_name("mvr"))]  # the console script installed beside this interpreter


def run_measured(command: list[str]) -> dict:
    """Run ``command``; its wall time and peak resident memory (``/usr/bin/time``'s maximum RSS)."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak_kib / 1024),
            "output": done.stdout.strip().splitlines()[-6:]}


def add_synthetic(folder: Path, rows: int, generator: np.random.Generator) -> tuple[int, dict[str, int]]:
    """Write ``rows`` synthetic videos beside the real one, each space's vectors as wide as the real one's; the
    real one's id, and each space's width."""
    database = sqlite3.connect(folder / "catalog.sqlite", isolation_level=None)
    real = database.execute("SELECT id, media_path, duration FROM videos").fetchone()
    spaces = {space: (extractor, dims) for space, extractor, dims in database.execute(
        "SELECT modality, extractor, dims FROM vectors WHERE video_id = ?", (real[0],))}
    recipes = {space: seeds(dims, space == "visual", generator) for space, (_, dims) in spaces.items()}
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        pairs = (generator.integers(50, size=count), generator.integers(50, size=count),
                 generator.uniform(0, .5, count))
        made = {space: bootstrap(seed, pairs, generator) for space, seed in recipes.items()}
        database.execute("BEGIN IMMEDIATE")
        for offset in range(count):
            number = start + offset
            video_id = database.execute(
                "INSERT INTO videos(content_hash, source, media_path, title, duration, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (f"synthetic-{number:058d}", f"synthetic-{number}", real[1], f"synthetic {number}", real[2],
                 time.time())).lastrowid
            database.executemany(
                "INSERT INTO vectors(video_id, modality, extractor, dims, vector) VALUES (?, ?, ?, ?, ?)",
                [(video_id, space, extractor, dims, made[space][offset].tobytes())
                 for space, (extractor, dims) in spaces.items()])
        # The catalog's generation moves with every change, as Catalog.add moves it: saved indexes follow it.
        database.execute("UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        database.execute("COMMIT")
        print(f"added {start + count} of {rows}", file=sys.stderr, flush=True)
    database.close()
    return real[0], {space: dims for space, (_, dims) in spaces.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status_mib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024)
    return fields


def call(url: str, body: dict | None = None, timeout: float = 600) -> dict:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def serve_and_query(folder: Path, queries: int, video_id: int) -> dict:
    """Start ``mvr serve``, answer fused queries of the real video, and read the server's memory."""
    port = free_port()
    server = subprocess.Popen([*MVR, "serve", "--catalog", str(folder), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                call(f"{base}/api/info", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mvr serve did not start:\n{server.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        started = status_mib(server.pid)
        seconds = []
        for _ in range(queries):
            begun = time.perf_counter()
            poll = call(f"{base}/api/queries", {"video_id": video_id, "modality": "fused"})["poll"]
            while (found := call(base + poll))["status"] not in ("done", "failed"):
                time.sleep(0.2)
            if found["status"] != "done":
                raise SystemExit(f"the fused query failed: {found}")
            seconds.append(time.perf_counter() - begun)
        return {"started": started, "after_queries": status_mib(server.pid),
                "results": len(found["result"]["results"]),
                "query_seconds": [round(value, 2) for value in seconds]}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True, help="a real music video (the one indexed)")
    parser.add_argument("--folder", type=Path, required=True, help="the catalog folder, made afresh")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shutil.rmtree(args.folder, ignore_errors=True)
    figures = {"rows": args.rows, "cores": os.cpu_count()}
    figures["index"] = run_measured([*MVR, "index", str(args.video), "--catalog", str(args.folder), "--quiet"])
    start = time.perf_counter()
    real, figures["dims"] = add_synthetic(args.folder, args.rows - 1, np.random.default_rng(args.seed))
    figures["add_seconds"] = round(time.perf_counter() - start, 1)
    figures["catalog_mib"] = round((args.folder / "catalog.sqlite").stat().st_size / 2**20)
    figures["reindex"] = run_measured([*MVR, "reindex", "--catalog", str(args.folder)])
    figures["index_folder_mib"] = round(sum(path.stat().st_size for path in (args.folder / "index").rglob("*")
                                            if path.is_file()) / 2**20)
    figures["serve"] = serve_and_query(args.folder, args.queries, real)
    figures["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
