"""Progress on standard error: a bar on a terminal, count lines in a log, nothing when asked for nothing."""

from __future__ import annotations

import io
import sys

import pytest

from mvr import progress
from mvr.progress import Progress, note


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_step_gives_count_lines(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    with Progress("encoding", 3) as bar:
        bar.update()
        bar.extend(1)  # work found on the way
        bar.update(3)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(", ")[0] for line in lines] == ["encoding: 1/3 done", "encoding: 4/4 done"]
    assert all(line.endswith(" elapsed") for line in lines)


def test_count_lines_come_at_most_every_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("indexing", 100) as bar:  # a step shorter than the interval says nothing in a log
        bar.update(100)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("show", [None, False])
def test_no_lines_unless_asked(show: bool | None, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    # None: the caller prints its own line per item, so that only a terminal gets a bar.
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    with Progress("indexing", 2, show=show) as bar:
        bar.update(2)
    note("fetching something", show=show)
    assert capsys.readouterr().err == ("fetching something\n" if show is None else "")


@pytest.mark.parametrize("show", [True, None])
def test_a_terminal_gets_a_bar_that_goes_away(show: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with Progress("reindexing", 4, unit="index", show=show) as bar:
        bar.update(3)
        note("audio cosine: built")  # a line while the bar is drawn: the bar is cleared, then drawn again
        drawn = screen.getvalue()
    assert "reindexing" in drawn and "3/4" in drawn and "audio cosine: built\n" in drawn
    assert screen.getvalue().endswith("\r")  # left=False: the bar's line is cleared at the end
