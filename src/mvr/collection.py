"""Building a collection: turn sources (files, folders, URLs, manifests) into indexed catalog entries."""

from __future__ import annotations

import csv
import json
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr import media, visual
from mvr.catalog import Catalog, NewVideo, Video
from mvr.errors import CatalogError, MediaError, MvrError
from mvr.features import Features, VisualSettings, extract_features

MEDIA_SUFFIXES = frozenset(
    ".mp4 .m4v .mkv .webm .mov .avi .mpg .mpeg .ts .flv .wmv .ogv .3gp"
    " .mp3 .m4a .aac .ogg .oga .opus .wav .flac".split()
)
MANIFEST_COLUMNS = ("source", "label", "group", "title")


@dataclass(frozen=True)
class SourceItem:
    """One thing to index: a path or URL, with the metadata a manifest or the command line gave it."""

    source: str
    label: str | None = None
    group: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one item of a batch: ``status`` is indexed, skipped or failed."""

    source: str
    status: str
    reason: str = ""
    video: Video | None = None


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


def expand_sources(sources: Iterable[str], label: str | None = None) -> Iterator[SourceItem | Outcome]:
    """Expand command-line sources into items; a source that cannot be expanded yields a failed Outcome.

    A folder gives its media files (recursively, sorted); a ``.csv`` file is a manifest with a header naming some
    of ``source,label,group,title`` (paths relative to the manifest); a ``.json`` file is the study's
    ``{"Genre": [url, ...]}`` format; anything else is one item. ``label`` applies to items with no label.
    """
    for source in sources:
        if media.is_url(source):
            yield SourceItem(source, label=label)
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES):
                yield SourceItem(str(found), label=label)
        elif path.suffix.lower() in (".csv", ".json") and path.is_file():
            try:
                items = read_manifest(path)
            except MvrError as exc:
                yield Outcome(source, "failed", str(exc))
                continue
            for item in items:
                yield item if item.label or not label else SourceItem(item.source, label, item.group, item.title)
        else:
            yield SourceItem(str(path), label=label)


def read_manifest(path: Path) -> list[SourceItem]:
    """Read a CSV manifest (header with ``source`` and optionally ``label,group,title``) or the study's JSON.

    Raises
    ------
    MvrError
        When the file is not a manifest of either format.
    """
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        return _json_manifest(path, text)
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "source" not in rows[0]:
        raise MvrError(f"{path}: not a manifest (a CSV needs a header with a 'source' column)")
    items = []
    for row in rows:
        source = (row.get("source") or "").strip()
        if not source:
            continue
        if not media.is_url(source) and not Path(source).is_absolute():
            source = str(path.parent / source)
        items.append(SourceItem(source, *((row.get(column) or "").strip() or None for column in MANIFEST_COLUMNS[1:])))
    return items


def _json_manifest(path: Path, text: str) -> list[SourceItem]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MvrError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(urls, list) and all(isinstance(url, str) for url in urls) for urls in data.values()
    ):
        raise MvrError(f'{path}: not a manifest (expected {{"Label": ["url or path", ...], ...}})')
    return [SourceItem(url, label=genre) for genre, urls in data.items() for url in urls]


def index_sources(
    catalog: Catalog,
    sources: Iterable[str],
    label: str | None = None,
    settings: VisualSettings | None = None,
    progress: bool | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    jobs: int = 1,
) -> IndexReport:
    """Index every source into ``catalog``; a bad item is reported and skipped, and the batch goes on.

    Parameters
    ----------
    catalog : Catalog
        Where the media and vectors go.
    sources : iterable of str
        Files, folders, http(s) URLs, CSV or JSON manifests.
    label : str, optional
        Label for items that have none from a manifest.
    settings : VisualSettings, optional
        Visual backbone and keyframe cap; by default the catalog's own (or mvr's defaults for a new catalog).
    progress : bool, optional
        Show a progress bar; None shows it when standard error is a terminal.
    on_outcome : callable, optional
        Called with each item's Outcome as soon as it is known, in the order of the sources.
    jobs : int
        Videos processed at once. With 1 they are processed in this process; with more, by that many worker
        processes, each giving torch an equal share of the cores. Either way this process alone writes the
        catalog, one transaction per video, in the order of the sources: the same videos get the same ids and
        audio vectors (the visual ones can differ in their last bits: torch sums in another order on fewer
        threads).

    Raises
    ------
    ValueError
        When ``jobs`` is below 1.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    settings = visual_settings(catalog, settings)
    if catalog.setting("visual.backbone") is None:
        catalog.set_setting("visual.backbone", settings.backbone)
        catalog.set_setting("visual.max_keyframes", str(settings.max_keyframes or 0))
    items = list(expand_sources(sources, label))
    report = IndexReport()
    bar_off = None if progress is None else not progress  # tqdm: None = only on a terminal
    workers = max(1, min(jobs, len(items)))
    with tqdm(total=len(items), desc="indexing", unit="video", disable=bar_off, leave=False) as bar, \
            _Batch(catalog, settings, workers) as batch:
        for outcome in batch.run(items):
            report.outcomes.append(outcome)
            bar.update()
            if on_outcome:
                on_outcome(outcome)
    return report


def visual_settings(catalog: Catalog, requested: VisualSettings | None) -> VisualSettings:
    """The visual settings to use with ``catalog``: its stored ones, which a request may not contradict.

    A new catalog takes the requested settings (or the defaults); :func:`index_sources` stores them, so that
    every vector in it stays comparable with every other.

    Raises
    ------
    CatalogError
        When the request names another backbone or keyframe cap than the catalog was built with.
    """
    stored_backbone = catalog.setting("visual.backbone")
    if stored_backbone is None:
        return requested or VisualSettings()
    stored = VisualSettings(
        backbone=stored_backbone,
        max_keyframes=int(catalog.setting("visual.max_keyframes") or 0) or None,
        weights=requested.weights if requested else None,
    )
    if requested and (requested.backbone, requested.max_keyframes) != (stored.backbone, stored.max_keyframes):
        raise CatalogError(
            f"{catalog.root}: built with {_describe(stored)}, not {_describe(requested)}; re-index into a new"
            f" catalog folder (mvr index SOURCES --catalog NEW_DIR --backbone {requested.backbone}"
            f" --max-keyframes {requested.max_keyframes or 0}) to use them, or leave these options out"
        )
    return stored


def _describe(settings: VisualSettings) -> str:
    cap = f"at most {settings.max_keyframes} keyframes" if settings.max_keyframes else "every keyframe"
    return f"backbone {settings.backbone} on {cap}"


# --- the indexing pipeline ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failed:
    """Why a worker could not prepare or extract an item (MediaError itself cannot cross a process boundary)."""

    reason: str


@dataclass(frozen=True)
class _Prepared:
    """A source made local and identified: all the catalog needs to decide whether to extract it."""

    path: Path
    title: str | None  # the site's title, for a download
    info: media.MediaInfo
    content_hash: str
    download_dir: Path | None  # the download's folder, removed once the item is done


@dataclass(frozen=True)
class _Extracted:
    """An item's vectors and thumbnail, ready to be written."""

    features: Features
    thumbnail: bytes | None


@dataclass
class _Job:
    """One item on its way through the batch; ``outcome`` is set when it is done."""

    item: SourceItem
    outcome: Outcome | None = None
    running: Future | None = None
    prepared: _Prepared | None = None
    extracted: _Extracted | None = None
    same_as: "_Job | None" = None  # an earlier item of the batch with the same content


class _Batch:
    """Runs the items' downloads, hashing and feature extraction on a pool, and writes the catalog in order.

    Each item goes through two tasks on the pool: ``_prepare`` (download, probe, hash), then, unless the catalog
    or an earlier item of the batch has the same content, ``_extract`` (features and thumbnail). This process
    keeps a few items ahead in flight, decides between the two tasks (only it reads the catalog), and commits the
    items in the order of the sources, as soon as each one's predecessors are committed.
    """

    def __init__(self, catalog: Catalog, settings: VisualSettings, workers: int) -> None:
        self.catalog = catalog
        self.settings = settings
        self.ahead = 2 * workers  # enough to keep every worker busy while the oldest item waits for its commit
        if workers == 1:
            self.pool: Executor = ThreadPoolExecutor(max_workers=1)
        else:
            # spawn: a forked child of a process that already runs threads (torch's, a web server's) can deadlock.
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker,
                                            initargs=(settings, max(1, media.cpu_count() // workers)))
        self._claimed: dict[str, _Job] = {}

    def __enter__(self) -> "_Batch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

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
                self._advance(running[future], future.result())

    def _start(self, item: SourceItem | Outcome) -> _Job:
        if isinstance(item, Outcome):  # a source that expand_sources could not expand
            return _Job(SourceItem(item.source), outcome=item)
        job = _Job(item)
        known = self.catalog.find_by_source(item.source) if media.is_url(item.source) else None
        if known:
            job.outcome = Outcome(item.source, "skipped", f"already indexed as #{known.id}", known)
        else:
            job.running = self.pool.submit(_prepare, item, self.catalog.root / "tmp")
        return job

    def _advance(self, job: _Job, result: _Prepared | _Extracted | _Failed) -> None:
        """Take a finished task's result: fail the item, or start its extraction, or mark it ready to commit."""
        job.running = None
        if isinstance(result, _Failed):
            job.outcome = Outcome(job.item.source, "failed", result.reason)
            self._clean(job)
        elif isinstance(result, _Extracted):
            job.extracted = result
        else:
            job.prepared = result
            earlier = self._claimed.get(result.content_hash)
            if earlier is not None:
                job.same_as = earlier  # its outcome decides this one's: no second extraction
            elif self.catalog.find_by_hash(result.content_hash) is None:
                self._claimed[result.content_hash] = job
                job.running = self.pool.submit(_extract, result, self.settings)
            # else: already in the catalog; the commit records the alias

    def _commit(self, job: _Job) -> Outcome:
        """Write a prepared item to the catalog: a new video, or an alias of the one with the same content.

        An item with the same content as an earlier one of the batch shares that one's fate: an alias of it, or
        its failure (the same file would fail the same way).
        """
        prepared, source = job.prepared, job.item.source
        if job.same_as is not None and job.same_as.outcome.status == "failed":
            self._clean(job)
            return Outcome(source, "failed", job.same_as.outcome.reason)
        try:
            known = self.catalog.find_by_hash(prepared.content_hash)
            if known:
                self.catalog.add_source_alias(source, known.id)
                return Outcome(source, "skipped", f"already indexed as #{known.id}", known)
            features = job.extracted.features
            video = self.catalog.add(NewVideo(
                content_hash=prepared.content_hash,
                source=source,
                media_file=prepared.path,
                title=job.item.title or prepared.title or prepared.path.stem,
                duration=prepared.info.duration,
                label=job.item.label,
                group=job.item.group,
                thumbnail=job.extracted.thumbnail,
                vectors=features.vectors,
            ))
            return Outcome(source, "indexed", "; ".join(features.notes), video)
        except CatalogError as exc:
            return Outcome(source, "failed", str(exc))
        except OSError as exc:
            return Outcome(source, "failed", _reason(exc))
        finally:
            self._clean(job)

    @staticmethod
    def _clean(job: _Job) -> None:
        if job.prepared is not None:
            media.remove_temp_folder(job.prepared.download_dir)


def _start_worker(settings: VisualSettings, cnn_threads: int) -> None:
    """Set up a worker process: give the CNN this worker's share of the cores, then load it once."""
    visual.set_cnn_threads(cnn_threads)
    try:
        backbone = visual.get_backbone(settings.backbone, weights=settings.weights)
        backbone.embed(np.zeros((1, backbone.input_size, backbone.input_size, 3), dtype=np.uint8))
    except MvrError:
        return  # the first extraction raises the same error, where the user sees it


def _prepare(item: SourceItem, downloads: Path) -> _Prepared | _Failed:
    """Download (a URL), probe and hash one item; runs on the pool."""
    download_dir = None
    try:
        if media.is_url(item.source):
            path, title, download_dir = media.download_to_temp(item.source, downloads)
        else:
            path, title = Path(item.source), None
        info = media.probe(path)  # the clear error for a missing or non-media file comes before hashing
        return _Prepared(path, title, info, media.file_sha256(path), download_dir)
    except (MediaError, OSError) as exc:
        media.remove_temp_folder(download_dir)
        return _Failed(_reason(exc))


def _extract(prepared: _Prepared, settings: VisualSettings) -> _Extracted | _Failed:
    """Compute one prepared item's vectors and thumbnail; runs on the pool."""
    try:
        features = extract_features(prepared.path, settings=settings, info=prepared.info)
        return _Extracted(features, media.thumbnail_jpeg(prepared.path, prepared.info))
    except (MediaError, OSError) as exc:
        return _Failed(_reason(exc))


def _reason(exc: MediaError | OSError) -> str:
    if isinstance(exc, MediaError):
        return exc.reason
    return exc.strerror or str(exc)
