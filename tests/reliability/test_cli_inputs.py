"""Inputs that used to break a command or answer wrongly: each gets one clear line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mvr.cli import main

MVR = [sys.executable, "-c", "import sys; from mvr.cli import main; sys.exit(main())"]


def test_features_says_it_reads_files_and_keeps_the_url_whole(capsys) -> None:
    assert main(["features", "http://127.0.0.1:9/x.mp4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "http://127.0.0.1:9/x.mp4: mvr features reads local files" in err


def test_a_folder_without_media_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no media here")
    assert main(["index", str(tmp_path / "empty"), "--catalog", str(tmp_path / "catalog")]) == 1
    assert "no media files found" in capsys.readouterr().err
    assert not (tmp_path / "catalog").exists()


def test_a_batch_in_which_every_item_failed_leaves_no_catalog(tmp_path: Path, capsys) -> None:
    assert main(["index", str(tmp_path / "missing.mp4"), "--catalog", str(tmp_path / "new")]) == 1
    assert "missing.mp4: no such file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_closed_pipe_ends_the_output_quietly(music_videos, tmp_path: Path) -> None:
    # `mvr features F | head -c 0`: the reader is gone before the first byte; no traceback may follow.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        writer = subprocess.run([*MVR, "features", str(music_videos.paths[0]), "--json"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert writer.returncode == 1
    assert "Traceback" not in writer.stderr and "BrokenPipeError" not in writer.stderr, writer.stderr
