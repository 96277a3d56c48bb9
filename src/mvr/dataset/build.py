"""Building a benchmark collection: plan it, encode what is missing, write its manifest.

A benchmark collection is a set of labelled music videos assembled from real, openly licensed media. Each item is
a short H.264 + AAC music video made of an excerpt of a real music track and real pictures: a slideshow of
photographs or wallpapers with a slow pan or zoom, or a window of real footage. The label is the music's style
(one style per Debian music package); the picture style is recorded beside it, so that experiments can couple the
two (``coupled``), mostly couple them (``mixed``) or make them independent (``factorial``).

Sources are fetched once into mvr's cache folder (:mod:`mvr.dataset.sources`). Builds are deterministic for a seed
and resumable: every item's file name carries a digest of its recipe, and an item whose file exists is not encoded
again.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from mvr.config import RuntimeSettings
from mvr.dataset.plan import plan_collection
from mvr.dataset.render import encode_item
from mvr.dataset.sources import fetch_sources, locked, sources_dir
from mvr.dataset.spec import MANIFEST_COLUMNS, CollectionSpec, Item
from mvr.media import require_ffmpeg
from mvr.progress import Progress, note

_MAX_JOBS = 2


# -------------------------------------------------------------------------------------------- building ---

def build_collection(
    out_dir: Path,
    mode: str = "coupled",
    size: str = "small",
    progress: bool = True,
    *,
    spec: CollectionSpec | None = None,
    jobs: int = 2,
    cache_dir: Path | None = None,
) -> Path:
    """Build (or finish building) a labelled collection and write its manifest.

    Parameters
    ----------
    out_dir : Path
        Created if needed; items go to ``out_dir/items/``, the manifest to ``out_dir/manifest.csv``.
    mode : str
        ``coupled``, ``mixed`` or ``factorial``.
    size : str
        ``small`` (32 items, a few minutes on two cores) or ``full`` (over 200 items).
    progress : bool
        Say on standard error what is fetched (:func:`mvr.dataset.sources.fetch_sources`) and how the encodes go
        (:class:`mvr.progress.Progress`).
    spec : CollectionSpec or None
        Full control (duration, frame size, counts, styles, seed); replaces ``mode`` and ``size`` when given.
    jobs : int
        Parallel ffmpeg encodes, at most 2.
    cache_dir : Path, optional
        mvr's cache folder (``mvr.config.RuntimeSettings.cache_dir``), where the sources are kept.

    Returns
    -------
    Path
        The manifest, with columns :data:`MANIFEST_COLUMNS`; ``source`` is relative to ``out_dir``.
    """
    require_ffmpeg()
    spec = spec or CollectionSpec(mode=mode, size=size)
    sources = sources_dir(cache_dir or RuntimeSettings().cache_dir)
    out_dir = Path(out_dir)
    items_dir = out_dir / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir / ".build.lock"):
        spec.validate()
        fetch_sources(spec, sources, progress=progress)
        items = plan_collection(spec, sources)
        for leftover in items_dir.glob(".*.part.mp4"):
            leftover.unlink()  # from an interrupted build
        pending = [item for item in items if not (items_dir / item.file_name).exists()]
        if pending:
            _encode_all(pending, items_dir, jobs, progress, sources)
        else:
            note(f"encoding: all {len(items)} items already built", show=progress)
        _remove_stale_items(items_dir, {item.file_name for item in items})
        return write_manifest(items, out_dir)


_ITEM_FILE = re.compile(r".+-[0-9a-f]{8}\.mp4")


def _remove_stale_items(items_dir: Path, planned: set[str]) -> None:
    """Delete the item files of an earlier recipe (another mode, size or mvr version) built in this folder.

    The manifest no longer lists them, but indexing the folder itself would take them in. Only files named like
    items are touched.
    """
    for path in items_dir.glob("*.mp4"):
        if path.name not in planned and _ITEM_FILE.fullmatch(path.name):
            path.unlink()


def _encode_all(items: Sequence[Item], items_dir: Path, jobs: int, progress: bool, sources: Path) -> None:
    """Encode ``items``; the first failure cancels the encodes not started and is raised."""
    workers = max(1, min(jobs, _MAX_JOBS))
    with Progress("encoding", len(items), show=progress) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(encode_item, item, items_dir, sources) for item in items]
        try:
            for future in as_completed(futures):
                future.result()
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def write_manifest(items: Sequence[Item], out_dir: Path) -> Path:
    """Write ``out_dir/manifest.csv`` for ``items`` (already encoded under ``out_dir/items``)."""
    path = out_dir / "manifest.csv"
    staged = path.with_name(".manifest.csv.part")
    with open(staged, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for item in items:
            writer.writerow(_manifest_row(item))
    staged.replace(path)
    return path


def _manifest_row(item: Item) -> list[str]:
    visual_licences = " / ".join(dict.fromkeys(name for s in item.shots for name in s.asset.licence.split(" / ")))
    visual_sources = " ".join(dict.fromkeys(s.asset.key for s in item.shots))
    title = f"{item.track.title} ({item.label}, part {item.excerpt}) over {item.visual_style}"
    return [
        f"items/{item.file_name}", item.label, item.group, title, item.label, item.visual_style,
        f"music: {item.track.licence}; pictures: {visual_licences}", item.track.key, visual_sources,
        f"{item.start:.2f}", f"{item.start + item.duration:.2f}",
    ]

