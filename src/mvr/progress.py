"""Progress of mvr's long steps, on standard error.

A step with a known amount of work is a :class:`Progress`: a tqdm bar on a terminal, gone when the step ends, and
elsewhere (a log file, a pipe) a count line every :data:`LINE_INTERVAL_S` seconds, so that a long run in a log
shows it is alive without a line per item. A one-off step (a model fetched once, a source downloaded) is one line,
:func:`note`. The edges decide what is shown: the library functions that run long take ``progress``, True (a bar,
or count lines where there is no terminal), None (a bar on a terminal, nothing elsewhere: the caller prints its
own line per item) or False (nothing).

tqdm is imported only to draw a bar, so that commands that draw none start without it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

LINE_INTERVAL_S = 10.0
"""Where standard error is not a terminal: the least time between two count lines of a step."""


class Progress:
    """One long step's progress: ``update`` as each part of ``total`` is done; a context manager.

    Updates may come from several threads.
    """

    def __init__(self, desc: str, total: int, *, unit: str = "item", show: bool | None = True) -> None:
        self.desc = desc
        self.total = total
        self.done = 0
        terminal = stderr_is_terminal()
        self._bar: Any = None
        if show is not False and terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
        self._lines = show is True and not terminal
        self._lock = threading.Lock()
        self._start = self._said_at = time.monotonic()
        self._said_done: int | None = None

    def update(self, n: int = 1) -> None:
        """``n`` more parts done."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            elif self._lines and time.monotonic() - self._said_at >= LINE_INTERVAL_S:
                self._say()

    def extend(self, n: int) -> None:
        """``n`` more parts to do, found on the way."""
        with self._lock:
            self.total += n
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def close(self) -> None:
        """End the step: the bar goes; a step that gave count lines gives its last one."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            elif self._said_done is not None and self._said_done != self.done:
                self._say()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self) -> None:
        self._said_at, self._said_done = time.monotonic(), self.done
        elapsed = int(self._said_at - self._start)
        note(f"{self.desc}: {self.done}/{self.total} done, {elapsed // 60}:{elapsed % 60:02d} elapsed")


def note(message: str, show: bool | None = True, *, file: TextIO | None = None) -> None:
    """One line on standard error (or ``file``), unless ``show`` is False; a bar being drawn is not broken by it."""
    if show is False:
        return
    file = file or sys.stderr
    tqdm = sys.modules.get("tqdm")  # a bar can be on screen only once tqdm is loaded
    if tqdm is not None:
        tqdm.tqdm.write(message, file=file)
    else:
        print(message, file=file)
    file.flush()


def stderr_is_terminal() -> bool:
    """Whether standard error is a terminal (where a bar can be drawn)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
