"""The catalog: a self-contained folder with the media, one SQLite database and the feature vectors.

Layout of a catalog folder::

    DIR/catalog.sqlite      videos, vectors, sources, settings
    DIR/media/ab/<sha256>.<ext>   the media, content-addressed
    DIR/tmp/                downloads in flight
    DIR/index/<space>-<metric>/   a saved FAISS index of one space's vectors (mvr.index.faiss), with the
                                  generation and extractor it was built from
    DIR/map/<target>.json         a saved 2-D layout of the collection (mvr.retrieval.collection_map), with what
                                  it was computed from

Each video is written in one transaction, after its media file is in place, so a crash loses at most the item in
flight: an orphan media file may remain (it is reused when the same content comes again), a half-written row never.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr.errors import CatalogError

DATABASE_NAME = "catalog.sqlite"
INDEX_FOLDER = "index"
SCHEMA_VERSION = 1
# Bumped in the transaction of every change to the videos or vectors: searchers built from the vectors are kept
# while it stands still, in every thread and process that reads the catalog.
_GENERATION_KEY = "generation"
_WRITE_LOCK = ".write.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS videos (
    id           INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    source       TEXT NOT NULL,
    media_path   TEXT NOT NULL,
    title        TEXT NOT NULL,
    duration     REAL NOT NULL,
    label        TEXT,
    grp          TEXT,
    added_at     REAL NOT NULL,
    thumbnail    BLOB
);
-- "modality" holds the feature space's name (mvr.features.SPACES); the column keeps its first name so that older
-- catalogs open unchanged.
CREATE TABLE IF NOT EXISTS vectors (
    video_id  INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    modality  TEXT NOT NULL,
    extractor TEXT NOT NULL,
    dims      INTEGER NOT NULL,
    vector    BLOB NOT NULL,
    PRIMARY KEY (video_id, modality)
);
CREATE TABLE IF NOT EXISTS sources (
    source   TEXT PRIMARY KEY,
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS videos_label ON videos(label);
"""


@dataclass(frozen=True)
class Video:
    """One indexed music video, as the catalog lists it."""

    id: int
    title: str
    source: str
    label: str | None
    group: str | None
    duration: float
    content_hash: str
    media_path: Path
    spaces: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain JSON-able form."""
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "label": self.label,
            "group": self.group,
            "duration": round(self.duration, 3),
            "content_hash": self.content_hash,
            "modalities": list(self.spaces),
        }


@dataclass
class NewVideo:
    """Everything needed to add one video in a single transaction."""

    content_hash: str
    source: str
    media_file: Path
    title: str
    duration: float
    label: str | None = None
    group: str | None = None
    thumbnail: bytes | None = None
    vectors: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # space -> (extractor, vector)


@dataclass(frozen=True)
class VectorMatrix:
    """All vectors of one feature space and extractor, stacked in catalog order."""

    ids: np.ndarray  # int64, (n,)
    vectors: np.ndarray  # float32, (n, dims)
    extractor: str


class Catalog:
    """A catalog folder. Open it with :meth:`open`; use it as a context manager or call :meth:`close`.

    Parameters
    ----------
    root : Path
        The catalog folder.
    connection : sqlite3.Connection
        An open connection to ``root / DATABASE_NAME``.
    """

    def __init__(self, root: Path, connection: sqlite3.Connection) -> None:
        self.root = root
        self._db = connection

    @classmethod
    def open(cls, root: Path | str, create: bool = True) -> "Catalog":
        """Open the catalog in ``root``, creating the folder and database when ``create`` is true.

        Raises
        ------
        CatalogError
            When ``root`` holds no catalog and ``create`` is false, or the database is not an mvr catalog.
        """
        root = Path(root)
        database = root / DATABASE_NAME
        if not database.exists():
            if not create:
                raise CatalogError(f"{root}: no catalog here (create one with: mvr index SOURCE --catalog {root})")
            if root.exists() and not root.is_dir():
                raise CatalogError(f"{root}: is a file, not a catalog folder")
            root.mkdir(parents=True, exist_ok=True)
        if database.exists():
            _check_is_catalog(database)  # before anything is written to it
        connection = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(_SCHEMA)
            catalog = cls(root, connection)
            catalog._check_schema()
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise CatalogError(f"{database}: not an mvr catalog database ({exc})") from None
        return catalog

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the catalog's write lock: one indexing process at a time, and what dead ones left swept first.

        Readers (queries, the web service) need no lock. The lock is an ``flock`` on ``DIR/.write.lock``, released
        by the kernel when its holder dies, so a killed ``mvr index`` never blocks the next one.

        Raises
        ------
        CatalogError
            When another process is writing this catalog.
        """
        with open(self.root / _WRITE_LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise CatalogError(f"{self.root}: another mvr is adding videos to this catalog ({holder}); wait for"
                                   " it to finish, then run again (what it added is skipped)") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                sweep_leftovers(self.root)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _check_schema(self) -> None:
        stored = self.setting("schema_version")
        if stored is None:
            self.set_setting("schema_version", str(SCHEMA_VERSION))
        elif int(stored) != SCHEMA_VERSION:
            raise CatalogError(f"{self.root}: catalog schema {stored}, this mvr reads schema {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # settings ------------------------------------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        """Return a catalog-wide setting (for example the visual extractor every vector must share)."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        """Store a catalog-wide setting."""
        self._db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", (key, value))

    def space_settings(self, space: str) -> dict[str, str]:
        """A feature space's stored options (``<space>.<option>`` settings), without the prefix."""
        rows = self._db.execute("SELECT key, value FROM settings WHERE key LIKE ? ESCAPE '\\'",
                                (space.replace("_", "\\_") + ".%",))
        return {key[len(space) + 1:]: value for key, value in rows}

    def generation(self) -> int:
        """A number that changes with every change of the videos or vectors (0 for a new catalog)."""
        return int(self.setting(_GENERATION_KEY) or 0)

    def index_folder(self, space: str, metric: str) -> Path:
        """Where the saved search index of ``space``'s vectors under ``metric`` lives (it may not exist)."""
        return self.root / INDEX_FOLDER / f"{space}-{metric}"

    # reading -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]

    def find_by_hash(self, content_hash: str) -> Video | None:
        """Return the video with this content hash, if indexed."""
        return self._one("WHERE v.content_hash = ?", (content_hash,))

    def find_by_source(self, source: str) -> Video | None:
        """Return the video indexed from this URL or path, if any."""
        return self._one("WHERE v.id = (SELECT video_id FROM sources WHERE source = ?)", (source,))

    def get(self, video_id: int) -> Video | None:
        """Return one video by id."""
        return self._one("WHERE v.id = ?", (video_id,))

    def videos(self, label: str | None = None, limit: int | None = None, offset: int = 0) -> list[Video]:
        """List videos in id order, optionally only those with ``label``."""
        where, params = ("WHERE v.label = ?", [label]) if label is not None else ("", [])
        page = " LIMIT ? OFFSET ?" if limit is not None else ""
        if limit is not None:
            params += [limit, offset]
        return self._many(f"{where} ORDER BY v.id{page}", tuple(params))

    def spaces(self) -> list[str]:
        """The feature spaces some video has vectors of, sorted."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT modality FROM vectors ORDER BY modality")]

    def labels(self) -> list[str]:
        """Distinct labels, sorted."""
        rows = self._db.execute("SELECT DISTINCT label FROM videos WHERE label IS NOT NULL ORDER BY label")
        return [row[0] for row in rows]

    def thumbnail(self, video_id: int) -> bytes | None:
        """The video's thumbnail JPEG, if it has pictures."""
        row = self._db.execute("SELECT thumbnail FROM videos WHERE id = ?", (video_id,)).fetchone()
        return row[0] if row else None

    def vector(self, video_id: int, space: str) -> tuple[str, np.ndarray] | None:
        """Return ``(extractor, vector)`` of one video and feature space, or None."""
        row = self._db.execute(
            "SELECT extractor, dims, vector FROM vectors WHERE video_id = ? AND modality = ?", (video_id, space)
        ).fetchone()
        if row is None:
            return None
        return row[0], np.frombuffer(row[2], dtype=np.float32, count=row[1])

    def matrix(self, space: str) -> VectorMatrix | None:
        """All vectors of one feature space stacked as float32, read afresh (callers keep what they build from it).

        Returns None when the catalog has no vector of that space.

        Raises
        ------
        CatalogError
            When the space's vectors come from several extractors.
        """
        extractors = [row[0] for row in self._db.execute(
            "SELECT DISTINCT extractor FROM vectors WHERE modality = ? LIMIT 2", (space,))]
        if not extractors:
            return None
        if len(extractors) > 1:
            raise CatalogError(
                f"{self.root}: {space} vectors from several extractors ({', '.join(sorted(extractors))});"
                " re-index into a new catalog"
            )
        count, dims = self._db.execute(
            "SELECT COUNT(*), MAX(dims) FROM vectors WHERE modality = ?", (space,)).fetchone()
        # Row by row into one float32 matrix: the blobs are never all held at once (1M visual rows are 10 GB).
        # The count is a statement older than the rows' (a writer may add between): the matrix grows if need be.
        ids = np.empty(count, dtype=np.int64)
        vectors = np.empty((count, dims), dtype=np.float32)
        row = 0
        for row, (video_id, vector) in enumerate(self._db.execute(
                "SELECT video_id, vector FROM vectors WHERE modality = ? ORDER BY video_id", (space,)), start=1):
            if row > ids.size:
                ids, vectors = np.resize(ids, 2 * row), np.resize(vectors, (2 * row, dims))
            ids[row - 1] = video_id
            vectors[row - 1] = np.frombuffer(vector, dtype=np.float32, count=dims)
        ids, vectors = ids[:row], vectors[:row]
        return VectorMatrix(ids=ids, vectors=vectors, extractor=extractors[0])

    def _one(self, where: str, params: tuple) -> Video | None:
        found = self._many(where, params)
        return found[0] if found else None

    def _many(self, tail: str, params: tuple) -> list[Video]:
        query = (
            "SELECT v.id, v.title, v.source, v.label, v.grp, v.duration, v.content_hash, v.media_path,"
            " (SELECT group_concat(modality) FROM (SELECT modality FROM vectors WHERE video_id = v.id"
            " ORDER BY modality)) FROM videos v " + tail
        )
        return [
            Video(
                id=row[0], title=row[1], source=row[2], label=row[3], group=row[4], duration=row[5],
                content_hash=row[6], media_path=self.root / row[7],
                spaces=tuple(row[8].split(",")) if row[8] else (),
            )
            for row in self._db.execute(query, params)
        ]

    # writing -------------------------------------------------------------------------------------------------

    def add(self, new: NewVideo) -> Video:
        """Store a video: copy its media into the catalog, then write its rows in one transaction.

        Raises
        ------
        CatalogError
            When a vector's extractor differs from the one the catalog already uses for that space.
        """
        for space, (extractor, _vector) in new.vectors.items():
            self.check_extractor(space, extractor)
        media_path = self._store_media(new.media_file, new.content_hash)
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO videos(content_hash, source, media_path, title, duration, label, grp, added_at,"
                " thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.content_hash, new.source, media_path.relative_to(self.root).as_posix(), new.title,
                 new.duration, new.label, new.group, time.time(), new.thumbnail),
            )
            video_id = cursor.lastrowid
            self._insert_vectors(video_id, new.vectors)
            self._db.execute("INSERT OR REPLACE INTO sources(source, video_id) VALUES (?, ?)", (new.source, video_id))
            self.set_setting(_GENERATION_KEY, str(self.generation() + 1))
        return self.get(video_id)

    def add_vectors(self, video_id: int, vectors: dict[str, tuple[str, np.ndarray]]) -> None:
        """Store more vectors of an indexed video (a space added since), in one transaction.

        Raises
        ------
        CatalogError
            When a vector's extractor differs from the catalog's for that space, or the video already has one.
        """
        for space, (extractor, _vector) in vectors.items():
            self.check_extractor(space, extractor)
        with self._transaction():
            self._insert_vectors(video_id, vectors)
            self.set_setting(_GENERATION_KEY, str(self.generation() + 1))

    def _insert_vectors(self, video_id: int, vectors: dict[str, tuple[str, np.ndarray]]) -> None:
        for space, (extractor, vector) in vectors.items():
            vector = np.ascontiguousarray(vector, dtype=np.float32)
            try:
                self._db.execute(
                    "INSERT INTO vectors(video_id, modality, extractor, dims, vector) VALUES (?, ?, ?, ?, ?)",
                    (video_id, space, extractor, vector.size, vector.tobytes()),
                )
            except sqlite3.IntegrityError:
                raise CatalogError(f"{self.root}: video {video_id} already has {space} vectors") from None
            if self.setting(f"extractor.{space}") is None:
                self.set_setting(f"extractor.{space}", extractor)

    def add_source_alias(self, source: str, video_id: int) -> None:
        """Remember that ``source`` (another URL or path) has the same content as ``video_id``."""
        self._db.execute("INSERT OR REPLACE INTO sources(source, video_id) VALUES (?, ?)", (source, video_id))

    def check_extractor(self, space: str, extractor: str) -> None:
        """Refuse vectors that cannot be compared with the catalog's (another backbone or extractor version)."""
        stored = self.setting(f"extractor.{space}")
        if stored is not None and stored != extractor:
            raise CatalogError(
                f"{self.root}: this catalog's {space} vectors come from '{stored}', not '{extractor}';"
                f" use the catalog's settings, or index into a new catalog folder to use '{extractor}'"
            )

    def _store_media(self, media_file: Path, content_hash: str) -> Path:
        """Copy a media file to its content-addressed place; the rename makes it appear whole or not at all."""
        suffix = media_file.suffix.lower() or ".bin"
        target = self.root / "media" / content_hash[:2] / f"{content_hash}{suffix}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            shutil.copyfile(media_file, partial)
            # On disk before the rename, and the rename on disk before the row that names the file is committed:
            # a power loss cannot leave a committed row pointing at a short file.
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(partial, target)
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return target

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


def _check_is_catalog(database: Path) -> None:
    """Refuse a database that is not an mvr catalog, reading it only (another program's file stays untouched)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as reading:
            found = reading.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{database}: not an mvr catalog database ({exc})") from None
    if found is None:
        raise CatalogError(f"{database}: not an mvr catalog database (no schema version)")


def sweep_leftovers(root: Path) -> list[Path]:
    """Remove what processes that died left in a catalog folder; return what was removed.

    Media copies and map layouts in flight are named ``.<file>.<pid>.part``, downloads and uploads
    ``tmp/<kind>-<pid>-*``: each is removed once its process is gone, never while it runs.
    """
    removed = []
    candidates = [*root.glob("media/*/.*.part"), *root.glob("map/.*.part"), *root.glob("tmp/download-*"),
                  *root.glob("tmp/upload-*")]
    for path in candidates:
        pid = _owner(path.name)
        if pid is None or _alive(pid):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _owner(name: str) -> int | None:
    """The pid in a temporary file's or folder's name (``.x.mp4.123.part``, ``download-123-abc``)."""
    found = re.fullmatch(r"\..*\.(\d+)\.part|(?:download|upload)-(\d+)-.*", name)
    return int(found.group(1) or found.group(2)) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection runs in autocommit mode)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
