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
