"""Running a visual backbone: :class:`CnnModel` embeds keyframes on ONNX Runtime or torch.

ONNX Runtime embedded keyframes 1.3 to 3.7 times faster than torch on 2 busy cores (``benchmarks/bench_video.py``),
and once a backbone is exported it needs no ``torch`` import at all, which saves a second or two at start-up. Each
backbone, with its weights, is exported once to ``<cache>/onnx/<name>-<weights sha256>-<export version>.onnx``:
EfficientNet-Lite0's graph is built from its weights file without torch (:mod:`mvr.features.efficientnet_onnx`),
ResNet-152 is exported by torch (the ``torch`` extra). The file is written under a temporary name and then renamed,
so that parallel index workers never read half a file. Both runtimes compute the same function (the normalisation
is part of the exported graph) and agree to about 2e-6 of the largest feature, so their vectors share one extractor
string and can be mixed in a catalog. When ONNX Runtime or the export fails, a one-line warning goes to stderr and
torch runs instead (where torch is installed; otherwise a one-line error says how to install it).

A model belongs to whoever made it (an extractor, a worker process, the web service): nothing here is shared
through module state. ``torch`` is imported only when a model is first loaded on torch or exported by it, so that
audio-only work starts fast.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mvr.config import RuntimeSettings
from mvr.errors import MvrError
from mvr.features.cnn import Backbone, import_torch_package
from mvr.progress import note

# Part of the exported file's name: bump it whenever the exported graph changes (opset, inputs, wrapper), so that
# files exported by an older mvr are not reused.
ONNX_EXPORT_VERSION = "opset17-nhwc-uint8-v1"
_ONNX_OPSET = 17
_ONNX_INPUT = "frames"
_ONNX_OUTPUT = "features"

# Keyframes go through the network this many at a time: enough to keep the cores busy, little memory.
_BATCH = 16


def cnn_runtime(settings: RuntimeSettings) -> str:
    """The runtime that embeds keyframes: ``"onnx"`` or ``"torch"``.

    The one ``settings`` names; otherwise ONNX Runtime when ``onnxruntime`` is importable, torch if not.
    ``"onnx"`` can still end on torch, with a warning, when the export or ONNX Runtime fails.
    """
    if settings.cnn_runtime is not None:
        return settings.cnn_runtime
    return "onnx" if importlib.util.find_spec("onnxruntime") else "torch"


def onnx_path(backbone: Backbone, cache_dir: Path) -> Path:
    """Where the backbone's ONNX export is cached: named by backbone, weights checksum and export version."""
    return cache_dir / "onnx" / f"{backbone.name}-{backbone._sha256[:16]}-{ONNX_EXPORT_VERSION}.onnx"


class CnnModel:
    """One backbone's network on one runtime, loaded on first use; safe to share between threads.

    Parameters
    ----------
    backbone : Backbone
        What to run (:func:`mvr.features.cnn.get_backbone`).
    settings : RuntimeSettings
        Threads, runtime and cache folder.
    """

    def __init__(self, backbone: Backbone, settings: RuntimeSettings) -> None:
        self.backbone = backbone
        self.settings = settings
        self.runtime = cnn_runtime(settings)
        # The lock keeps two threads (an indexing pool, a web server) from loading or exporting the same model
        # twice; other processes may export at once (see _export).
        self._lock = threading.Lock()
        self._run: Callable[[np.ndarray], np.ndarray] | None = None
        self._torch_model: tuple[Any, Any] | None = None

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Embed RGB pictures.

        Parameters
        ----------
        frames : np.ndarray
            Shape ``(N, input_size, input_size, 3)``, uint8 RGB.

        Returns
        -------
        np.ndarray
            Shape ``(N, dims)``, float32.
        """
        frames = np.asarray(frames)
        backbone = self.backbone
        expected = (backbone.input_size, backbone.input_size, 3)
        if frames.ndim != 4 or frames.shape[1:] != expected or frames.dtype != np.uint8:
            raise ValueError(f"{backbone.name} embeds uint8 arrays of shape (N, {', '.join(map(str, expected))}),"
                             f" not {frames.dtype} {frames.shape}")
        run = self._runner()
        out = np.empty((len(frames), backbone.dims), dtype=np.float32)
        for start in range(0, len(frames), _BATCH):
            batch = np.ascontiguousarray(frames[start:start + _BATCH])
            out[start:start + len(batch)] = run(batch)
        return out

    def _runner(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function from a contiguous uint8 batch of pictures to its float32 features."""
        with self._lock:
            if self._run is None:
                session = self._onnx_session() if self.runtime == "onnx" else None
                if session is not None:
                    self._run = lambda batch: session.run([_ONNX_OUTPUT], {_ONNX_INPUT: batch})[0]
                else:
                    torch, model = self._load_torch()

                    def run(batch: np.ndarray) -> np.ndarray:
                        with torch.inference_mode():
                            return model(torch.from_numpy(batch)).numpy()

                    self._run = run
            return self._run

    def _load_torch(self) -> tuple[Any, Any]:
        """Return ``(torch, model)``, building the model and loading its weights on first use (lock held).

        The model takes a batch of uint8 RGB pictures, shape ``(N, input_size, input_size, 3)``, normalises them as
        its weights expect and returns their ``(N, dims)`` features.
        """
        if self._torch_model is None:
            backbone = self.backbone
            # Torch is the only way to run ResNet-152 or export it; EfficientNet-Lite0 needs it only on torch.
            purpose = backbone.name if backbone._spec.build_onnx is None else f"{backbone.name} on the torch runtime"
            torch = import_torch_package("torch", purpose)
            torch.set_num_threads(self.settings.threads)
            # Built without memory ("meta" tensors), then given the file's tensors: initialising ResNet-152's
            # 60 M random parameters only to overwrite them would cost a second. strict=True guarantees that
            # every parameter and buffer is replaced.
            with torch.device("meta"):
                model = backbone._spec.build()
            try:
                state = torch.load(backbone.weights, map_location="cpu", weights_only=True)
                # The classifier is not part of the model; a file with or without it is accepted.
                state = {k: v for k, v in state.items() if not k.startswith(("fc.", "_fc."))}
                model.load_state_dict(state, strict=True, assign=True)
            except Exception as exc:  # torch raises RuntimeError, pickle errors, OSError...: all mean "bad file"
                raise MvrError(f"{backbone.weights}: not usable {backbone.name} weights ({_first_line(exc)})") \
                    from None
            self._torch_model = torch, _normalised(torch, model.eval(), backbone)
        return self._torch_model

    def _onnx_session(self) -> Any:
        """Export the backbone unless its file exists, then open it; on failure warn on stderr and return None."""
        path = onnx_path(self.backbone, self.settings.cache_dir)
        try:
            import onnxruntime  # first: no export when it is missing

            if not path.is_file():
                self._export(path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.settings.threads
            options.inter_op_num_threads = 1
            # As with torch's OMP_WAIT_POLICY=PASSIVE: threads that spin while waiting hold cores that ffmpeg, the
            # audio features or other workers need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3  # errors only: notes on graph optimisation are not the user's concern
            return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except MvrError:
            raise  # unusable weights (torch would fail the same way), or no torch for an export that needs it
        except Exception as exc:  # a missing package, a failed export, a full disk: torch still works
            note(f"mvr: warning: ONNX Runtime not used for {self.backbone.extractor} ({type(exc).__name__}:"
                 f" {_first_line(exc)}); running torch instead")
            return None

    def _export(self, path: Path) -> None:
        """Export the backbone with its normalisation to ONNX at ``path``, batch size left free (lock held).

        Built from the weights without torch where the backbone can be (``build_onnx``), by torch's exporter
        otherwise. The file is written under a temporary name in the same folder and then renamed (atomic on POSIX),
        so that another process sees either no file or the whole file; two processes exporting at once write the
        same model.
        """
        note(f"{self.backbone.name}: exporting the network for ONNX Runtime (once, a few seconds) to {path}")
        spec = self.backbone._spec
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            if spec.build_onnx is not None:
                model = spec.build_onnx(self.backbone.weights, mean=spec.mean, std=spec.std, input_name=_ONNX_INPUT,
                                        output_name=_ONNX_OUTPUT, opset=_ONNX_OPSET)
                staged.write_bytes(model.SerializeToString())
            else:
                self._torch_export(staged)
            os.replace(staged, path)
        finally:
            staged.unlink(missing_ok=True)

    def _torch_export(self, path: Path) -> None:
        """Export the torch model (:meth:`_load_torch`) to ONNX at ``path`` with torch's exporter (lock held)."""
        torch, model = self._load_torch()
        size = self.backbone.input_size
        example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on constant folding and tracing
            torch.onnx.export(model, (example,), path, input_names=[_ONNX_INPUT], output_names=[_ONNX_OUTPUT],
                              dynamic_axes={_ONNX_INPUT: {0: "batch"}, _ONNX_OUTPUT: {0: "batch"}},
                              opset_version=_ONNX_OPSET, dynamo=False)


def _normalised(torch: Any, model: Any, backbone: Backbone) -> Any:
    """``model`` behind its input normalisation, as one module: what both runtimes run."""
    spec = backbone._spec

    class Normalised(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

        def forward(self, frames: Any) -> Any:
            # NHWC uint8 is already channels-last in memory: permuting gives the layout oneDNN runs fastest on
            # CPU (about 3x faster than NCHW here) without copying.
            return self.model((frames.permute(0, 3, 1, 2).float() - self.mean) / self.std)

    return Normalised().eval()


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
