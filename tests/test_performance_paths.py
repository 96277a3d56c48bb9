"""The paths that make indexing fast and bounded: parallel indexing, audio decoded in blocks. Functional, not timed."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvr import audio, media
from mvr.catalog import Catalog
from mvr.cli import main
from mvr.collection import index_sources
from mvr.errors import MediaError


def catalog_rows(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "catalog.sqlite") as db:
        return db.execute("SELECT v.id, v.title, v.source, x.modality, x.vector FROM videos v"
                          " JOIN vectors x ON x.video_id = v.id ORDER BY v.id, x.modality").fetchall()


@pytest.mark.slow
def test_parallel_indexing_gives_the_serial_catalog(music_videos, bad_media, tmp_path: Path) -> None:
    copy = tmp_path / "same-content.mp4"  # a duplicate within the batch: extracted once, then an alias
    shutil.copyfile(music_videos.paths[0], copy)
    sources = [str(p) for p in music_videos.paths[:3]] + [str(bad_media["not_media"]), str(copy),
                                                           str(bad_media["no_audio"])]
    reports = {}
    for jobs in (1, 2):
        with Catalog.open(tmp_path / f"catalog-{jobs}") as catalog:
            reports[jobs] = index_sources(catalog, sources, progress=False, jobs=jobs)
    for report in reports.values():
        assert [o.source for o in report.outcomes] == sources  # in the order of the sources
        assert [o.status for o in report.outcomes] == ["indexed"] * 3 + ["failed", "skipped", "indexed"]
        assert "not a media file" in report.outcomes[3].reason
        assert report.outcomes[4].video.id == report.outcomes[0].video.id
        assert "audio skipped" in report.outcomes[5].reason
    serial, parallel = catalog_rows(tmp_path / "catalog-1"), catalog_rows(tmp_path / "catalog-2")
    assert [row[:4] for row in serial] == [row[:4] for row in parallel]  # same ids, titles, sources, modalities
    for one, other in zip(serial, parallel):
        got, expected = np.frombuffer(other[4], np.float32), np.frombuffer(one[4], np.float32)
        if one[3] == "audio":
            np.testing.assert_array_equal(got, expected)
        else:  # torch sums in another order with one thread per worker
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_index_command_takes_jobs(music_videos, bad_media, tmp_path: Path, capsys) -> None:
    sources = [str(music_videos.paths[1]), str(bad_media["empty"]), str(music_videos.paths[2])]
    code = main(["index", *sources, "--catalog", str(tmp_path / "catalog"), "--jobs", "2"])
    out, err = capsys.readouterr()
    assert code == 1  # an item failed; the others are indexed
    assert "2 indexed, 0 skipped, 1 failed" in out
    assert "empty file" in err
    with pytest.raises(SystemExit):
        main(["index", sources[0], "--catalog", str(tmp_path / "other"), "--jobs", "0"])


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "catalog") as catalog, pytest.raises(ValueError, match="jobs"):
        index_sources(catalog, [], jobs=0)


@pytest.fixture(scope="module")
def surround(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six channels of AAC: ffmpeg downmixes them to stereo first."""
    target = tmp_path_factory.mktemp("audio") / "six.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=f=300:d=3", "-f", "lavfi",
                    "-i", "anoisesrc=d=3:a=0.3", "-filter_complex", "[0][1][0][1][0][1]amerge=inputs=6",
                    "-c:a", "aac", str(target)], check=True, capture_output=True)
    return target


@pytest.mark.parametrize("block", [1 << 20, 1001])  # 1001 bytes: frames cut across the pipe's reads
def test_streamed_audio_equals_the_whole_signal(music_videos, music_tracks, surround, monkeypatch,
                                                block: int) -> None:
    monkeypatch.setattr(media, "_PIPE_BLOCK", block)
    mono = music_tracks[0].with_name("mono-excerpt.wav")
    if not mono.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-t", "4", "-i", str(music_tracks[0]), "-ac", "1",
                        str(mono)], check=True, capture_output=True)
    for path in (music_videos.paths[0], mono, surround):
        info = media.probe(path)
        # What pyAudioAnalysis reads: 16-bit PCM, the channels' halves added.
        pcm = np.frombuffer(subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-ac", str(min(info.channels, 2)), "-f", "s16le", "-"],
            capture_output=True, check=True).stdout, dtype="<i2")
        expected = pcm.astype(np.float64) if info.channels == 1 else pcm[1::2] / 2 + pcm[0::2] / 2
        with media.open_audio(path) as decoded:
            assert decoded.size == expected.size and decoded.sample_rate == info.sample_rate
            # Bit-exact statistics: pyAudioAnalysis normalises the whole signal by them.
            assert (decoded.mean, decoded.maximum, decoded.minimum) == (expected.mean(), expected.max(),
                                                                        expected.min())
            np.testing.assert_array_equal(decoded.read(0, decoded.size), expected)
            out = np.full(5000, np.nan)
            np.testing.assert_array_equal(decoded.read(777, 3777, out=out), expected[777:3777])
            assert decoded.read(decoded.size - 10, decoded.size + 10).size == 10
        assert decoded._spool.closed  # the temporary file is gone with it


def test_audio_vector_streams_the_same_numbers_as_the_whole_signal(music_videos, monkeypatch) -> None:
    path = music_videos.paths[1]
    signal, rate = media.decode_audio(path)
    whole = np.median(audio.segment_features(signal, rate), axis=1).astype(np.float32)
    monkeypatch.setattr(audio, "_CHUNK_SAMPLES", 1 << 14)  # many chunks, each read back from the file
    np.testing.assert_array_equal(audio.audio_vector(path), whole)


def test_streamed_decoding_reports_unusable_audio(bad_media) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        media.open_audio(bad_media["no_audio"])
    # A stale probe result: ffmpeg itself then fails, and says why.
    said = media.MediaInfo(duration=10.0, has_audio=True, has_video=False, sample_rate=44100, channels=2)
    with pytest.raises(MediaError, match="audio could not be decoded"):
        media.open_audio(bad_media["not_media"], said)
