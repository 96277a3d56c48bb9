"""MusiCNN embeddings: a learned audio space, computed without TensorFlow.

The ``musicnn`` 0.1.0 wheel (ISC licence, Music Technology Group, Universitat Pompeu Fabra, 2019) ships four
trained music taggers as TensorFlow 1 checkpoints: MusiCNN and VGG-like networks trained on MagnaTagATune (MTT)
and on the Million Song Dataset's Last.fm tags (MSD). Its metadata pins numpy<1.17, so it can never be installed
beside mvr: the wheel is fetched once with pip as a *data* source into ``<cache_dir>/musicnn/``, its checkpoints
are read here with a small reader of TensorFlow's tensor-bundle format (an SSTable index of tensor names and a raw
data file), and the network is written as an ONNX graph (``onnx.helper``), cached in ``<cache_dir>/onnx/`` and run
by ONNX Runtime.

The preprocessing is musicnn's own (``musicnn/extractor.py``): 16 kHz mono, a power mel spectrogram as
``librosa.feature.melspectrogram`` computes it (n_fft 512, hop 256, 96 Slaney mel bands, centred frames),
quantised to float16, ``log10(10000 * x + 1)``, cut into non-overlapping patches of 187 frames (3 s).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvr import media
from mvr.errors import MediaError, MvrError
from mvr.progress import note

MUSICNN_VERSION = "0.1.0"
WHEEL_NAME = f"musicnn-{MUSICNN_VERSION}-py3-none-any.whl"
# PyPI's file; a different file under this name is refused rather than silently giving other vectors.
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
# Bump when the graph or the preprocessing changes: it is part of the extractor string and of the ONNX file name.
PORT_VERSION = "v1"

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as musicnn computes it
MIN_SAMPLES = (PATCH_FRAMES - 1) * HOP  # centred frames: 1 + n // HOP of them
BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default
POOLING = "mean"  # over a file's patches
_ONNX_OPSET = 17
_BATCH = 8  # patches per network run: the front end's feature maps take about 12 MB per patch

MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy",
)


@dataclass(frozen=True)
class ModelSpec:
    """One of the wheel's trained networks.

    Attributes
    ----------
    name : str
        Its folder in the wheel, e.g. ``"MSD_musicnn"``.
    architecture : str
        ``"musicnn"`` (musically motivated front end, dense mid end, pooled back end) or ``"vgg"``.
    dataset : str
        What it was trained on: ``"MagnaTagATune"`` or ``"Million Song Dataset"``.
    labels : tuple of str
        The 50 tags of its taggram, in output order.
    layers : dict of str to int
        Each layer an embedding can be taken from -> its dimensions per patch.
    default_layer : str
        The layer used when none is asked for.
    """

    name: str
    architecture: str
    dataset: str
    labels: tuple[str, ...]
    layers: dict[str, int] = field(hash=False)
    default_layer: str


_MUSICNN_LAYERS = {"penultimate": 200, "mean_pool": 753, "max_pool": 753, "taggram": 50}
# pool5 is (2 time steps x 128 filters) per patch; the embedding averages the two steps.
_VGG_LAYERS = {"pool5": 128, "taggram": 50}

MODELS: dict[str, ModelSpec] = {
    "MTT_musicnn": ModelSpec("MTT_musicnn", "musicnn", "MagnaTagATune", MTT_LABELS, _MUSICNN_LAYERS, "penultimate"),
    "MSD_musicnn": ModelSpec("MSD_musicnn", "musicnn", "Million Song Dataset", MSD_LABELS, _MUSICNN_LAYERS,
                             "penultimate"),
    "MTT_vgg": ModelSpec("MTT_vgg", "vgg", "MagnaTagATune", MTT_LABELS, _VGG_LAYERS, "pool5"),
    "MSD_vgg": ModelSpec("MSD_vgg", "vgg", "Million Song Dataset", MSD_LABELS, _VGG_LAYERS, "pool5"),
}
# Precision@5 ties MTT within noise on every benchmark so far (docs/musicnn.md); MSD's training data carry no
# non-commercial clause, unlike MagnaTagATune's.
DEFAULT_MODEL = "MSD_musicnn"


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow checkpoints (tensor bundles), read without TensorFlow


_TF_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 9: np.dtype("<i8")}
_SSTABLE_MAGIC = 0xDB4775248B80FB57


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint (LevelDB and protobuf use the same one) at ``pos``: ``(value, next position)``."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _block(table: bytes, handle: bytes, where: Path) -> bytes:
    """The contents of the SSTable block a BlockHandle (varint offset, varint size) points to."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(table):
        raise MvrError(f"{where}: damaged checkpoint index (a block lies past the end of the file)")
    if table[offset + size] != 0:  # the 5-byte trailer: compression type, then a CRC
        raise MvrError(f"{where}: compressed checkpoint index blocks are not supported")
    return table[offset:offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of an SSTable block; keys are prefix-compressed against the previous key."""
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + size]))
        pos += size
    return entries


def _protobuf_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message: varints as ints, length-delimited as bytes."""
    fields, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a checkpoint's data file (a BundleEntryProto).

    Attributes
    ----------
    dtype : np.dtype
        Little-endian element type.
    shape : tuple of int
        As TensorFlow stores it (conv kernels are ``(height, width, in, out)``, dense ``(in, out)``).
    shard, offset, size : int
        Data file number, byte offset and byte count.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _bundle_entry(value: bytes, name: str, where: Path) -> TensorEntry:
    dtype_code, shape, shard, offset, size = 0, (), 0, 0, 0
    for number, item in _protobuf_fields(value):
        if number == 1:
            dtype_code = item
        elif number == 2:  # TensorShapeProto: repeated dim (field 2) of {size: 1}
            shape = tuple(int(dict(_protobuf_fields(dim)).get(1, 0))
                          for key, dim in _protobuf_fields(item) if key == 2)
        elif number == 3:
            shard = item
        elif number == 4:
            offset = item
        elif number == 5:
            size = item
        elif number == 7:
            raise MvrError(f"{where}: tensor {name} is stored in slices, which this reader does not support")
    if dtype_code not in _TF_DTYPES:
        raise MvrError(f"{where}: tensor {name} has unsupported TensorFlow dtype {dtype_code}")
    return TensorEntry(_TF_DTYPES[dtype_code], shape, shard, offset, size)


def read_checkpoint_index(prefix: str) -> dict[str, TensorEntry]:
    """Read a TensorFlow checkpoint's ``<prefix>.index``: tensor name -> where it lies in the data file.

    Parameters
    ----------
    prefix : str
        The checkpoint prefix, a string since it need not be a file name: musicnn's is ``"<model folder>/"``,
        so its files are ``<folder>/.index`` and ``<folder>/.data-00000-of-00001``.

    Returns
    -------
    dict of str to TensorEntry
        Every tensor of the bundle, optimiser state included.
    """
    where = Path(f"{prefix}.index")
    table = where.read_bytes()
    if len(table) < 48 or struct.unpack_from("<Q", table, len(table) - 8)[0] != _SSTABLE_MAGIC:
        raise MvrError(f"{where}: not a TensorFlow checkpoint index (no SSTable footer)")
    footer = table[-48:]
    _, pos = _varint(footer, 0)  # the metaindex handle (unused: bundles have no filters)
    _, pos = _varint(footer, pos)
    index = footer[pos:]
    entries: dict[str, TensorEntry] = {}
    for _, handle in _block_entries(_block(table, index, where)):
        for key, value in _block_entries(_block(table, handle, where)):
            if key:  # the empty key holds the BundleHeaderProto
                name = key.decode()
                entries[name] = _bundle_entry(value, name, where)
    return entries


def read_checkpoint(prefix: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read tensors of a TensorFlow checkpoint (tensor bundle) into numpy arrays, without TensorFlow.

    Parameters
    ----------
    prefix : str
        See :func:`read_checkpoint_index`.
    names : list of str, optional
        The tensors to read; all of them when omitted.

    Returns
    -------
    dict of str to np.ndarray
        Native-endian arrays in TensorFlow's shapes.
    """
    entries = read_checkpoint_index(prefix)
    names = sorted(entries) if names is None else names
    missing = [n for n in names if n not in entries]
    if missing:
        raise MvrError(f"{prefix}: checkpoint lacks tensors {', '.join(missing[:3])}")
    shards = max((e.shard for e in entries.values()), default=0) + 1
    tensors, handles = {}, {}
    try:
        for name in names:
            entry = entries[name]
            if entry.shard not in handles:
                handles[entry.shard] = open(f"{prefix}.data-{entry.shard:05d}-of-{shards:05d}", "rb")
            handle = handles[entry.shard]
            handle.seek(entry.offset)
            raw = handle.read(entry.size)
            count = int(np.prod(entry.shape, dtype=np.int64))
            if len(raw) != entry.size or entry.size != count * entry.dtype.itemsize:
                raise MvrError(f"{prefix}: tensor {name} is truncated or has an unexpected size")
            tensors[name] = np.frombuffer(raw, dtype=entry.dtype).astype(entry.dtype.newbyteorder("="))
            tensors[name] = tensors[name].reshape(entry.shape)
    finally:
        for handle in handles.values():
            handle.close()
    return tensors


# ---------------------------------------------------------------------------------------------------------------
# The wheel as a data source


def weights_folder(*, cache_dir: Path) -> Path:
    """Where the wheel's checkpoints are unpacked: ``<cache_dir>/musicnn/musicnn-0.1.0``."""
    return Path(cache_dir) / "musicnn" / f"musicnn-{MUSICNN_VERSION}"


def ensure_weights(*, cache_dir: Path) -> Path:
    """Make sure the four checkpoints are unpacked in the cache; fetch the wheel with pip if it is not there.

    Offline first: a wheel already in ``<cache_dir>/musicnn/`` (``pip download --no-deps musicnn==0.1.0``) is
    used as it is, and once unpacked nothing is fetched again.

    Returns
    -------
    Path
        :func:`weights_folder`, holding ``<model>/.index``, ``<model>/.data-00000-of-00001`` and ``LICENSE.md``.

    Raises
    ------
    MvrError
        When the wheel cannot be fetched (no network, pip failing) or is not PyPI's file.
    """
    folder = weights_folder(cache_dir=cache_dir)
    if (folder / "LICENSE.md").is_file():
        return folder
    wheel = folder.parent / WHEEL_NAME
    if not wheel.is_file():
        _download_wheel(folder.parent)
    digest = media.file_sha256(wheel)
    if digest != WHEEL_SHA256:
        raise MvrError(f"{wheel}: not PyPI's musicnn {MUSICNN_VERSION} wheel (sha256 {digest[:12]}, expected"
                       f" {WHEEL_SHA256[:12]}); delete it and run again")
    staged = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                # Only the trained weights and the licence: the wheel's Python code is never run.
                wanted = (len(parts) == 3 and parts[0] == "musicnn" and parts[1] in MODELS
                          and (parts[2] in (".index", "config.json") or parts[2].startswith(".data-")))
                if wanted:
                    target = staged / parts[1] / parts[2]
                elif member.endswith(".dist-info/LICENSE.md"):
                    target = staged / "LICENSE.md"
                else:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
        staged.chmod(0o755)  # mkdtemp's 0o700 would hide the weights from other users of a shared cache
        try:
            os.replace(staged, folder)
        except OSError:
            if not (folder / "LICENSE.md").is_file():  # another process unpacked it first: fine
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return folder


def _download_wheel(into: Path) -> None:
    note(f"musicnn {MUSICNN_VERSION}: fetching its wheel (the model weights, 29 MB, once) with pip into {into}")
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", f"musicnn=={MUSICNN_VERSION}", "-d", str(into)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        failure = None if done.returncode == 0 else _last_error_line(done.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure is None and not (into / WHEEL_NAME).is_file():
        failure = f"pip saved no {WHEEL_NAME}"
    if failure is not None:
        raise MvrError(f"musicnn {MUSICNN_VERSION}: could not fetch its wheel (the model weights) with pip"
                       f" ({failure}); connect to the package index and run again, or put {WHEEL_NAME} (from"
                       f" 'pip download --no-deps musicnn=={MUSICNN_VERSION}') into {into}")


def _last_error_line(stderr: str) -> str:
    if "(from versions: none)" in stderr:  # what pip says when the index cannot be reached, too
        return "the package index pip uses lists no musicnn: offline, unreachable, or an index without it"
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    text = (errors or lines or ["pip failed"])[-1]
    return text.removeprefix("ERROR: ")[:200]


# ---------------------------------------------------------------------------------------------------------------
# The networks as ONNX graphs


def _musicnn_tensors() -> list[str]:
    names = []
    for i in range(11):  # input, 5 front-end convs, 3 mid-end convs, flat pool, dense
        suffix = f"_{i}" if i else ""
        names += [f"batch_normalization{suffix}/{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")]
    for i in range(8):
        suffix = f"_{i}" if i else ""
        names += [f"conv2d{suffix}/kernel", f"conv2d{suffix}/bias"]
    return names + ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]


def _vgg_tensors() -> list[str]:
    names = []
    for i in range(6):
        suffix = f"_{i}" if i else ""
        names += [f"batch_normalization{suffix}/{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")]
    for i in range(1, 6):
        names += [f"{i}CNN/kernel", f"{i}CNN/bias"]
    return names + ["dense/kernel", "dense/bias"]


def _weight_names(spec: ModelSpec) -> list[str]:
    return _musicnn_tensors() if spec.architecture == "musicnn" else _vgg_tensors()


def weights_sha256(weights: dict[str, np.ndarray]) -> str:
    """SHA-256 over the network's tensors (names, shapes and bytes, by name), optimiser state excluded."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name], dtype="<f4")
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class _Graph:
    """A small ONNX graph builder: each method adds one node and returns its output's name."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, array: np.ndarray, stem: str = "c") -> str:
        from onnx import numpy_helper

        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self._name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def model(self, name: str, outputs: dict[str, str], inputs: list[Any], output_types: list[Any], *,
              opset: int, producer: str, version: str) -> Any:
        """The checked ``onnx.ModelProto`` of the nodes added so far, ``outputs`` (public name -> node output)
        exposed under their public names; ``inputs`` and ``output_types`` are ``onnx.ValueInfoProto``."""
        import onnx
        from onnx import helper

        for public, internal in outputs.items():
            self.nodes.append(helper.make_node("Identity", [internal], [public]))
        graph = helper.make_graph(self.nodes, name, inputs, output_types, self.initializers)
        found = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer,
                                  producer_version=version)
        found.ir_version = 8  # what opset 17 needs; older readers accept it
        onnx.checker.check_model(found)
        return found

    def batch_norm(self, x: str, layer: str, channel_shape: tuple[int, ...]) -> str:
        """Inference batch normalisation as ``x * scale + shift``, folded in float64 then rounded to float32."""
        w = {p: self.weights[f"{layer}/{p}"].astype(np.float64)
             for p in ("gamma", "beta", "moving_mean", "moving_variance")}
        scale = w["gamma"] / np.sqrt(w["moving_variance"] + BN_EPSILON)
        shift = w["beta"] - w["moving_mean"] * scale
        x = self.op("Mul", [x, self.const(scale.astype(np.float32).reshape(channel_shape), "bn_scale")])
        return self.op("Add", [x, self.const(shift.astype(np.float32).reshape(channel_shape), "bn_shift")])

    def conv2d(self, x: str, layer: str, pads: list[int]) -> str:
        """TensorFlow's conv2d (kernel ``(kh, kw, in, out)``) on an NCHW tensor; ``pads`` as ONNX orders them."""
        kernel = self.weights[f"{layer}/kernel"].transpose(3, 2, 0, 1)
        bias = self.weights[f"{layer}/bias"]
        return self.op("Conv", [x, self.const(kernel, "kernel"), self.const(bias, "bias")], pads=pads)

    def dense(self, x: str, layer: str) -> str:
        x = self.op("MatMul", [x, self.const(self.weights[f"{layer}/kernel"], "kernel")])
        return self.op("Add", [x, self.const(self.weights[f"{layer}/bias"], "bias")])

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", [x, self.const(np.array(shape, dtype=np.int64), "shape")])


def _same_pads(kernel: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding at stride 1: the odd pixel goes after."""
    return (kernel - 1) // 2, kernel // 2


def _bn_name(i: int) -> str:
    return f"batch_normalization_{i}" if i else "batch_normalization"


def _musicnn_graph(g: _Graph) -> dict[str, str]:
    """musicnn's ``build_musicnn`` (models.py) in NCHW, H = time (187 frames), W = mel bands (96)."""
    x = g.op("Unsqueeze", ["patches", g.const(np.array([1], dtype=np.int64), "axes")])  # (N, 1, 187, 96)
    x = g.batch_norm(x, _bn_name(0), (1, 1, 1, 1))
    # Front end: two timbral convolutions (7 frames x 38 or 67 bands, time padded by 3) and three temporal ones
    # (128, 64, 32 frames x 1 band, 'same'), each ReLU, batch norm, then max over the frequency axis.
    front = []
    for i, layer in enumerate(("conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4")):
        height = g.weights[f"{layer}/kernel"].shape[0]
        before, after = (3, 3) if i < 2 else _same_pads(height)
        y = g.op("Relu", [g.conv2d(x, layer, [before, 0, after, 0])])
        channels = g.weights[f"{layer}/bias"].shape[0]
        y = g.batch_norm(y, _bn_name(i + 1), (1, channels, 1, 1))
        front.append(g.op("ReduceMax", [y], axes=[3], keepdims=0))  # (N, C, 187)
    front_features = g.op("Concat", front, axis=1)  # (N, 561, 187)
    # Mid end: three convolutions over all features (a 1-D convolution of 7 frames), the last two residual.
    layers = [front_features]
    previous = None
    for i, layer in enumerate(("conv2d_5", "conv2d_6", "conv2d_7")):
        kernel = g.weights[f"{layer}/kernel"][:, :, 0, :].transpose(2, 1, 0)  # (out, in, 7)
        y = g.op("Conv", [layers[-1], g.const(kernel, "kernel"), g.const(g.weights[f"{layer}/bias"], "bias")],
                 pads=[3, 3])
        y = g.batch_norm(g.op("Relu", [y]), _bn_name(6 + i), (1, kernel.shape[0], 1))
        if previous is not None:
            y = g.op("Add", [y, previous])
        previous = y
        layers.append(y)
    features = g.op("Concat", layers, axis=1)  # (N, 753, 187)
    # Back end: max and mean over time, interleaved per feature as TensorFlow's flatten of (753, 2) orders them.
    max_pool = g.op("ReduceMax", [features], "max_pool", axes=[2], keepdims=0)
    mean_pool = g.op("ReduceMean", [features], "mean_pool", axes=[2], keepdims=0)
    axes = g.const(np.array([2], dtype=np.int64), "axes")
    pooled = g.op("Concat", [g.op("Unsqueeze", [max_pool, axes]), g.op("Unsqueeze", [mean_pool, axes])], axis=2)
    flat = g.batch_norm(g.reshape(pooled, [0, -1]), _bn_name(9), (1, -1))
    penultimate = g.batch_norm(g.op("Relu", [g.dense(flat, "dense")]), _bn_name(10), (1, -1))
    taggram = g.op("Sigmoid", [g.dense(penultimate, "dense_1")])
    return {"taggram": taggram, "penultimate": penultimate, "mean_pool": mean_pool, "max_pool": max_pool}


def _vgg_graph(g: _Graph) -> dict[str, str]:
    """musicnn's ``vgg`` (models.py): five 3x3 convolutions, each ReLU, batch norm and max pooling."""
    x = g.op("Unsqueeze", ["patches", g.const(np.array([1], dtype=np.int64), "axes")])
    x = g.batch_norm(x, _bn_name(0), (1, 1, 1, 1))
    pools = [([4, 1], [2, 2]), ([2, 2], [2, 2]), ([2, 2], [2, 2]), ([2, 2], [2, 2]), ([4, 4], [4, 4])]
    for i, (size, strides) in enumerate(pools, start=1):
        x = g.op("Relu", [g.conv2d(x, f"{i}CNN", [1, 1, 1, 1])])
        x = g.batch_norm(x, _bn_name(i), (1, -1, 1, 1))
        x = g.op("MaxPool", [x], kernel_shape=size, strides=strides)  # TensorFlow's 'valid' pooling
    # (N, 128, 2, 1) -> TensorFlow's NHWC order, which its flatten and dense layer assume.
    pool5 = g.reshape(g.op("Transpose", [x], perm=[0, 2, 3, 1]), [0, -1, g.weights["5CNN/bias"].shape[0]])
    taggram = g.op("Sigmoid", [g.dense(g.reshape(pool5, [0, -1]), "dense")])
    return {"taggram": taggram, "pool5": pool5}


_OUTPUT_SHAPES = {"taggram": [50], "penultimate": [200], "mean_pool": [753], "max_pool": [753], "pool5": [2, 128]}


def build_onnx(spec: ModelSpec, weights: dict[str, np.ndarray]) -> Any:
    """The network of ``spec`` with ``weights`` as an ``onnx.ModelProto``.

    Input ``patches``: float32 ``(batch, 187, 96)`` log-mel patches. Outputs, per patch: ``taggram`` (50 tag
    probabilities) and, for MusiCNN, ``penultimate`` (200), ``mean_pool`` and ``max_pool`` (753: the mid-end
    features pooled over time); for VGG, ``pool5`` (2 time steps x 128).
    """
    from onnx import TensorProto, helper

    g = _Graph({name: np.asarray(array, dtype=np.float32) for name, array in weights.items()})
    outputs = _musicnn_graph(g) if spec.architecture == "musicnn" else _vgg_graph(g)
    return g.model(
        spec.name, outputs,
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["batch", PATCH_FRAMES, N_MELS])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *_OUTPUT_SHAPES[name]]) for name in outputs],
        opset=_ONNX_OPSET, producer="mvr.musicnn", version=PORT_VERSION)


# ---------------------------------------------------------------------------------------------------------------
# The model


class MusicnnModel:
    """A loaded musicnn network, ready to embed log-mel patches (see :func:`load_model`).

    Attributes
    ----------
    spec : ModelSpec
        Which network.
    layer : str
        The layer :meth:`embed_patches` returns.
    dims : int
        Its dimensions.
    weights_sha256 : str
        SHA-256 of the network's tensors (see :func:`weights_sha256`).
    onnx_path : Path
        The cached ONNX file.
    extractor : str
        ``musicnn-0.1.0/<model>/<layer>/mean/sha256-<12 hex>/v1``: names everything that decides the vectors,
        so that vectors of different choices are never compared.
    """

    def __init__(self, spec: ModelSpec, layer: str, digest: str, onnx_path: Path, session: Any) -> None:
        self.spec = spec
        self.layer = layer
        self.dims = spec.layers[layer]
        self.weights_sha256 = digest
        self.onnx_path = onnx_path
        self.extractor = (f"musicnn-{MUSICNN_VERSION}/{spec.name}/{layer}/{POOLING}/sha256-{digest[:12]}/"
                          f"{PORT_VERSION}")
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]

    def outputs(self, patches: np.ndarray, *, batch_size: int = _BATCH) -> dict[str, np.ndarray]:
        """Run the network on log-mel patches, ``batch_size`` patches at a time.

        Parameters
        ----------
        patches : np.ndarray
            Shape ``(n, 187, 96)``, as :func:`patches` makes them.
        batch_size : int
            Patches per run: more is slightly faster and takes about 12 MB more memory per patch.

        Returns
        -------
        dict of str to np.ndarray
            Every output of the graph (see :func:`build_onnx`), each with ``n`` rows, float32.
        """
        patches = np.ascontiguousarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (PATCH_FRAMES, N_MELS):
            raise ValueError(f"patches must have shape (n, {PATCH_FRAMES}, {N_MELS}), not {patches.shape}")
        runs = [self._session.run(self._outputs, {"patches": patches[i:i + batch_size]})
                for i in range(0, len(patches), max(1, batch_size))]
        if not runs:
            return {name: np.zeros((0,), np.float32) for name in self._outputs}
        return {name: np.concatenate([run[k] for run in runs]) for k, name in enumerate(self._outputs)}

    def embed_patches(self, patches: np.ndarray, *, batch_size: int = _BATCH) -> np.ndarray:
        """Embed log-mel patches in the model's layer.

        Parameters
        ----------
        patches : np.ndarray
            Shape ``(n, 187, 96)``.
        batch_size : int
            Patches per network run.

        Returns
        -------
        np.ndarray
            Shape ``(n, dims)``, float32. VGG's ``pool5`` is averaged over its two time steps.
        """
        out = self.outputs(patches, batch_size=batch_size)[self.layer]
        if self.layer == "pool5":
            out = out.mean(axis=1, dtype=np.float32) if len(out) else out.reshape(0, self.dims)
        return out.reshape(len(patches), self.dims)


def load_model(name: str = DEFAULT_MODEL, *, cache_dir: Path, layer: str | None = None,
               threads: int = 1) -> MusicnnModel:
    """Load one of the wheel's networks on ONNX Runtime, fetching and converting it on first use.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    cache_dir : Path
        mvr's cache root: the wheel goes to ``cache_dir/musicnn/`` and the ONNX file to ``cache_dir/onnx/``.
    layer : str, optional
        The layer to embed with (a key of the model's ``layers``); its ``default_layer`` when omitted.
    threads : int
        ONNX Runtime's intra-op threads.

    Returns
    -------
    MusicnnModel
        The caller's own (an extractor keeps one and embeds every file with it).

    Raises
    ------
    MvrError
        For an unknown model or layer, when the weights cannot be fetched, or the checkpoint is damaged.
    """
    if name not in MODELS:
        raise MvrError(f"unknown musicnn model {name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[name]
    layer = layer or spec.default_layer
    if layer not in spec.layers:
        raise MvrError(f"{name} has no layer {layer!r}; choose one of {', '.join(spec.layers)}")
    return _load(spec, layer, Path(cache_dir), int(threads))


def onnx_path(spec: ModelSpec, digest: str, *, cache_dir: Path) -> Path:
    """Where the network's ONNX file is cached: named by version, model, weights checksum and port version."""
    return Path(cache_dir) / "onnx" / f"musicnn-{MUSICNN_VERSION}-{spec.name}-{digest[:16]}-{PORT_VERSION}.onnx"


def _load(spec: ModelSpec, layer: str, cache_dir: Path, threads: int) -> MusicnnModel:
    import onnxruntime

    prefix = f"{ensure_weights(cache_dir=cache_dir) / spec.name}/"
    weights = read_checkpoint(prefix, _weight_names(spec))
    digest = weights_sha256(weights)
    path = onnx_path(spec, digest, cache_dir=cache_dir)
    if not path.is_file():
        _write_onnx(build_onnx(spec, weights), path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # Threads that spin while waiting hold cores that ffmpeg, the other features or other workers need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return MusicnnModel(spec, layer, digest, path, session)


def _write_onnx(model: Any, path: Path) -> None:
    """Write under a per-process temporary name, then rename: readers see no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        staged.write_bytes(model.SerializeToString())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep,
                    hz / f_sp)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filters(*, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular Slaney-normalised mel filters from 0 Hz to Nyquist, as ``librosa.filters.mel`` makes them.

    Returns
    -------
    np.ndarray
        Shape ``(n_mels, 1 + n_fft // 2)``, float32 (librosa's default dtype).
    """
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


_FILTERS = mel_filters()
# scipy.signal.get_window("hann", N_FFT, fftbins=True): the periodic Hann window librosa uses.
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


def mel_power(samples: np.ndarray) -> np.ndarray:
    """The power mel spectrogram of ``librosa.feature.melspectrogram(y, sr=16000, n_fft=512, hop_length=256,
    n_mels=96)``: centred frames with zero padding (librosa >= 0.10's default), periodic Hann window, |STFT|^2.

    Returns
    -------
    np.ndarray
        Shape ``(1 + len(samples) // 256, 96)``, float32.
    """
    y = np.asarray(samples, dtype=np.float32).astype(np.float64)
    padded = np.pad(y, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    return power @ _FILTERS.T


def log_mel(samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """musicnn's input representation of a 16 kHz mono signal.

    The mel power is quantised to float16 as musicnn does (``astype(np.float16)``), then ``log10(10000 * x + 1)``
    is taken in float32: under numpy 2, ``10000 * float16`` stays float16 and overflows to inf (numpy 1 promoted
    it), so the cast comes first.

    Parameters
    ----------
    samples : np.ndarray
        Shape ``(n_samples,)``, float, full scale +-1.
    sample_rate : int
        Must be 16000, the rate the models were trained at.

    Returns
    -------
    np.ndarray
        Shape ``(1 + n_samples // 256, 96)``, float32.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"musicnn needs {SAMPLE_RATE} Hz samples, not {sample_rate} Hz")
    quantised = mel_power(samples).astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000.0) * quantised + np.float32(1.0))


def patches(mel: np.ndarray) -> np.ndarray:
    """Cut a log-mel spectrogram into musicnn's non-overlapping 3 s patches; a last partial one is dropped.

    Parameters
    ----------
    mel : np.ndarray
        Shape ``(frames, 96)``.

    Returns
    -------
    np.ndarray
        Shape ``(frames // 187, 187, 96)``, a view where possible.
    """
    count = mel.shape[0] // PATCH_FRAMES
    return mel[:count * PATCH_FRAMES].reshape(count, PATCH_FRAMES, mel.shape[1])


def decode_16k(path: Path, info: media.MediaInfo | None = None) -> np.ndarray:
    """Decode the first audio stream to 16 kHz mono float32 with ffmpeg (channels averaged, ffmpeg's resampler).

    Raises
    ------
    MediaError
        When the file has no audio stream or it cannot be decoded.
    """
    path = Path(path)
    info = info or media.probe(path)
    if not info.has_audio:
        raise MediaError(str(path), "no audio stream (musicnn embeds sound)")
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", media.ffmpeg_input(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
           "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    done = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(str(path), f"audio could not be decoded ({lines[-1] if lines else 'ffmpeg failed'})")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def musicnn_vector(path: Path, *, model: MusicnnModel, info: media.MediaInfo | None = None) -> np.ndarray:
    """The file's musicnn embedding: the model's layer on each 3 s patch, averaged over the patches.

    Parameters
    ----------
    path : Path
        A media file with an audio stream.
    model : MusicnnModel
        From :func:`load_model`.
    info : mvr.media.MediaInfo, optional
        The file's probe, when the caller has it.

    Returns
    -------
    np.ndarray
        Shape ``(model.dims,)``, float32.

    Raises
    ------
    MediaError
        When the file has no audio stream, cannot be decoded, or holds less than one patch (3 s) of sound.
    """
    samples = decode_16k(path, info)
    mel = log_mel(samples)
    cut = patches(mel)
    if len(cut) == 0:
        seconds = len(samples) / SAMPLE_RATE
        raise MediaError(str(path), f"audio too short for musicnn ({seconds:.2f} s; it needs at least"
                                    f" {MIN_SAMPLES / SAMPLE_RATE:.3f} s, one 3 s patch)")
    return model.embed_patches(cut).mean(axis=0, dtype=np.float64).astype(np.float32)
