"""Sharing numpy work out among threads: how many CPUs this process may use, and one helper to split work."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity, where the system reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def on_threads(work: Callable[[Sequence[T]], R], items: Sequence[T], threads: int) -> list[R]:
    """Run ``work`` on interleaved shares of ``items``, a share a thread (at most ``threads``); the shares' results.

    Meant for numpy work, which releases the GIL; a single share runs in the calling thread.
    """
    count = max(1, min(len(items), threads))
    if count == 1:
        return [work(items)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(work, [items[i::count] for i in range(count)]))
