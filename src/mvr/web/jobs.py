"""Jobs: queries on a bounded pool of worker threads, videos to add on one writer thread, their state kept for
polling."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

from mvr import media
from mvr.errors import MediaError, MvrError
from mvr.features import Extractor, build_extractors, space_names
from mvr.features.spaces import VisualExtractor
from mvr.index.exact import ExactSearcher
from mvr.ingest.pipeline import index_sources
from mvr.ingest.sources import SourceItem
from mvr.retrieval.fusion import Fusion
from mvr.retrieval.keyframe_match import KeyframeMatch, matching_keyframes
from mvr.retrieval.query import (
    QueryVectors,
    Recommendation,
    plan_search,
    query_vectors,
    recommend_vectors,
)
from mvr.retrieval.search import SearcherCache
from mvr.store import Catalog, Video, catalog_options
from mvr.web.models import IndexStatus, QueryStatus, VideoOut
from mvr.web.settings import ServiceSettings

logger = logging.getLogger(__name__)

class ThreadCatalogs:
    """One open :class:`Catalog` per thread.

    A catalog's SQLite connection and its cached vector matrices are not meant for concurrent use; a connection
    per thread needs no lock, and SQLite's WAL mode lets all of them read at once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Catalog] = []

    def get(self) -> Catalog:
        """This thread's catalog, opened on first use."""
        catalog = getattr(self._local, "catalog", None)
        if catalog is None:
            catalog = Catalog.open(self.root, create=False)
            self._local.catalog = catalog
            with self._lock:
                self._opened.append(catalog)
        return catalog

    def close(self) -> None:
        """Close every thread's catalog (at shutdown)."""
        with self._lock:
            for catalog in self._opened:
                catalog.close()
            self._opened.clear()


@dataclass(kw_only=True)
class Job:
    """Where a job stands: its worker updates it, the API shows it. ``upload_dir`` is an upload's folder, removed
    when the job ends."""

    upload_dir: Path | None = None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    status: str = "queued"
    stage: str = "waiting for a free worker"
    progress: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def pending(self) -> bool:
        """Still waiting or running."""
        return self.status in ("queued", "running")

    @property
    def elapsed_s(self) -> float:
        """Seconds since it was made, until it finished."""
        return round((self.finished or time.monotonic()) - self.created, 3)


@dataclass
class QueryJob(Job):
    """One query and where it stands.

    ``source`` is what the client named (URL, uploaded file name, catalog video) and ``title`` the name to show
    for a video the catalog does not hold (None: the downloaded one's); ``path`` is the file to read when it is
    local (an upload, or a catalog video's media), and ``cache_key`` names its content. ``metric_given`` says
    whether the client chose the metric (else a tuned fused search keeps each space's tuned metric), ``weights``
    the client's fusion weights (None: the catalog's).
    """

    source: str
    modality: str
    metric: str
    k: int
    cache_key: str
    metric_given: bool = False
    weights: dict[str, float] | None = None
    title: str | None = None
    url: str | None = None
    path: Path | None = None
    cached: bool = False
    result: dict | None = None

    def snapshot(self) -> QueryStatus:
        """The job as the API shows it."""
        return QueryStatus(
            id=self.id, status=self.status, stage=self.stage, progress=self.progress, source=self.source,
            modality=self.modality, metric=self.metric, k=self.k, cached=self.cached, elapsed_s=self.elapsed_s,
            notes=list(self.notes), result=self.result, error=self.error,
        )


@dataclass
class IndexJob(Job):
    """One video to add to the catalog, and where it stands.

    ``source`` is what the client named: the URL, or the uploaded file's name, which the catalog records as the
    video's source. ``url`` or ``path`` (the upload) is what to read; ``label`` and ``title`` are recorded with the
    video (None: no label; the site's title or the file's name). Once done, ``video`` is the catalog's video, and
    ``existing`` says it was there already.
    """

    source: str
    url: str | None = None
    path: Path | None = None
    label: str | None = None
    title: str | None = None
    existing: bool = False
    video: Video | None = None

    def snapshot(self) -> IndexStatus:
        """The job as the API shows it."""
        return IndexStatus(
            id=self.id, status=self.status, stage=self.stage, progress=self.progress, source=self.source,
            label=self.label, title=self.title, elapsed_s=self.elapsed_s, existing=self.existing,
            video=VideoOut.of(self.video) if self.video is not None else None, notes=list(self.notes),
            error=self.error,
        )


class ServerBusy(HTTPException):
    """The queue is full."""

    def __init__(self, pending: int) -> None:
        super().__init__(503, f"server busy: {pending} queries or videos to add are already waiting or running; try"
                              " again shortly")


@dataclass
class QueueSlot:
    """A place in the queue held by a request being read (see :meth:`QueryRunner.reservation`)."""

    taken: bool = False


class QueryRunner:
    """Runs query jobs on a bounded pool of worker threads and index jobs on one writer thread, and keeps their
    state for polling. Both kinds share one queue and its limit.

    Parameters
    ----------
    settings : ServiceSettings
        Pool size, queue limit, download limits, cache sizes, run-time settings.
    catalogs : ThreadCatalogs
        Where each worker gets its own catalog connection.
    searchers : SearcherCache
        The catalog's searchers, shared by every worker.
    """

    def __init__(self, settings: ServiceSettings, catalogs: ThreadCatalogs, searchers: SearcherCache) -> None:
        self._settings = settings
        self._catalogs = catalogs
        self._searchers = searchers
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mvr-query")
        self._lock = threading.Lock()
        # One thread adds videos, one at a time: the service is the catalog's single writer (mvr.ingest.pipeline),
        # and the queries go on beside it, reading.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mvr-writer")
        self._jobs: OrderedDict[str, QueryJob | IndexJob] = OrderedDict()
        self._features: OrderedDict[tuple[str, tuple[str, ...], int], QueryVectors] = OrderedDict()
        # Built on the first query that extracts, with the catalog's options, and shared by the workers: each
        # extractor loads its model once.
        self._extractors: dict[str, Extractor] | None = None
        # Requests holding a place in the queue while their bodies are read (see reservation).
        self._reserved = 0

    @contextmanager
    def reservation(self) -> Iterator[QueueSlot]:
        """Hold a place in the queue while a request is read, so that a burst of uploads is refused before its
        bodies are received; :meth:`submit` gives the place to the request's job, and leaving the block without
        submitting gives it back.

        Raises
        ------
        ServerBusy
            When ``workers + queue_limit`` jobs (queries, videos to add) are already pending or being received.
        """
        with self._lock:
            pending = self._reserved + sum(job.pending for job in self._jobs.values())
            if pending >= self._settings.workers + self._settings.queue_limit:
                raise ServerBusy(pending)
            self._reserved += 1
        slot = QueueSlot()
        try:
            yield slot
        finally:
            with self._lock:
                if not slot.taken:
                    self._reserved -= 1

    def submit(self, job: QueryJob, slot: QueueSlot) -> None:
        """Queue ``job`` in the place ``slot`` holds (from :meth:`reservation`)."""
        self._take(job, slot)
        self._pool.submit(self._run, job)

    def submit_index(self, job: IndexJob, slot: QueueSlot) -> None:
        """Queue ``job`` for the writer thread, in the place ``slot`` holds (from :meth:`reservation`)."""
        self._take(job, slot)
        self._writer.submit(self._index, job)

    def match_keyframes(self, catalog: Catalog, query: Path, result: Path) -> KeyframeMatch:
        """The nearest pair of keyframes of two media files with the catalog's visual extractor
        (:func:`mvr.retrieval.keyframe_match.matching_keyframes`), computed on a worker thread in a place of the
        queue, as a query is: it decodes and embeds two videos' pictures.

        Raises
        ------
        ServerBusy
            When the queue is full.
        MvrError
            When the catalog has no visual space; MediaError when a file has no decodable keyframe.
        """
        with self.reservation():
            extractor = self._extractors_for(catalog).get("visual")
            if not isinstance(extractor, VisualExtractor):
                raise MvrError(f"{catalog.root.name}: this catalog has no visual space, so no keyframes to match")
            return self._pool.submit(matching_keyframes, query, result, extractor).result()

    def status(self, job_id: str) -> QueryStatus | None:
        """The query's state, or None for an unknown (or long forgotten) id."""
        return self._snapshot(job_id, QueryJob)

    def index_status(self, job_id: str) -> IndexStatus | None:
        """The index job's state, or None for an unknown (or long forgotten) id."""
        return self._snapshot(job_id, IndexJob)

    def shutdown(self) -> None:
        """Drop the queued jobs and wait for the running ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True, cancel_futures=True)

    def _take(self, job: QueryJob | IndexJob, slot: QueueSlot) -> None:
        with self._lock:
            if slot.taken:
                raise ValueError("this queue slot already holds a job")
            slot.taken = True
            self._reserved -= 1
            self._jobs[job.id] = job
            self._forget_finished()

    def _snapshot(self, job_id: str, kind: type[QueryJob] | type[IndexJob]) -> QueryStatus | IndexStatus | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.snapshot() if isinstance(job, kind) else None

    def _forget_finished(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if not job.pending]
        for job_id in finished[: max(0, len(self._jobs) - self._settings.keep_queries)]:
            del self._jobs[job_id]

    def _update(self, job: Job, **changes: object) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)

    def _run(self, job: QueryJob) -> None:
        try:
            catalog = self._catalogs.get()
            self._update(job, status="running", stage="preparing", progress=0.05)
            # An empty catalog fails here, before any download.
            plan = plan_search(catalog, job.modality, metric=job.metric if job.metric_given else None,
                               weights=job.weights, searchers=self._searchers)
            spaces = plan.pool.spaces
            features = self._query_features(catalog, job, spaces)
            self._update(job, stage="ranking", progress=0.9)
            # The cache is shared by every query of the same content: the names this client used are the job's.
            description = {**features.description, "source": job.source}
            if description["id"] is None and job.title:
                description["title"] = job.title
            groups = {space: extractor.groups for space, extractor in self._extractors_for(catalog).items()}
            found = recommend_vectors(catalog, plan.pool,
                                      QueryVectors(description, features.vectors, features.notes),
                                      job.modality, plan.metric, fusion=plan.fusion, k=job.k,
                                      searchers=self._searchers_for(catalog, spaces, plan.metric, plan.fusion),
                                      weights_from=plan.weights_from, groups=groups)
            # The API always explains: its model has room for the explanations, and the page draws them.
            self._update(job, status="done", stage="done", progress=1.0, result=_with_groups(catalog, found),
                         notes=found.notes)
        except Exception as exc:  # a worker must always settle its job, or the client would poll forever
            self._fail(job, exc)
        finally:
            media.remove_temp_folder(job.upload_dir)
            self._update(job, finished=time.monotonic())

    def _index(self, job: IndexJob) -> None:
        """Add the job's video with the library's indexing (one item), on the writer thread."""
        try:
            catalog = self._catalogs.get()
            self._update(job, status="running", progress=0.1,
                         stage="downloading and extracting features" if job.url else "extracting features")
            item = SourceItem(job.url or str(job.path), label=job.label, title=job.title,
                              recorded_source=None if job.url else job.source)
            # The spaces the catalog holds (every one for a new catalog): all its videos keep the same spaces.
            report = index_sources(catalog, [item], spaces=tuple(catalog.spaces()) or None, progress=False,
                                   runtime=self._settings.runtime, policy=self._settings.policy)
            outcome = report.outcomes[0]
            if outcome.status == "failed":
                # The reason is about the client's source, whatever temporary path the extractor saw.
                reason = outcome.reason.replace(str(job.path), job.source) if job.path else outcome.reason
                self._update(job, status="failed", stage="failed", error=f"{job.source}: {reason}")
            else:
                existing = outcome.status == "skipped"
                self._update(job, status="done", stage="already in the catalog" if existing else "added",
                             progress=1.0, existing=existing, video=outcome.video,
                             notes=[outcome.reason] if outcome.reason and not existing else [])
        except Exception as exc:  # as for a query: the job always settles
            self._fail(job, exc)
        finally:
            media.remove_temp_folder(job.upload_dir)
            self._update(job, finished=time.monotonic())

    def _fail(self, job: QueryJob | IndexJob, exc: Exception) -> None:
        """Settle a job that raised, with a one-line error for the client (called in the ``except`` block)."""
        if isinstance(exc, MediaError):
            # The reason is about this job's source, whatever temporary path the extractor saw.
            error = f"{job.source}: {exc.reason}"
        elif isinstance(exc, MvrError):
            # A catalog error names the catalog's folder: the client knows the catalog by its name only.
            root = self._catalogs.root
            error = str(exc).replace(str(root.resolve()), root.name).replace(str(root), root.name)
        else:
            logger.exception("%s %s (%s) failed", type(job).__name__, job.id, job.source)
            error = f"{job.source}: internal error ({type(exc).__name__}: {exc})"
        self._update(job, status="failed", stage="failed", error=error)

    def _searchers_for(self, catalog: Catalog, spaces: tuple[str, ...], metric: str,
                       fusion: Fusion | None) -> SearcherCache | None:
        """The searchers to rank with; none for one space whose searcher scans every vector anyway (a catalog too
        small for FAISS): the exact ranking then also gives each result's similarity, which the page shows."""
        if fusion is None and len(spaces) == 1 and \
                isinstance(self._searchers.searcher(catalog, spaces[0], metric), ExactSearcher):
            return None
        return self._searchers

    def _query_features(self, catalog: Catalog, job: QueryJob, spaces: tuple[str, ...]) -> QueryVectors:
        # A video added since changes what a query of its content is (a catalog video, left out of its results).
        key = (job.cache_key, spaces, catalog.generation())
        with self._lock:
            cached = self._features.get(key)
            if cached is not None:
                self._features.move_to_end(key)
                job.cached = True
                return cached
        stages = {"downloading": 0.1, "extracting features": 0.3}
        found = query_vectors(
            catalog, job.url if job.url is not None else str(job.path), spaces,
            extractors=self._extractors_for(catalog), runtime=self._settings.runtime, policy=self._settings.policy,
            on_stage=lambda stage: self._update(job, stage=stage, progress=stages[stage]),
        )
        with self._lock:
            self._features[key] = found
            while len(self._features) > self._settings.feature_cache_size:
                self._features.popitem(last=False)
        return found

    def _extractors_for(self, catalog: Catalog) -> dict[str, Extractor]:
        with self._lock:
            if self._extractors is None:
                options = catalog_options(catalog, space_names())
                self._extractors = build_extractors(options, self._settings.runtime)
            return self._extractors


def _with_groups(catalog: Catalog, found: Recommendation) -> dict:
    """The answer's JSON (explained), with the ``group`` of the query (when the catalog holds it) and of each
    result, so that the page can mark the excerpts of the query's own track."""
    result = found.to_dict(explain=True)
    query_id = result["query"].get("id")
    query_video = catalog.get(query_id) if query_id is not None else None
    result["query"] = {**result["query"], "group": query_video.group if query_video is not None else None}
    for row, match in zip(result["results"], found.matches, strict=True):
        row["group"] = match.video.group
    return result
