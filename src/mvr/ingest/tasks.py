"""The two tasks of indexing one item, as an executor runs them: prepare (resolve the source) and extract.

Both are plain functions of plain data, so that any executor (a thread, a worker process, a cluster node) can run
them; each returns a result or a :class:`Failed` with the reason, never raises for a bad item, so that the batch
always goes on. A failure nobody foresaw (a bug) becomes a failed item whose reason names the exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mvr import media
from mvr.config import RuntimeSettings
from mvr.errors import MediaError, MvrError
from mvr.features import Extractor, Features, SpaceOptions, extract_features
from mvr.ingest.policy import SourcePolicy
from mvr.ingest.resolve import ResolvedMedia, resolve
from mvr.ingest.sources import SourceItem


@dataclass(frozen=True)
class ExtractionPlan:
    """What every worker needs to build its extractors once: each space's options, and the run-time settings."""

    options: Mapping[str, SpaceOptions]
    runtime: RuntimeSettings


@dataclass(frozen=True)
class Failed:
    """Why an item could not be prepared or extracted (a MediaError itself may not cross a process boundary)."""

    reason: str


@dataclass(frozen=True)
class Extracted:
    """An item's vectors and thumbnail, ready to be written."""

    features: Features
    thumbnail: bytes | None


def prepare(item: SourceItem, tmp_dir: Path, policy: SourcePolicy) -> ResolvedMedia | Failed:
    """Download (a URL), probe and hash one item."""
    try:
        return resolve(item.source, policy=policy, tmp_dir=tmp_dir)
    except Exception as exc:  # every failure of one item is that item's, reported with its reason
        return Failed(failure_reason(exc))


def extract(resolved: ResolvedMedia, extractors: Mapping[str, Extractor], threads: int) -> Extracted | Failed:
    """Compute one resolved item's vectors and thumbnail."""
    try:
        features = extract_features(resolved.path, extractors, threads=threads, info=resolved.info)
        return Extracted(features, media.thumbnail_jpeg(resolved.path, resolved.info))
    except Exception as exc:  # as in prepare: the item fails, the batch goes on
        return Failed(failure_reason(exc))


def failure_reason(exc: BaseException) -> str:
    """One line saying why an item failed: mvr's own reason, the system's, or the unforeseen exception's type."""
    if isinstance(exc, MediaError):
        return exc.reason
    if isinstance(exc, MvrError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = " ".join(str(exc).split())[:200]
    return f"internal error ({type(exc).__name__}{': ' + text if text else ''})"
