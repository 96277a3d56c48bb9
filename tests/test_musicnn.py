"""MusiCNN embeddings without TensorFlow (mvr.musicnn) against the original musicnn on real music.

The reference, tests/data/musicnn_reference.json, was computed once by musicnn 0.1.0 itself (TensorFlow 2.15 +
librosa 0.11, see tests/data/musicnn_make_reference.py) on 10 s excerpts of three Debian game-music tracks; the
JSON holds each excerpt's recipe (package, member, start, duration, ffmpeg command), so the test decodes the same
16 kHz samples from the same Debian file. The weights come from PyPI's musicnn wheel, fetched into the shared test
cache on first use (about 30 MB) and kept there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvr.config import RuntimeSettings
from mvr.dataset.sources import music_tracks as style_tracks
from mvr.dataset.sources import sources_dir
from mvr.dataset.spec import MUSIC_STYLES
from mvr.errors import MediaError, MvrError
from mvr.features import musicnn

REFERENCE = json.loads((Path(__file__).parent / "data" / "musicnn_reference.json").read_text())
# Measured: at most 1.7e-5 of the vector's largest value (VGG pool5 of one patch), ~2e-6 for MusiCNN's layers.
TOLERANCE = 1e-4
# Another ffmpeg build may resample differently; then only closeness, not the port's exactness, can be tested.
LOOSE_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def cache_dir(runtime: RuntimeSettings) -> Path:
    return runtime.cache_dir


@pytest.fixture(scope="module")
def excerpts(cache_dir: Path) -> dict[str, tuple[np.ndarray, bool]]:
    """Each reference excerpt's 16 kHz samples, and whether they are bit-identical to the reference's."""
    decoded = {}
    for excerpt in REFERENCE["excerpts"]:
        style = next(s for s, src in MUSIC_STYLES.items() if src.package == excerpt["package"])
        track = next(t for t in style_tracks(style, sources_dir(cache_dir)) if t.member == excerpt["member"])
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{excerpt['start']:g}", "-t", f"{excerpt['duration']:g}",
               "-i", str(track.path), "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-acodec",
               "pcm_f32le", "pipe:1"]
        raw = subprocess.run(cmd, check=True, capture_output=True).stdout
        same = hashlib.sha256(raw).hexdigest() == excerpt["samples_sha256"]
        decoded[excerpt["name"]] = (np.frombuffer(raw, dtype="<f4").copy(), same)
    return decoded


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest difference relative to the reference vector's largest magnitude."""
    theirs = np.asarray(theirs, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - theirs).max() / np.abs(theirs).max())


def test_checkpoint_reader_reads_the_tensors_musicnn_declares(cache_dir: Path) -> None:
    folder = musicnn.ensure_weights(cache_dir=cache_dir)
    entries = musicnn.read_checkpoint_index(f"{folder / 'MSD_musicnn'}/")
    # models.py: 1.6 x 128 timbral filters of 7 x int(0.4 * 96) and 7 x int(0.7 * 96); 1.6 x 32 temporal filters;
    # 64 mid-end filters over 561 front-end features; dense 2 x 753 -> 200 -> 50 tags.
    expected = {"conv2d/kernel": (7, 38, 1, 204), "conv2d_1/kernel": (7, 67, 1, 204),
                "conv2d_2/kernel": (128, 1, 1, 51), "conv2d_4/kernel": (32, 1, 1, 51),
                "conv2d_5/kernel": (7, 561, 1, 64), "conv2d_7/kernel": (7, 64, 1, 64),
                "batch_normalization_9/gamma": (1506,), "dense/kernel": (1506, 200), "dense_1/kernel": (200, 50)}
    assert {name: entries[name].shape for name in expected} == expected
    assert all(entries[name].dtype == np.float32 for name in expected)
    assert "dense/kernel/Adam" in entries  # the optimiser state is there too, and left unread
    tensors = musicnn.read_checkpoint(f"{folder / 'MSD_musicnn'}/",
                                      ["dense_1/bias", "batch_normalization_9/moving_variance"])
    assert tensors["dense_1/bias"].shape == (50,) and np.isfinite(tensors["dense_1/bias"]).all()
    assert (tensors["batch_normalization_9/moving_variance"] > 0).all()  # variances: real trained values
    vgg = musicnn.read_checkpoint_index(f"{folder / 'MTT_vgg'}/")
    assert vgg["1CNN/kernel"].shape == (3, 3, 1, 128) and vgg["dense/kernel"].shape == (256, 50)


def test_log_mel_matches_librosa(excerpts: dict[str, tuple[np.ndarray, bool]]) -> None:
    for excerpt in REFERENCE["excerpts"]:
        samples, same = excerpts[excerpt["name"]]
        mel = musicnn.log_mel(samples)
        assert mel.shape == (excerpt["frames"], 96) and mel.dtype == np.float32
        for frame, expected in excerpt["log_mel"].items():
            diff = np.abs(mel[int(frame)] - np.asarray(expected, dtype=np.float32))
            if same:
                # Equal but for a rare mel value that float16 rounds the other way (measured: 5 of 60,096 values).
                assert diff.max() < 1e-3 and (diff < 1e-5).mean() > 0.98
            else:
                assert diff.max() < 0.05


def test_log_mel_shapes_and_float16_trap() -> None:
    seconds = np.arange(3 * 16000) / 16000
    loud = np.sin(2 * np.pi * 110 * seconds).astype(np.float32)  # full scale: mel power far above float16's 6.5
    mel = musicnn.log_mel(loud)
    assert mel.shape == (1 + loud.size // 256, 96) and np.isfinite(mel).all() and mel.max() > 6
    assert musicnn.patches(mel).shape == (1, 187, 96)
    assert musicnn.patches(musicnn.log_mel(loud[:musicnn.MIN_SAMPLES - 1])).shape == (0, 187, 96)
    assert musicnn.patches(np.zeros((187 * 3 + 5, 96), np.float32)).shape == (3, 187, 96)
    with pytest.raises(ValueError, match="16000 Hz"):
        musicnn.log_mel(loud, sample_rate=44100)


@pytest.mark.parametrize("name", list(musicnn.MODELS))
def test_network_matches_tensorflow(name: str, cache_dir: Path,
                                    excerpts: dict[str, tuple[np.ndarray, bool]]) -> None:
    model = musicnn.load_model(name, cache_dir=cache_dir)
    assert model.layer == REFERENCE["embedding_layers"][name]
    for excerpt in REFERENCE["excerpts"]:
        samples, same = excerpts[excerpt["name"]]
        cut = musicnn.patches(musicnn.log_mel(samples))
        assert len(cut) == excerpt["patches"]
        expected = excerpt["models"][name]
        embeddings = model.embed_patches(cut)
        assert embeddings.shape == (len(cut), model.dims) and embeddings.dtype == np.float32
        taggram = model.outputs(cut)["taggram"]
        tolerance = TOLERANCE if same else LOOSE_TOLERANCE
        assert _relative(embeddings[0], expected["patch0"]) < tolerance
        assert _relative(embeddings.mean(axis=0), expected["embedding"]) < tolerance
        assert _relative(taggram.mean(axis=0), expected["taggram"]) < tolerance


def test_batching_does_not_change_embeddings(cache_dir: Path, excerpts: dict[str, tuple[np.ndarray, bool]]) -> None:
    model = musicnn.load_model("MSD_musicnn", cache_dir=cache_dir)
    cut = musicnn.patches(musicnn.log_mel(excerpts["orchestral"][0]))
    one_by_one = model.embed_patches(cut, batch_size=1)
    np.testing.assert_allclose(model.embed_patches(cut, batch_size=3), one_by_one, rtol=1e-5, atol=1e-5)


def test_musicnn_vector_on_real_music(cache_dir: Path, music_tracks: list[Path]) -> None:
    model = musicnn.load_model(musicnn.DEFAULT_MODEL, cache_dir=cache_dir)
    vectors = {path: musicnn.musicnn_vector(path, model=model) for path in music_tracks}
    for path, vector in vectors.items():
        assert vector.shape == (model.dims,) and vector.dtype == np.float32 and np.isfinite(vector).all()
    # The 44.1 kHz stereo WAV decoded by ffmpeg to 16 kHz mono gives the same vector as the steps one by one.
    first = music_tracks[0]
    steps = model.embed_patches(musicnn.patches(musicnn.log_mel(musicnn.decode_16k(first)))).mean(axis=0)
    np.testing.assert_allclose(vectors[first], steps, rtol=1e-6, atol=1e-6)
    # The tags say what a listener hears (MagnaTagATune's taggram, top five): Nexuiz's tracks are electronic,
    # Wesnoth's are played by strings. (Nearest neighbours are not asserted: on these four tracks one industrial
    # track's nearest is orchestral, as the per-label numbers lead one to expect.)
    tagger = musicnn.load_model("MTT_musicnn", cache_dir=cache_dir, layer="taggram")
    for path in music_tracks:
        tags = musicnn_top_tags(musicnn.musicnn_vector(path, model=tagger), tagger, 5)
        wanted = {"electronic", "techno"} if path.name.startswith("industrial") else {"classical", "strings", "violin"}
        assert wanted & set(tags), (path.name, tags)


def musicnn_top_tags(taggram: np.ndarray, model: musicnn.MusicnnModel, count: int) -> list[str]:
    return [model.spec.labels[i] for i in np.argsort(-taggram)[:count]]


def test_media_errors_name_the_file_and_reason(cache_dir: Path, bad_media: dict[str, Path]) -> None:
    model = musicnn.load_model(musicnn.DEFAULT_MODEL, cache_dir=cache_dir)
    with pytest.raises(MediaError, match="no audio stream") as caught:
        musicnn.musicnn_vector(bad_media["no_audio"], model=model)
    assert caught.value.item == str(bad_media["no_audio"])
    with pytest.raises(MediaError, match=r"too short for musicnn \(0\.\d+ s; it needs at least 2\.976 s"):
        musicnn.musicnn_vector(bad_media["too_short"], model=model)
    with pytest.raises(MediaError, match="not a media file"):
        musicnn.musicnn_vector(bad_media["not_media"], model=model)


def test_extractor_names_model_layer_pooling_and_weights(cache_dir: Path) -> None:
    names = {}
    for name, spec in musicnn.MODELS.items():
        model = musicnn.load_model(name, cache_dir=cache_dir)
        assert re.fullmatch(rf"musicnn-0\.1\.0/{name}/{spec.default_layer}/mean/sha256-[0-9a-f]{{12}}/v1",
                            model.extractor)
        names[name] = model.extractor
        assert model.dims == spec.layers[spec.default_layer]
    assert len(set(names.values())) == 4
    # Same weights checksum, other layer: another extractor.
    taggram = musicnn.load_model("MSD_musicnn", cache_dir=cache_dir, layer="taggram")
    assert taggram.extractor != names["MSD_musicnn"] and taggram.dims == 50
    assert taggram.weights_sha256 == musicnn.load_model("MSD_musicnn", cache_dir=cache_dir).weights_sha256
    assert names[musicnn.DEFAULT_MODEL].startswith(f"musicnn-0.1.0/{musicnn.DEFAULT_MODEL}/")
    with pytest.raises(MvrError, match="unknown musicnn model 'MSD_big'"):
        musicnn.load_model("MSD_big", cache_dir=cache_dir)
    with pytest.raises(MvrError, match="MTT_vgg has no layer 'penultimate'"):
        musicnn.load_model("MTT_vgg", cache_dir=cache_dir, layer="penultimate")


def test_offline_wheel_is_unpacked_and_converted_once(cache_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    musicnn.ensure_weights(cache_dir=cache_dir)
    (tmp_path / "musicnn").mkdir()
    shutil.copy(cache_dir / "musicnn" / musicnn.WHEEL_NAME, tmp_path / "musicnn")
    _unreachable_index(monkeypatch)  # a wheel already in place must need no network
    model = musicnn.load_model("MTT_musicnn", cache_dir=tmp_path, threads=2)
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [model.onnx_path.name]  # no temporary left
    assert (tmp_path / "musicnn" / "musicnn-0.1.0" / "LICENSE.md").read_text().startswith("Copyright (c) Music")
    reference = musicnn.load_model("MTT_musicnn", cache_dir=cache_dir)
    assert model.extractor == reference.extractor
    assert model.onnx_path.read_bytes() == reference.onnx_path.read_bytes()  # the build is deterministic


def test_wheel_that_cannot_be_fetched_gives_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _unreachable_index(monkeypatch)
    with pytest.raises(MvrError) as caught:
        musicnn.load_model("MSD_musicnn", cache_dir=tmp_path / "cache")
    # The fetch, which can take a while, is said before it starts.
    assert capsys.readouterr().err == (f"musicnn 0.1.0: fetching its wheel (the model weights, 29 MB, once) with pip"
                                       f" into {tmp_path / 'cache' / 'musicnn'}\n")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("musicnn 0.1.0: could not fetch its wheel (the model weights) with pip (")
    assert f"put {musicnn.WHEEL_NAME}" in message and str(tmp_path / "cache" / "musicnn") in message


def test_a_wheel_that_is_not_pypis_is_refused(tmp_path: Path) -> None:
    (tmp_path / "musicnn").mkdir()
    (tmp_path / "musicnn" / musicnn.WHEEL_NAME).write_bytes(b"not a wheel")
    with pytest.raises(MvrError, match="not PyPI's musicnn 0.1.0 wheel"):
        musicnn.load_model("MSD_musicnn", cache_dir=tmp_path)


def _unreachable_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point pip at a closed local port, with no configuration file, local wheel folder or cache to fall back on."""
    for variable in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
