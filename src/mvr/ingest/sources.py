"""What to index: command-line sources (files, folders, URLs, manifests) expanded into items.

A manifest that cannot be read is reported as one failed item, and the batch goes on with the other sources.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mvr import media
from mvr.errors import MediaError

if TYPE_CHECKING:  # annotations only: the command line reads this package's registry without loading SQLite
    from mvr.store import Video

MEDIA_SUFFIXES = frozenset(
    ".mp4 .m4v .mkv .webm .mov .avi .mpg .mpeg .ts .flv .wmv .ogv .3gp"
    " .mp3 .m4a .aac .ogg .oga .opus .wav .flac".split()
)
MANIFEST_COLUMNS = ("source", "label", "group", "title")


@dataclass(frozen=True)
class SourceItem:
    """One thing to index: a path or URL, with the metadata a manifest or the command line gave it.

    ``recorded_source`` is what the catalog records as the video's source when that is not where the media is read
    from (an upload the web service received: its client's file name, not its temporary path).
    """

    source: str
    label: str | None = None
    group: str | None = None
    title: str | None = None
    recorded_source: str | None = None

    @property
    def catalog_source(self) -> str:
        """The source the catalog records and the outcome names."""
        return self.recorded_source or self.source


@dataclass(frozen=True)
class Outcome:
    """What happened to one item of a batch: ``status`` is indexed, skipped or failed."""

    source: str
    status: str
    reason: str = ""
    video: Video | None = None


def expand_sources(sources: Iterable[str | SourceItem], label: str | None = None) -> Iterator[SourceItem | Outcome]:
    """Expand command-line sources into items; a source that cannot be expanded yields a failed Outcome.

    A :class:`SourceItem` is one item already (the web service's, with its own label and title), taken as it is; a
    folder gives its media files (recursively, sorted); a ``.csv`` file is a manifest with a header naming some
    of ``source,label,group,title`` (paths relative to the manifest); a ``.json`` file is the study's
    ``{"Genre": [url, ...]}`` format; anything else is one item. ``label`` applies to items with no label.
    """
    for source in sources:
        if isinstance(source, SourceItem):
            yield source
            continue
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
            except MediaError as exc:
                yield Outcome(source, "failed", exc.reason)
                continue
            for item in items:
                yield item if item.label or not label else SourceItem(item.source, label, item.group, item.title)
        else:
            yield SourceItem(str(path), label=label)


def read_manifest(path: Path) -> list[SourceItem]:
    """Read a CSV manifest (header with ``source`` and optionally ``label,group,title``) or the study's JSON.

    Raises
    ------
    MediaError
        When the file is not a manifest of either format, or cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MediaError(str(path), f"not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise MediaError(str(path), f"cannot be read ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json":
        return _json_manifest(path, text)
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as exc:
        raise MediaError(str(path), f"not a readable CSV manifest ({exc})") from None
    if not rows or "source" not in rows[0]:
        raise MediaError(str(path), "not a manifest (a CSV needs a header with a 'source' column)")
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
        raise MediaError(str(path), f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(urls, list) and all(isinstance(url, str) for url in urls) for urls in data.values()
    ):
        raise MediaError(str(path), 'not a manifest (expected {"Label": ["url or path", ...], ...})')
    return [SourceItem(url, label=genre) for genre, urls in data.items() for url in urls]


