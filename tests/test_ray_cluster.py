"""``mvr index --engine ray`` on a real two-node Ray cluster, on loopback only.

Ray binds its services to the machine's interface address even when told ``--node-ip-address 127.0.0.1``, so the
cluster runs inside namespaces this test makes (``unshare``): a network namespace with nothing but loopback, so
that nothing leaves the machine, and a PID namespace, so that ``ray stop --force`` sees only this cluster's
processes and everything in it dies with the namespace, whatever happens. The driver runs in there too (Ray's
ports are only there): this file, run as a script (:func:`_in_namespace`), starts the cluster, indexes, kills an
extraction actor mid-batch, interrupts a batch, stops the cluster, and writes what it saw to a JSON report that
the test (outside) checks against a local ``--jobs 1`` build of the same sources.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import mvr
from mvr.config import RuntimeSettings
from mvr.ingest.pipeline import index_sources
from mvr.store import Catalog

pytestmark = pytest.mark.slow

PORT = 6379  # the namespace's own loopback: no other cluster can hold it
ADDRESS = f"127.0.0.1:{PORT}"
START_S = 120  # one `ray start` (its raylet alone gives the dashboard agent 15 s)
INDEX_S = 600  # one batch of the fixtures on two 1-CPU nodes of a loaded 2-core machine
NAMESPACE_S = 1500  # everything in the namespace, the three batches included
RELEASE_S = 60  # for an interrupted batch's actors to give their CPU slots back


def _namespace_command() -> list[str] | None:
    """``unshare`` with a loopback-only network and a private PID space, or None where it cannot be made.

    Root makes the namespaces directly; anyone else through a user namespace (Debian allows them by default).
    """
    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    command = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        command.insert(1, "--map-root-user")
    probe = subprocess.run([*command, "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    return command if probe.returncode == 0 else None


def test_ray_cluster_indexes_like_the_local_engine(music_videos, bad_media, runtime: RuntimeSettings,
                                                   tmp_path: Path, request: pytest.FixtureRequest) -> None:
    namespace = _namespace_command()
    if namespace is None:
        pytest.skip("cannot make a loopback-only network namespace here (unshare or ip missing, or not permitted)")
    sources = [str(music_videos.manifest), str(bad_media["empty"]), str(bad_media["missing"])]
    with Catalog.open(tmp_path / "local") as catalog:
        local = index_sources(catalog, sources, jobs=1, runtime=runtime, progress=False)
    assert local.count("indexed") == len(music_videos.paths)

    home = tmp_path / "home"  # Ray's ~/.ray (its auth token) stays this test's
    home.mkdir()
    # Ray's state in a short path of its own: its sockets' paths must fit in 107 bytes, pytest's folders do not.
    ray_dir = Path(tempfile.mkdtemp(prefix="mvr-ray-"))
    request.addfinalizer(lambda: shutil.rmtree(ray_dir, ignore_errors=True))
    env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(ray_dir), "RAY_USAGE_STATS_ENABLED": "0",
           "MVR_CACHE": str(runtime.cache_dir),  # the built models and fixtures, wherever HOME points
           "PYTHONPATH": os.pathsep.join([str(Path(mvr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    if runtime.torch_hub_dir is None:
        env.setdefault("TORCH_HOME", str(Path.home() / ".cache" / "torch"))
    report_path = tmp_path / "report.json"
    inner = f"ip link set lo up && exec {sys.executable} {Path(__file__)} {tmp_path} {report_path} " \
            + " ".join(sources)
    started = time.monotonic()
    done = subprocess.run([*namespace, "sh", "-c", inner], env=env, capture_output=True, text=True,
                          timeout=NAMESPACE_S)
    assert report_path.exists(), f"no report (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    print(f"in the namespace: {time.monotonic() - started:.0f} s; {json.dumps(report['timings'])}")
    assert report["error"] is None, report["error"] + "\n" + done.stderr[-4000:]
    assert report["stopped"], "ray stop --force did not end cleanly"

    # The CLI's batch: the same outcomes, the same catalog.
    cli = report["cli"]
    assert cli["code"] == 1, cli["stderr"]  # two bad items, reported; the batch went on
    assert f"{len(music_videos.paths)} indexed, 0 skipped, 2 failed" in cli["stdout"], cli
    for outcome in local.outcomes:
        if outcome.status == "failed":
            assert f"failed   {outcome.source}: {outcome.reason}" in cli["stderr"]
    with Catalog.open(tmp_path / "local", create=False) as expected, \
            Catalog.open(tmp_path / "cluster", create=False) as got:
        _assert_same_catalog(expected, got)
    assert f"0 indexed, {len(music_videos.paths)} skipped, 2 failed" in report["rerun"]["stdout"]  # resumable
    stored = sorted(path.name for path in (tmp_path / "media-store").glob("*/*"))
    with Catalog.open(tmp_path / "cluster", create=False) as got:
        assert stored == sorted(video.media_path.name for video in got.videos())

    # The batch whose actor was killed: every item indexed or reported, and what was indexed is right.
    killed = report["killed"]
    assert killed["pid"] is not None and killed["outcomes_before_kill"] < len(killed["outcomes"])
    assert killed["restarts"] == 1, killed
    assert len(killed["outcomes"]) == len(music_videos.paths) + 2  # the manifest's items and the two bad ones
    for outcome in killed["outcomes"]:
        assert outcome["status"] in ("indexed", "failed"), outcome
        assert outcome["status"] == "indexed" or outcome["reason"], outcome
    with Catalog.open(tmp_path / "local", create=False) as expected, \
            Catalog.open(tmp_path / "killed", create=False) as got:
        _assert_same_catalog(expected, got, subset=True)

    # The interrupted batch: its work left the cluster, which has every CPU slot free again.
    interrupted = report["interrupted"]
    assert interrupted["raised"] and interrupted["slots_free"] == interrupted["slots"], interrupted


def _assert_same_catalog(expected: Catalog, got: Catalog, subset: bool = False) -> None:
    """Same ids, titles, sources and labels; audio vectors within 1e-6, visual ones within 1e-4 relative (the
    actors compute on one thread each, the local run on every core: the CNN sums in another order)."""
    wanted = {video.content_hash: video for video in expected.videos()}
    found = got.videos()
    if not subset:
        assert [(v.id, v.title, v.source, v.label, v.group) for v in found] == \
            [(v.id, v.title, v.source, v.label, v.group) for v in wanted.values()]
    for video in found:
        twin = wanted[video.content_hash]
        assert (video.title, video.source, video.label, video.spaces) == \
            (twin.title, twin.source, twin.label, twin.spaces)
        assert video.media_path.read_bytes() == twin.media_path.read_bytes()
        for space in twin.spaces:
            (want_name, want), (got_name, have) = expected.vector(twin.id, space), got.vector(video.id, space)
            assert got_name == want_name
            if space == "audio":
                np.testing.assert_allclose(have, want, rtol=0, atol=1e-6)
            else:
                np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)


# In the namespace ------------------------------------------------------------------------------------------------


def _ray(*args: str, timeout: float = START_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], capture_output=True, text=True,
                          timeout=timeout)


def _start_cluster(temp_dir: Path) -> None:
    """A head and a second node, one CPU slot each; the head's start is tried twice (see START_S)."""
    head = ["start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(PORT), "--num-cpus", "1",
            "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    for attempt in range(2):
        started = _ray(*head)
        if started.returncode == 0:
            break
        _ray("stop", "--force", timeout=60)
        if attempt:
            raise RuntimeError(f"ray start --head failed twice:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}")
    joined = _ray("start", "--address", ADDRESS, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                  "--disable-usage-stats")
    if joined.returncode != 0:
        raise RuntimeError(f"ray start --address failed:\n{joined.stdout[-2000:]}\n{joined.stderr[-2000:]}")


def _run_cli(*args: str) -> dict:
    mvr_cli = [sys.executable, "-c", "import sys; from mvr.cli import main; sys.exit(main())"]
    done = subprocess.run([*mvr_cli, "index", *args], capture_output=True, text=True, timeout=INDEX_S)
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def _killed_batch(work: Path, sources: list[str]) -> dict:
    """Index while an extraction actor is killed (``kill -9``) once the first item is committed."""
    import ray
    from ray._private import state  # the GCS's actor table: it works without the dashboard

    seen: dict = {"pid": None, "actor": None, "outcomes_before_kill": None, "restarts": None}
    outcomes = []

    def kill_one(outcome: object) -> None:
        outcomes.append(outcome)
        if seen["pid"] is not None:
            return
        alive = [actor for actor in state.actors().values()
                 if actor["ActorClassName"].endswith("_ExtractionActor") and actor["State"] == "ALIVE"]
        if alive:
            seen["pid"], seen["actor"] = int(alive[0]["Pid"]), alive[0]["ActorID"]
            seen["outcomes_before_kill"] = len(outcomes)
            os.kill(seen["pid"], signal.SIGKILL)

    ray.init(address=ADDRESS, namespace="mvr-test", log_to_driver=False)
    try:
        with Catalog.open(work / "killed") as catalog:
            index_sources(catalog, sources, engine="ray", runtime=RuntimeSettings.from_environment(),
                          progress=False, on_outcome=kill_one)
        if seen["actor"] is not None:  # Ray restarted it (and so reloaded its models) rather than giving up
            seen["restarts"] = state.actors(actor_id=seen["actor"]).get("NumRestarts")
    finally:
        ray.shutdown()
    seen["outcomes"] = [{"source": o.source, "status": o.status, "reason": o.reason} for o in outcomes]
    return seen


def _interrupted_batch(work: Path, sources: list[str]) -> dict:
    """Ctrl-C (a real SIGINT) once the first item is committed; then the cluster must give every slot back."""
    import ray

    def interrupt(_outcome: object) -> None:
        signal.raise_signal(signal.SIGINT)

    # A terminal's Ctrl-C: Python's own handler, also where this runs with SIGINT ignored (a shell's background
    # job starts Python so, and Python then installs no handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ray.init(address=ADDRESS, namespace="mvr-test", log_to_driver=False)
    seen = {"raised": False, "slots": int(ray.cluster_resources()["CPU"]), "slots_free": None}
    try:
        try:
            with Catalog.open(work / "interrupted") as catalog:
                index_sources(catalog, sources, engine="ray", runtime=RuntimeSettings.from_environment(),
                              progress=False, on_outcome=interrupt)
        except KeyboardInterrupt:
            seen["raised"] = True
        deadline = time.monotonic() + RELEASE_S
        while time.monotonic() < deadline:
            seen["slots_free"] = int(ray.available_resources().get("CPU", 0))
            if seen["slots_free"] == seen["slots"]:
                break
            time.sleep(1)
    finally:
        ray.shutdown()
    return seen


def _in_namespace(work: Path, report_path: Path, sources: list[str]) -> None:
    """Start the cluster, run the batches, always stop the cluster, and write the report."""
    report: dict = {"error": None, "stopped": False, "timings": {}}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        report["timings"][name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    try:
        _start_cluster(Path(os.environ["RAY_TMPDIR"]))
        lap("cluster_start_s")
        # The CLI's batches share a media store (the killed batch below sends the media through Ray's store).
        cluster = ["--catalog", str(work / "cluster"), "--engine", "ray", "--address", ADDRESS,
                   "--media-store", str(work / "media-store")]
        report["cli"] = _run_cli(*sources, *cluster, "--quiet")
        lap("cli_batch_s")
        report["rerun"] = _run_cli(*sources, *cluster, "--quiet")
        lap("rerun_s")
        report["killed"] = _killed_batch(work, sources)
        lap("killed_batch_s")
        report["interrupted"] = _interrupted_batch(work, sources)
        lap("interrupted_batch_s")
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            report["stopped"] = _ray("stop", "--force", timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            report["stopped"] = False  # the namespace's end kills what is left
        lap("stop_s")
        report_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    _in_namespace(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
