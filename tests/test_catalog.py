"""The SQLite catalog: atomic writes, content-addressed media, extractor consistency."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mvr.errors import CatalogError
from mvr.store.catalog import DATABASE_NAME, Catalog, NewVideo


def new_video(tmp_path: Path, name: str, audio: np.ndarray, visual: np.ndarray | None = None, **extra) -> NewVideo:
    media_file = tmp_path / f"{name}.mp4"
    media_file.write_bytes(name.encode() * 100)
    vectors = {"audio": ("audio-v1", audio)}
    if visual is not None:
        vectors["visual"] = ("visual-v1", visual)
    return NewVideo(content_hash=f"{name:0<64}", source=str(media_file), media_file=media_file, title=name,
                    duration=30.0, vectors=vectors, **extra)


def test_add_and_read_back(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "cat") as catalog:
        video = catalog.add(new_video(tmp_path, "a", np.arange(4, dtype=np.float32), np.ones(6), label="Pop",
                                      group="song1", thumbnail=b"\xff\xd8jpeg"))
        assert video.id == 1 and video.label == "Pop" and video.group == "song1"
        assert video.spaces == ("audio", "visual")
        assert video.media_path.read_bytes() == b"a" * 100
        assert video.media_path.is_relative_to(tmp_path / "cat" / "media")
        extractor, vector = catalog.vector(video.id, "audio")
        assert extractor == "audio-v1" and vector.dtype == np.float32
        np.testing.assert_array_equal(vector, np.arange(4))
        assert catalog.thumbnail(video.id) == b"\xff\xd8jpeg"
        assert catalog.find_by_hash(video.content_hash) == video
        assert catalog.find_by_source(video.source) == video
    # Reopened from disk, everything is still there.
    with Catalog.open(tmp_path / "cat", create=False) as catalog:
        assert len(catalog) == 1 and catalog.labels() == ["Pop"]


def test_matrix_stacks_float32_in_id_order_and_refreshes_after_add(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "cat") as catalog:
        catalog.add(new_video(tmp_path, "a", np.zeros(3)))
        first = catalog.matrix("audio")
        assert first.vectors.shape == (1, 3) and first.vectors.dtype == np.float32
        catalog.add(new_video(tmp_path, "b", np.ones(3), np.ones(2)))
        second = catalog.matrix("audio")
        assert second.ids.tolist() == [1, 2]
        np.testing.assert_array_equal(second.vectors, [[0, 0, 0], [1, 1, 1]])
        assert catalog.matrix("visual").ids.tolist() == [2]


def test_vectors_from_another_extractor_are_refused_whole(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "cat") as catalog:
        catalog.add(new_video(tmp_path, "a", np.zeros(3)))
        other = new_video(tmp_path, "b", np.zeros(3))
        other.vectors["audio"] = ("audio-v2", np.zeros(3))
        with pytest.raises(CatalogError, match="audio-v2"):
            catalog.add(other)
        assert len(catalog) == 1


def test_a_failed_transaction_leaves_nothing_half_written(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "cat") as catalog:
        catalog.add(new_video(tmp_path, "a", np.zeros(3)))
        duplicate = new_video(tmp_path, "a", np.zeros(3))  # same content hash: the insert fails
        duplicate.source = "elsewhere"
        with pytest.raises(sqlite3.IntegrityError):
            catalog.add(duplicate)
        assert len(catalog) == 1
        assert catalog.find_by_source("elsewhere") is None
        count = catalog._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        assert count == 1


def test_opening_a_missing_catalog_without_create_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog here"):
        Catalog.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_a_foreign_file_is_not_taken_for_a_catalog(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / DATABASE_NAME).write_text("not sqlite at all" * 100)
    with pytest.raises(CatalogError, match="not an mvr catalog"):
        Catalog.open(tmp_path / "cat")


def test_matrix_sees_videos_added_through_another_connection(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "cat") as reader, Catalog.open(tmp_path / "cat") as writer:
        writer.add(new_video(tmp_path, "a", np.zeros(3)))
        assert reader.matrix("audio").ids.tolist() == [1]
        writer.add(new_video(tmp_path, "b", np.ones(3)))
        assert reader.matrix("audio").ids.tolist() == [1, 2]
