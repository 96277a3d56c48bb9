"""What a crash or a second process leaves: never a half-written catalog, never a foreign database touched."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mvr.cli import main
from mvr.errors import CatalogError
from mvr.ingest.pipeline import index_sources
from mvr.media import probe
from mvr.store import Catalog
from mvr.store.catalog import sweep_leftovers

MVR = [sys.executable, "-c", "import sys; from mvr.cli import main; sys.exit(main())"]


def test_a_foreign_sqlite_database_is_never_written(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "not-a-catalog"
    folder.mkdir()
    with sqlite3.connect(folder / "catalog.sqlite") as other:
        other.execute("CREATE TABLE notes (text TEXT)")
        other.execute("INSERT INTO notes VALUES ('mine')")
    before = hashlib.sha256((folder / "catalog.sqlite").read_bytes()).hexdigest()
    assert main(["list", "--catalog", str(folder)]) == 1
    assert "not an mvr catalog database" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "nothing.mp4"), "--catalog", str(folder)]) == 1
    assert hashlib.sha256((folder / "catalog.sqlite").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in folder.iterdir()) == ["catalog.sqlite"]  # no -wal, no -shm, no lock


def test_a_second_writer_is_refused_with_a_clear_line(music_videos, tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "catalog") as first, first.writing():
        with Catalog.open(tmp_path / "catalog") as second, pytest.raises(CatalogError, match="another mvr"):
            index_sources(second, [str(music_videos.paths[0])], progress=False)
    with Catalog.open(tmp_path / "catalog") as catalog:  # the lock went with its holder
        assert index_sources(catalog, [str(music_videos.paths[0])], progress=False).count("indexed") == 1


def test_leftovers_of_dead_processes_are_swept_and_the_living_ones_kept(tmp_path: Path) -> None:
    dead = _dead_pid()
    root = tmp_path / "catalog"
    (root / "media" / "ab").mkdir(parents=True)
    (root / "tmp").mkdir()
    left = [root / "media" / "ab" / f".abcd.mp4.{dead}.part", root / "tmp" / f"download-{dead}-x1"]
    kept = [root / "media" / "ab" / f".abcd.mp4.{os.getpid()}.part", root / "tmp" / f"upload-{os.getpid()}-y2",
            root / "media" / "ab" / "abcd.mp4"]
    for path in (*left, *kept):
        if path.name.startswith(("download-", "upload-")):
            path.mkdir()
            (path / "file.mp4").write_bytes(b"x" * 1000)
        else:
            path.write_bytes(b"x" * 1000)
    assert sorted(sweep_leftovers(root)) == sorted(left)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in left)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_file_name_that_looks_like_an_option_is_read_as_a_file(music_videos, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copyfile(music_videos.paths[0], tmp_path / "-dash;x.mp4")
    monkeypatch.chdir(tmp_path)
    assert probe(Path("./-dash;x.mp4")).has_video


@pytest.mark.slow
def test_workers_exit_when_mvr_index_is_killed(music_videos, tmp_path: Path) -> None:
    sources = [str(path) for path in music_videos.paths]
    index = subprocess.Popen([*MVR, "index", *sources, "--catalog", str(tmp_path / "catalog"), "--jobs", "2",
                              "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _descendants(index.pid)
        time.sleep(0.2)
    assert workers, "no worker process started"
    index.send_signal(signal.SIGKILL)
    index.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_running(pid) for pid in workers), "workers outlived mvr index"
    with Catalog.open(tmp_path / "catalog") as catalog:  # whatever was committed is whole
        for video in catalog.videos():
            assert video.media_path.is_file() and video.spaces


def _descendants(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


KILLS = 4


@pytest.mark.slow
def test_random_kills_never_leave_a_half_written_catalog(music_videos, tmp_path: Path) -> None:
    """``kill -9`` of ``mvr index --jobs 1`` at seeded random points (after a random number of newly committed
    videos, a random part of a video's time into the next), then a re-run to the end: after every kill the catalog is
    whole and no child process outlives it, and the finished catalog equals an uninterrupted build."""
    command = ["index", str(music_videos.manifest), "--jobs", "1", "--quiet"]
    started = time.monotonic()
    subprocess.run([*MVR, *command, "--catalog", str(tmp_path / "reference")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    total = len(music_videos.paths)
    # The delays are fractions of a video's time on this machine, start-up included: a fixed 0-1.5 s let an idle
    # machine index the last two videos before the kill, and the test then had fewer kills than it needs.
    per_video = (time.monotonic() - started) / total
    target = tmp_path / "killed"
    rng = np.random.default_rng(14)
    points = []
    for _ in range(KILLS):
        committed = _committed(target)
        if committed >= total - 1:
            break
        after, delay = int(rng.integers(committed, total - 1)), float(rng.uniform(0, 0.5)) * per_video
        run = subprocess.Popen([*MVR, *command, "--catalog", str(target)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while _committed(target) < after and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        if run.poll() is not None:
            # The last videos were indexed within the delay (an idle machine): nothing is left to interrupt.
            assert run.returncode == 0, f"mvr index failed before its kill ({after} videos + {delay:.2f} s)"
            break
        children = _descendants(run.pid)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        points.append((after, round(delay, 2), _committed(target)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_running(pid) for pid in children):
            time.sleep(0.1)
        assert not any(_running(pid) for pid in children), f"a child of mvr index outlived it ({points[-1]})"
        if (target / "catalog.sqlite").exists():
            _assert_whole(target)
    assert len(points) >= 2, points
    subprocess.run([*MVR, *command, "--catalog", str(target)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    _assert_whole(target)
    assert _contents(target) == _contents(tmp_path / "reference")
    assert not list(target.rglob("*.part")) and not list((target / "tmp").glob("*"))


def _committed(root: Path) -> int:
    """Videos committed so far, read without writing anything (0 before the catalog exists)."""
    if not (root / "catalog.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{root / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not made yet
        return 0


def _assert_whole(root: Path) -> None:
    """Every committed video has its media file, byte for byte, and a vector in every space."""
    with sqlite3.connect(root / "catalog.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Catalog.open(root, create=False) as catalog:
        spaces = set(catalog.spaces())
        for video in catalog.videos():
            assert hashlib.sha256(video.media_path.read_bytes()).hexdigest() == video.content_hash, video.source
            assert set(video.spaces) == spaces, video.source


def _contents(root: Path) -> tuple[list, list]:
    """What a build wrote, without the moment it wrote it."""
    with sqlite3.connect(root / "catalog.sqlite") as db:
        videos = db.execute("SELECT id, content_hash, source, title, duration, label, grp, thumbnail FROM videos"
                            " ORDER BY id").fetchall()
        vectors = db.execute("SELECT video_id, modality, extractor, dims, vector FROM vectors"
                             " ORDER BY video_id, modality").fetchall()
    return videos, vectors
