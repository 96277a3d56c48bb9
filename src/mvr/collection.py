"""Building a collection: turn sources (files, folders, URLs, manifests) into indexed catalog entries."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mvr import media
from mvr.catalog import Catalog, NewVideo, Video
from mvr.errors import CatalogError, MediaError, MvrError
from mvr.features import VisualSettings, extract_features

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
        Called with each item's Outcome as soon as it is known.
    """
    from tqdm import tqdm

    settings = visual_settings(catalog, settings)
    if catalog.setting("visual.backbone") is None:
        catalog.set_setting("visual.backbone", settings.backbone)
        catalog.set_setting("visual.max_keyframes", str(settings.max_keyframes or 0))
    items = list(expand_sources(sources, label))
    report = IndexReport()
    bar_off = None if progress is None else not progress  # tqdm: None = only on a terminal
    for item in tqdm(items, desc="indexing", unit="video", disable=bar_off, leave=False):
        outcome = item if isinstance(item, Outcome) else _index_one(catalog, item, settings)
        report.outcomes.append(outcome)
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
            f"{catalog.root}: built with backbone {stored.backbone} and keyframe cap {stored.max_keyframes},"
            f" not {requested.backbone} and {requested.max_keyframes}; re-index into a new catalog folder"
            f" (mvr index SOURCES --catalog NEW_DIR --backbone {requested.backbone}) to use them"
        )
    return stored


def _index_one(catalog: Catalog, item: SourceItem, settings: VisualSettings) -> Outcome:
    download_dir = None
    try:
        if media.is_url(item.source):
            known = catalog.find_by_source(item.source)
            if known:
                return Outcome(item.source, "skipped", f"already indexed as #{known.id}", known)
            path, fetched_title, download_dir = media.download_to_temp(item.source, catalog.root / "tmp")
        else:
            path, fetched_title = Path(item.source), None
        info = media.probe(path)  # the clear error for a missing or non-media file comes before hashing
        content_hash = media.file_sha256(path)
        known = catalog.find_by_hash(content_hash)
        if known:
            catalog.add_source_alias(item.source, known.id)
            return Outcome(item.source, "skipped", f"already indexed as #{known.id}", known)
        features = extract_features(path, settings=settings, info=info)
        video = catalog.add(NewVideo(
            content_hash=content_hash,
            source=item.source,
            media_file=path,
            title=item.title or fetched_title or path.stem,
            duration=info.duration,
            label=item.label,
            group=item.group,
            thumbnail=media.thumbnail_jpeg(path, info),
            vectors=features.vectors,
        ))
        return Outcome(item.source, "indexed", "; ".join(features.notes), video)
    except (MediaError, CatalogError) as exc:
        return Outcome(item.source, "failed", exc.reason if isinstance(exc, MediaError) else str(exc))
    except OSError as exc:
        return Outcome(item.source, "failed", exc.strerror or str(exc))
    finally:
        if download_dir is not None:
            download_dir.cleanup()
