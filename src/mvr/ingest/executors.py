"""Where indexing's tasks run: in this process, or in worker processes, behind one interface.

An :class:`IngestExecutor` runs :func:`~mvr.ingest.tasks.prepare` and :func:`~mvr.ingest.tasks.extract` and
hands back futures; the pipeline's single writer records what they return. Workers build their extractors once,
so that a model is loaded once per worker, not once per video. :data:`EXECUTORS` names them for ``mvr index
--engine``; a new executor (a cluster's) is one more entry.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from mvr.errors import MvrError, UsageError
from mvr.features import Extractor, build_extractors
from mvr.ingest.policy import SourcePolicy
from mvr.ingest.resolve import ResolvedMedia
from mvr.ingest.sources import SourceItem
from mvr.ingest.tasks import ExtractionPlan, Failed, extract, failure_reason, prepare


class IngestExecutor(ABC):
    """Runs the tasks of indexing; ``workers`` of them at once."""

    workers: int

    @abstractmethod
    def prepare(self, item: SourceItem, tmp_dir: Path, policy: SourcePolicy) -> Future:
        """Start :func:`~mvr.ingest.tasks.prepare`; the future's result is a ResolvedMedia or a Failed."""

    @abstractmethod
    def extract(self, resolved: ResolvedMedia) -> Future:
        """Start :func:`~mvr.ingest.tasks.extract` with the worker's extractors; an Extracted or a Failed."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop: drop what has not started, wait for what runs."""

    def __enter__(self) -> IngestExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


class LocalExecutor(IngestExecutor):
    """One item at a time in this process, on one thread beside the writer (every core for the extractors)."""

    workers = 1

    def __init__(self, plan: ExtractionPlan) -> None:
        self._plan = plan
        self._extractors: dict[str, Extractor] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mvr-index")

    def prepare(self, item: SourceItem, tmp_dir: Path, policy: SourcePolicy) -> Future:
        return self._pool.submit(prepare, item, tmp_dir, policy)

    def extract(self, resolved: ResolvedMedia) -> Future:
        return self._pool.submit(self._extract, resolved)

    def _extract(self, resolved: ResolvedMedia) -> object:
        if self._extractors is None:  # on the pool's one thread: built once, on the first item that needs them
            try:
                self._extractors = build_extractors(self._plan.options, self._plan.runtime)
            except MvrError as exc:
                return Failed(failure_reason(exc))
        return extract(resolved, self._extractors, self._plan.runtime.threads)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor(IngestExecutor):
    """``workers`` worker processes, each with its share of the cores and its own extractors.

    Workers are spawned (a forked child of a process that already runs threads, torch's or a web server's, can
    deadlock), and each one exits by itself when the process that started it dies, so that a killed ``mvr
    index`` leaves no orphans.
    """

    def __init__(self, plan: ExtractionPlan, workers: int) -> None:
        self.workers = workers
        share = plan.runtime.with_threads(max(1, plan.runtime.threads // workers))
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(ExtractionPlan(plan.options, share), os.getpid()),
        )

    def prepare(self, item: SourceItem, tmp_dir: Path, policy: SourcePolicy) -> Future:
        return self._pool.submit(prepare, item, tmp_dir, policy)

    def extract(self, resolved: ResolvedMedia) -> Future:
        return self._pool.submit(_worker_extract, resolved)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# A worker process's own extractors, built by its initializer: the state a process pool's tasks share.
_worker: dict[str, object] = {}

_PARENT_CHECK_S = 1.0


def _start_worker(plan: ExtractionPlan, parent: int) -> None:
    """Set up a worker process: watch the parent, build the extractors and load their models once."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="mvr-parent-watch").start()
    _worker["threads"] = plan.runtime.threads
    try:
        extractors = build_extractors(plan.options, plan.runtime)
        for extractor in extractors.values():
            extractor.load()
        _worker["extractors"] = extractors
    except MvrError as exc:
        _worker["failure"] = failure_reason(exc)  # every extraction reports it, where the user sees it


def _exit_with_parent(parent: int, check: Callable[[], int] = os.getppid) -> None:
    """End this worker once its parent is gone (it is then re-parented: the parent id changes)."""
    while check() == parent:
        time.sleep(_PARENT_CHECK_S)
    os._exit(1)


def _worker_extract(resolved: ResolvedMedia) -> object:
    if "failure" in _worker:
        return Failed(str(_worker["failure"]))
    extractors: Mapping[str, Extractor] = _worker["extractors"]  # type: ignore[assignment]
    return extract(resolved, extractors, int(_worker["threads"]))  # type: ignore[arg-type]


def _local_engine(plan: ExtractionPlan, jobs: int, **options: object) -> IngestExecutor:
    """This machine's processes: one item at a time in this process, or ``jobs`` worker processes."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise UsageError(f"the local engine takes no {', '.join(given)} (those are the ray engine's)")
    return LocalExecutor(plan) if jobs == 1 else ProcessExecutor(plan, jobs)


def _ray_engine(plan: ExtractionPlan, jobs: int, **options: object) -> IngestExecutor:
    """A Ray cluster (``address``, ``media_store``): one extraction actor per CPU slot, whatever ``jobs`` says."""
    # A lazy import for an optional dependency: Ray (the 'cluster' extra) is imported only when this engine is
    # chosen, so that importing mvr or running the local engine never needs it, nor pays for loading it.
    try:
        from mvr.ingest.ray_executor import RayExecutor
    except ModuleNotFoundError as exc:
        if exc.name != "ray" and not (exc.name or "").startswith("ray."):
            raise
        raise UsageError("the ray engine needs Ray: pip install 'mvr[cluster]'") from None
    return RayExecutor(plan, **options)  # type: ignore[arg-type]


EXECUTORS: dict[str, Callable[..., IngestExecutor]] = {
    "local": _local_engine,
    "ray": _ray_engine,
}
"""Executors by engine name, each called as ``factory(plan, jobs, **engine_options)``: ``local`` runs in this
machine's processes (``jobs`` of them when more than one); ``ray`` on a Ray cluster
(:class:`mvr.ingest.ray_executor.RayExecutor`, options ``address`` and ``media_store``)."""
