"""Indexing: turn sources (files, folders, URLs, manifests) into catalog entries, on an injected executor.

The executor (:mod:`mvr.ingest.executors`) runs each item's tasks; this process alone writes the catalog, one
transaction per video, in the order of the sources, so that the same sources give the same ids whatever the
executor. A bad item is reported and skipped, whatever went wrong with it, and the batch goes on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from mvr.config import RuntimeSettings
from mvr.errors import CatalogError, MediaError, UsageError
from mvr.features import SpaceOptions, build_extractors, extract_features, space_names
from mvr.ingest.executors import EXECUTORS, IngestExecutor
from mvr.ingest.policy import SourcePolicy
from mvr.ingest.resolve import ResolvedMedia
from mvr.ingest.sources import Outcome, SourceItem, expand_sources
from mvr.ingest.tasks import Extracted, ExtractionPlan, Failed, failure_reason
from mvr.media import is_url
from mvr.progress import Progress
from mvr.store import Catalog, NewVideo, catalog_options, record_options


@dataclass
class IndexReport:
    """The outcomes of one ``index`` run, in order."""

    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many items ended with ``status``."""
        return sum(outcome.status == status for outcome in self.outcomes)

    def summary(self) -> str:
        """One line: indexed / skipped / failed counts."""
        return f"{self.count('indexed')} indexed, {self.count('skipped')} skipped, {self.count('failed')} failed"


def index_sources(
    catalog: Catalog,
    sources: Iterable[str | SourceItem],
    *,
    label: str | None = None,
    options: Mapping[str, SpaceOptions] | None = None,
    spaces: tuple[str, ...] | None = None,
    progress: bool | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    jobs: int = 1,
    engine: str = "local",
    engine_options: Mapping[str, object] | None = None,
    runtime: RuntimeSettings | None = None,
    policy: SourcePolicy | None = None,
) -> IndexReport:
    """Index every source into ``catalog``; a bad item is reported and skipped, and the batch goes on.

    Parameters
    ----------
    catalog : Catalog
        Where the media and vectors go.
    sources : iterable of str or SourceItem
        Files, folders, http(s) URLs, CSV or JSON manifests; or items with their own metadata (taken as they are).
    label : str, optional
        Label for items that have none from a manifest.
    options : mapping, optional
        Extractor options asked for (space -> options); by default the catalog's own (or each space's defaults for
        a new catalog).
    spaces : tuple of str, optional
        The feature spaces to compute; by default every registered one.
    progress : bool, optional
        The batch's progress on standard error (:mod:`mvr.progress`): True a bar on a terminal and a count line
        every few seconds elsewhere, None (the default) the bar alone, False nothing.
    on_outcome : callable, optional
        Called with each item's Outcome as soon as it is known, in the order of the sources.
    jobs : int
        Videos processed at once. With 1 they are processed in this process; with more, by that many worker
        processes, each with an equal share of the cores. Either way this process alone writes the catalog: the
        same videos get the same ids and audio vectors (the visual ones can differ in their last bits: the CNN
        sums in another order on fewer threads).
    engine : str
        One of :data:`mvr.ingest.executors.EXECUTORS`.
    engine_options : mapping, optional
        What the engine takes besides ``jobs`` (the ray engine's ``address`` and ``media_store``); None values
        are the engine's defaults.
    runtime : RuntimeSettings, optional
        Threads, CNN runtime and cache folder; by default this machine's.
    policy : SourcePolicy, optional
        Where URLs may be fetched from, and the download limits.

    Raises
    ------
    UsageError
        When ``jobs`` is below 1 or the engine is unknown.
    CatalogError
        When the options contradict the catalog's, or another process is writing the catalog.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {jobs}")
    if engine not in EXECUTORS:
        raise UsageError(f"unknown engine '{engine}'; choose one of: {', '.join(EXECUTORS)}")
    chosen = catalog_options(catalog, spaces or space_names(), options)
    items = list(expand_sources(sources, label))
    plan = ExtractionPlan(options=chosen, runtime=runtime or RuntimeSettings())
    report = IndexReport()
    workers = max(1, min(jobs, len(items)))
    with catalog.writing(), Progress("indexing", len(items), unit="video", show=progress) as bar, \
            EXECUTORS[engine](plan, workers, **(engine_options or {})) as executor:
        record_options(catalog, chosen)  # under the write lock, as every write of the batch
        batch = _Batch(catalog, executor, policy or SourcePolicy())
        for outcome in batch.run(items):
            report.outcomes.append(outcome)
            bar.update()
            if on_outcome:
                on_outcome(outcome)
    return report


def update_spaces(
    catalog: Catalog,
    *,
    spaces: tuple[str, ...] | None = None,
    options: Mapping[str, SpaceOptions] | None = None,
    progress: bool | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    runtime: RuntimeSettings | None = None,
) -> IndexReport:
    """Compute the feature spaces the catalog's videos lack, from the media the catalog holds (nothing is fetched).

    A catalog built before a space was added (or with fewer spaces) gains it this way. Each video is written in one
    transaction; a video whose media cannot give a space is reported (``skipped``, with the reason), and the batch
    goes on.

    Raises
    ------
    CatalogError
        When the options contradict the catalog's.
    """
    runtime = runtime or RuntimeSettings()
    chosen = catalog_options(catalog, spaces or space_names(), options)
    extractors = build_extractors(chosen, runtime)
    videos = catalog.videos()
    report = IndexReport()
    with catalog.writing(), Progress("updating", len(videos), unit="video", show=progress) as bar:
        record_options(catalog, chosen)
        for video in videos:
            missing = {space: extractor for space, extractor in extractors.items() if space not in video.spaces}
            if not missing:
                outcome = Outcome(video.source, "skipped", "has every space", video)
            else:
                try:
                    features = extract_features(video.media_path, missing, threads=runtime.threads)
                    catalog.add_vectors(video.id, features.vectors)
                    added = ", ".join(features.vectors)
                    outcome = Outcome(video.source, "indexed", "; ".join([f"added {added}", *features.notes]),
                                      catalog.get(video.id))
                except MediaError as exc:  # the media has no stream for the missing spaces
                    outcome = Outcome(video.source, "skipped", exc.reason, video)
                except Exception as exc:  # as in a batch: the video fails, the update goes on
                    outcome = Outcome(video.source, "failed", failure_reason(exc))
            report.outcomes.append(outcome)
            bar.update()
            if on_outcome:
                on_outcome(outcome)
    return report


@dataclass
class _Job:
    """One item on its way through the batch; ``outcome`` is set when it is done."""

    item: SourceItem
    outcome: Outcome | None = None
    running: Future | None = None
    resolved: ResolvedMedia | None = None
    extracted: Extracted | None = None
    same_as: _Job | None = None  # an earlier item of the batch with the same content


class _Batch:
    """Runs the items' tasks on the executor, and writes the catalog in order.

    Each item goes through two tasks: ``prepare`` (download, probe, hash), then, unless the catalog or an earlier
    item of the batch has the same content, ``extract`` (features and thumbnail). This process keeps a few items
    ahead in flight, decides between the two tasks (only it reads the catalog), and commits the items in the order
    of the sources, as soon as each one's predecessors are committed.
    """

    def __init__(self, catalog: Catalog, executor: IngestExecutor, policy: SourcePolicy) -> None:
        self.catalog = catalog
        self.executor = executor
        self.policy = policy
        self.ahead = 2 * executor.workers  # enough to keep every worker busy while the oldest item waits
        self._claimed: dict[str, _Job] = {}

    def run(self, items: list[SourceItem | Outcome]) -> Iterator[Outcome]:
        """Yield each item's Outcome, in the order of ``items``."""
        waiting = deque(items)
        jobs: deque[_Job] = deque()
        while jobs or waiting:
            while waiting and len(jobs) < self.ahead:
                jobs.append(self._start(waiting.popleft()))
            head = jobs[0]
            if head.outcome is None and head.running is None:
                head.outcome = self._commit(head)  # its predecessors are committed: its turn
            if head.outcome is not None:
                yield jobs.popleft().outcome
                continue
            running = {job.running: job for job in jobs if job.running is not None}
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                self._advance(running[future], _result(future))

    def _start(self, item: SourceItem | Outcome) -> _Job:
        if isinstance(item, Outcome):  # a source that expand_sources could not expand
            return _Job(SourceItem(item.source), outcome=item)
        job = _Job(item)
        known = self.catalog.find_by_source(item.source) if is_url(item.source) else None
        if known:
            job.outcome = Outcome(item.source, "skipped", f"already indexed as #{known.id}", known)
        else:
            job.running = self.executor.prepare(item, self.catalog.root / "tmp", self.policy)
        return job

    def _advance(self, job: _Job, result: ResolvedMedia | Extracted | Failed) -> None:
        """Take a finished task's result: fail the item, or start its extraction, or mark it ready to commit."""
        job.running = None
        if isinstance(result, Failed):
            job.outcome = Outcome(job.item.catalog_source, "failed", result.reason)
            self._clean(job)
        elif isinstance(result, Extracted):
            job.extracted = result
        else:
            job.resolved = result
            earlier = self._claimed.get(result.content_hash)
            if earlier is not None:
                job.same_as = earlier  # its outcome decides this one's: no second extraction
            elif self.catalog.find_by_hash(result.content_hash) is None:
                self._claimed[result.content_hash] = job
                job.running = self.executor.extract(result)
            # else: already in the catalog; the commit records the alias

    def _commit(self, job: _Job) -> Outcome:
        """Write a prepared item to the catalog: a new video, or an alias of the one with the same content.

        An item with the same content as an earlier one of the batch shares that one's fate: an alias of it, or
        its failure (the same file would fail the same way).
        """
        resolved, source = job.resolved, job.item.catalog_source
        if job.same_as is not None and job.same_as.outcome.status == "failed":
            self._clean(job)
            return Outcome(source, "failed", job.same_as.outcome.reason)
        try:
            known = self.catalog.find_by_hash(resolved.content_hash)
            if known:
                self.catalog.add_source_alias(source, known.id)
                return Outcome(source, "skipped", f"already indexed as #{known.id}", known)
            features = job.extracted.features
            video = self.catalog.add(NewVideo(
                content_hash=resolved.content_hash,
                source=source,
                media_file=resolved.path,
                title=job.item.title or resolved.title or resolved.path.stem,
                duration=resolved.info.duration,
                label=job.item.label,
                group=job.item.group,
                thumbnail=job.extracted.thumbnail,
                vectors=features.vectors,
            ))
            return Outcome(source, "indexed", "; ".join(features.notes), video)
        except CatalogError as exc:
            return Outcome(source, "failed", str(exc))
        except OSError as exc:
            return Outcome(source, "failed", failure_reason(exc))
        finally:
            self._clean(job)

    @staticmethod
    def _clean(job: _Job) -> None:
        if job.resolved is not None:
            job.resolved.cleanup()


def _result(future: Future) -> ResolvedMedia | Extracted | Failed:
    """A task's result; a task that could not run at all (its worker died) fails its item, not the batch."""
    try:
        return future.result()
    except Exception as exc:
        return Failed(failure_reason(exc))
