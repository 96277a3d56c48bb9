"""The paths that make indexing fast and bounded: parallel indexing, audio decoded in blocks. Functional, not timed."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvr import media
from mvr.cli import main
from mvr.errors import MediaError, UsageError
from mvr.features import pyaudioanalysis as audio
from mvr.ingest.pipeline import index_sources
from mvr.media import decode
from mvr.media.decode import _pcm_wav
from mvr.store import Catalog


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
    with Catalog.open(tmp_path / "catalog") as catalog, pytest.raises(UsageError, match="jobs"):
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
    monkeypatch.setattr(decode, "_PIPE_BLOCK", block)
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


def _ffmpeg_pcm(path: Path, channels: int) -> np.ndarray:
    """What ffmpeg decodes a file's first audio stream to: 16-bit samples, interleaved."""
    return np.frombuffer(subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-ac", str(channels), "-f", "s16le", "-"],
        capture_output=True, check=True).stdout, dtype="<i2")


def _extensible_wav(pcm: np.ndarray, channels: int, rate: int) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE file of 16-bit PCM (the header ffmpeg's wav muxer writes for odd layouts)."""
    fmt = (0xFFFE).to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little") \
        + (rate * 2 * channels).to_bytes(4, "little") + (2 * channels).to_bytes(2, "little") \
        + (16).to_bytes(2, "little") + (22).to_bytes(2, "little") + (16).to_bytes(2, "little") \
        + (3).to_bytes(4, "little") + bytes.fromhex("0100000000001000800000aa00389b71")
    data = pcm.astype("<i2").tobytes()
    chunks = b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + (4 + len(chunks)).to_bytes(4, "little") + b"WAVE" + chunks


def test_pcm_wav_is_read_in_place_with_ffmpegs_samples(music_tracks, tmp_path: Path) -> None:
    stereo = music_tracks[0]  # ffmpeg's own WAV: a LIST chunk comes before the data
    mono = tmp_path / "mono.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-t", "3", "-i", str(stereo), "-ac", "1", str(mono)],
                   check=True, capture_output=True)
    extensible = tmp_path / "extensible.wav"
    extensible.write_bytes(_extensible_wav(_ffmpeg_pcm(stereo, 2)[: 2 * 44100 * 2], 2, 44100))
    cut = tmp_path / "cut.wav"  # its header claims more data than the file holds, and half a frame ends it
    cut.write_bytes(stereo.read_bytes()[: 3 * 44100 * 4 + 1001])
    for path, channels in ((stereo, 2), (mono, 1), (extensible, 2), (cut, 2)):
        assert _pcm_wav(path) is not None, path.name
        pcm = _ffmpeg_pcm(path, channels)
        expected = pcm.astype(np.float64) if channels == 1 else pcm[1::2] / 2 + pcm[0::2] / 2
        info = media.probe(path)  # from the header, as ffprobe would say it
        assert (info.has_audio, info.has_video, info.channels, info.sample_rate) == (True, False, channels, 44100)
        assert info.duration == pytest.approx(expected.size / 44100)
        with media.open_audio(path, info) as decoded:
            assert decoded.size == expected.size
            assert (decoded.mean, decoded.maximum, decoded.minimum) == (expected.mean(), expected.max(),
                                                                        expected.min())
            np.testing.assert_array_equal(decoded.read(0, decoded.size), expected)
        assert path.exists()  # the file itself was read, and is left alone


def test_other_wav_files_go_through_ffmpeg(music_tracks, tmp_path: Path) -> None:
    deep = tmp_path / "24-bit.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-t", "2", "-i", str(music_tracks[0]), "-c:a", "pcm_s24le",
                    str(deep)], check=True, capture_output=True)
    assert _pcm_wav(deep) is None
    pcm = _ffmpeg_pcm(deep, 2)
    with media.open_audio(deep) as decoded:  # decoded by ffmpeg to 16 bits, like any other file
        np.testing.assert_array_equal(decoded.read(0, decoded.size), pcm[1::2] / 2 + pcm[0::2] / 2)
    not_wav = tmp_path / "not.wav"
    not_wav.write_bytes(b"RIFF\x04\x00\x00\x00WAVE" + b"junk" * 10)
    assert _pcm_wav(not_wav) is None
    with pytest.raises(MediaError, match="not a media file"):
        media.probe(not_wav)
