"""EfficientNet-Lite0 as an ONNX graph, built from its PyTorch weights file without torch.

mvr runs its CNN on ONNX Runtime; only the one-time export of the network used to need torch (2 GB, 4 GB more of
CUDA libraries from PyPI). Here the weights file (a PyTorch state dict) is read with a restricted unpickler that
knows the few names a state dict holds (tensors, their storages, an ``OrderedDict``) and refuses every other, and
the network is written with ``onnx.helper``, as :mod:`mvr.features.musicnn` does for MusiCNN's checkpoints.

The graph is ``efficientnet_lite_pytorch`` 0.1.0's ``EfficientNet.from_name("efficientnet-lite0")`` without its
classifier, behind the input normalisation of :func:`mvr.features.runtime._normalised`: a uint8 NHWC batch in,
the 1280-d globally pooled features out. Its convolutions pad as TensorFlow's 'same' does at 224 x 224 (the
package's ``Conv2dStaticSamePadding``: an odd pixel of padding goes after), batch normalisation is folded into
the convolutions, ReLU6 is the activation, and drop connect (training only) is left out.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mvr.errors import MvrError
from mvr.features.musicnn import _Graph

PRODUCER_VERSION = "v1"
BN_EPSILON = 1e-3  # efficientnet_lite's batch_norm_epsilon (TensorFlow's, kept by the port)
INPUT_SIZE = 224  # the static 'same' padding is computed for it, as the package does from its image_size
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# efficientnet_lite_builder's block strings ('r1_k3_s11_e1_i32_o16', ...) as (repeats, kernel, stride, expansion,
# output channels); the first block of a stage has the stride, the others stride 1. Lite0 scales neither width nor
# depth, and keeps the stem and head unscaled.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


# ---------------------------------------------------------------------------------------------------------------
# PyTorch state dicts, read without torch

# torch's storage classes -> the element type of their raw bytes (a state dict written on a little-endian machine).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001


@dataclass
class _Storage:
    """One storage a state dict's tensors are views of: its raw data, read after the pickle (legacy format)."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorView:
    """``torch._utils._rebuild_tensor_v2``'s arguments: a strided view of a storage, made once it is read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError("a tensor's storage is missing from the file")
        # Elements of the storage the view reaches: as_strided would read past its end without this check.
        reach = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        if self.offset < 0 or min(self.strides, default=0) < 0 or (0 not in self.shape and reach > len(data)):
            raise ValueError("a tensor lies outside its storage")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.shape,
                                               [s * data.itemsize for s in self.strides], writeable=False)
        return view.astype(data.dtype.newbyteorder("="))  # a copy, in native byte order


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
                    *_: Any) -> _TensorView:
    # The rest (requires_grad, backward hooks, metadata) does not change the numbers.
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorView(storage, int(offset), tuple(map(int, shape)), tuple(map(int, strides)))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict: only ``OrderedDict``, tensors and their storages; anything else is refused.

    ``read_storage(key, storage)`` is called for each storage as it first appears (the zip format, whose storages
    are separate files); the legacy format reads them after the pickle.
    """

    def __init__(self, file: IO[bytes], read_storage: Any = None) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage type, key, location, numel), and a view's (key, offset, size) in the legacy format.
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or _text(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:40]}")
        dtype, key, numel = pid[1], _text(pid[2]), pid[4]
        if not isinstance(dtype, np.dtype) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("a storage of an unknown type")
        if len(pid) == 6 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch before 1.0) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, numel)
            if self._read_storage is not None:
                self._read_storage(key, self.storages[key])
        return self.storages[key]


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _read_legacy(handle: IO[bytes]) -> tuple[Any, dict[str, _Storage]]:
    """``torch.save``'s format before torch 1.6: pickles of a magic number, a version, the machine, the object and
    its storage keys, then each storage as an int64 element count and its raw bytes."""
    if _StateDictUnpickler(handle).load() != _LEGACY_MAGIC:
        raise ValueError("neither a zip archive nor torch's legacy format (no magic number)")
    if _StateDictUnpickler(handle).load() != _LEGACY_PROTOCOL:
        raise ValueError("an unknown version of torch's legacy format")
    machine = _StateDictUnpickler(handle).load()
    if not isinstance(machine, dict) or machine.get("little_endian") is not True:
        raise ValueError("written on a big-endian machine")
    unpickler = _StateDictUnpickler(handle)
    result = unpickler.load()
    keys = _StateDictUnpickler(handle).load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
        raise ValueError("its storage list does not match its tensors")
    for key in keys:
        storage = unpickler.storages[str(key)]
        header = handle.read(8)
        raw = handle.read(storage.numel * storage.dtype.itemsize)
        if len(header) < 8 or int.from_bytes(header, "little") != storage.numel or \
                len(raw) != storage.numel * storage.dtype.itemsize:
            raise ValueError(f"storage {key} is truncated or has an unexpected size")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return result, unpickler.storages


def _read_zip(path: Path) -> Any:
    """``torch.save``'s format since torch 1.6: a zip holding ``<name>/data.pkl`` and each storage as
    ``<name>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("a zip archive without one data.pkl (not a torch.save file)")
        root = pickles[0].removesuffix("data.pkl")
        if f"{root}byteorder" in archive.namelist() and archive.read(f"{root}byteorder").strip() != b"little":
            raise ValueError("written on a big-endian machine")

        def read_storage(key: str, storage: _Storage) -> None:
            raw = archive.read(f"{root}data/{key}")
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)

        with archive.open(pickles[0]) as handle:
            return _StateDictUnpickler(handle, read_storage).load()


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (``torch.save(model.state_dict())``, either format) into numpy, without torch.

    Parameters
    ----------
    path : Path
        A ``.pth`` file: a zip archive (torch >= 1.6) or the legacy pickle stream.

    Returns
    -------
    dict of str to np.ndarray
        Each tensor by name, in its shape, native byte order.

    Raises
    ------
    MvrError
        When the file is not a state dict, names anything but tensors (code to run, say), or is damaged.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            result = _read_zip(path)
        else:
            with open(path, "rb") as handle:
                result, _ = _read_legacy(handle)
        if not isinstance(result, dict) or not all(isinstance(v, _TensorView) for v in result.values()):
            raise ValueError("not a state dict (a mapping of names to tensors)")
        return {str(name): view.array() for name, view in result.items()}
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise MvrError(f"{path}: not a PyTorch state dict ({exc})") from None


# ---------------------------------------------------------------------------------------------------------------
# The network


class _Weights:
    """A state dict's tensors, taken by name and shape; remembers which were used, to refuse a file with more."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.state:
            raise ValueError(f"no tensor {name}")
        array = self.state[name]
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, not {shape}")
        self.used.add(name)
        return array.astype(np.float64)

    def unused(self) -> list[str]:
        # The classifier (_fc) is not part of the features; BN's step counters are bookkeeping.
        return sorted(name for name in self.state if name not in self.used
                      and not name.startswith("_fc.") and not name.endswith(".num_batches_tracked"))


def _same_pads(size: int, kernel: int, stride: int) -> list[int]:
    """TensorFlow's 'same' padding as ONNX orders it (top, left, bottom, right): the odd pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def _conv_bn(g: _Graph, w: _Weights, x: str, conv: str, bn: str, *, size: int, channels: tuple[int, int],
             kernel: int, stride: int = 1, depthwise: bool = False) -> tuple[str, int]:
    """A bias-free convolution followed by inference batch normalisation, folded into one ``Conv``.

    Returns its output's name and side. ``channels`` is (in, out); a depthwise convolution has one group per
    channel.
    """
    inputs, outputs = channels
    weight = w.take(f"{conv}.weight", (outputs, 1 if depthwise else inputs, kernel, kernel))
    gamma, beta, mean, variance = (w.take(f"{bn}.{p}", (outputs,))
                                   for p in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(variance + BN_EPSILON)  # in float64, then rounded once
    kernel_const = g.const((weight * scale[:, None, None, None]).astype(np.float32), "kernel")
    bias_const = g.const((beta - mean * scale).astype(np.float32), "bias")
    out = g.op("Conv", [x, kernel_const, bias_const], kernel_shape=[kernel, kernel], strides=[stride, stride],
               pads=_same_pads(size, kernel, stride), group=outputs if depthwise else 1)
    return out, math.ceil(size / stride)


def _network(g: _Graph, w: _Weights, x: str) -> str:
    """EfficientNet's ``extract_features`` and pooling on normalised NCHW pictures: the (N, 1280) features."""
    bounds = [g.const(np.array(0.0, np.float32), "zero"), g.const(np.array(6.0, np.float32), "six")]

    def relu6(y: str) -> str:
        return g.op("Clip", [y, *bounds], "relu6")

    x, size = _conv_bn(g, w, x, "_conv_stem", "_bn0", size=INPUT_SIZE, channels=(3, STEM_CHANNELS), kernel=3,
                       stride=2)
    x, channels, block = relu6(x), STEM_CHANNELS, 0
    for repeats, kernel, stride, expansion, out_channels in STAGES:
        for repeat in range(repeats):
            name, inputs, step = f"_blocks.{block}", x, stride if repeat == 0 else 1
            wide = channels * expansion
            if expansion != 1:
                x, _ = _conv_bn(g, w, x, f"{name}._expand_conv", f"{name}._bn0", size=size,
                                channels=(channels, wide), kernel=1)
                x = relu6(x)
            x, out_size = _conv_bn(g, w, x, f"{name}._depthwise_conv", f"{name}._bn1", size=size,
                                   channels=(wide, wide), kernel=kernel, stride=step, depthwise=True)
            x, _ = _conv_bn(g, w, relu6(x), f"{name}._project_conv", f"{name}._bn2", size=out_size,
                            channels=(wide, out_channels), kernel=1)
            if step == 1 and channels == out_channels:  # the skip connection (no activation after the sum)
                x = g.op("Add", [x, inputs])
            channels, size, block = out_channels, out_size, block + 1
    x, _ = _conv_bn(g, w, x, "_conv_head", "_bn1", size=size, channels=(channels, HEAD_CHANNELS), kernel=1)
    pooled = g.op("GlobalAveragePool", [relu6(x)])  # (N, 1280, 1, 1)
    return g.op("Flatten", [pooled], axis=1)


def efficientnet_lite0_onnx(weights: Path, *, mean: tuple[float, float, float], std: tuple[float, float, float],
                            input_name: str, output_name: str, opset: int) -> Any:
    """EfficientNet-Lite0 with its weights and input normalisation as an ``onnx.ModelProto``, without torch.

    Parameters
    ----------
    weights : Path
        The network's PyTorch state dict (``efficientnet_lite_pytorch``'s names), classifier included or not.
    mean, std : tuple of float
        The normalisation, in 0-255 pixel units, RGB: the network sees ``(pixel - mean) / std``.
    input_name, output_name : str
        The graph's input, uint8 ``(batch, 224, 224, 3)`` RGB pictures, and output, float32 ``(batch, 1280)``.
    opset : int
        The ONNX operator set (17 and later have every operator used here as they are used).

    Raises
    ------
    MvrError
        When the file is not a state dict of EfficientNet-Lite0 (a tensor missing, of another shape, or extra).
    """
    from onnx import TensorProto, helper  # here: a second or so to import, needed only for the one-time export

    state = read_state_dict(weights)
    g = _Graph({})
    w = _Weights(state)
    pixels = g.op("Cast", [input_name], to=TensorProto.FLOAT)
    # NHWC -> NCHW first, then the normalisation with per-channel (1, 3, 1, 1) constants: the torch module's order.
    pixels = g.op("Transpose", [pixels], perm=[0, 3, 1, 2])
    pixels = g.op("Sub", [pixels, g.const(np.array(mean, np.float32).reshape(1, 3, 1, 1), "mean")])
    pixels = g.op("Div", [pixels, g.const(np.array(std, np.float32).reshape(1, 3, 1, 1), "std")])
    try:
        features = _network(g, w, pixels)
        extra = w.unused()
        if extra:
            raise ValueError(f"tensors of another network: {', '.join(extra[:3])}")
    except ValueError as exc:
        raise MvrError(f"{weights}: not usable efficientnet-lite0 weights ({exc})") from None
    return g.model(
        "efficientnet-lite0", {output_name: features},
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["batch", INPUT_SIZE, INPUT_SIZE, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", HEAD_CHANNELS])],
        opset=opset, producer="mvr.efficientnet_onnx", version=PRODUCER_VERSION)

