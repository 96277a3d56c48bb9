"""Run-time configuration, read once at the edges (the command line, the server's start, the tests) and passed down.

Library code never reads the environment: it receives a :class:`RuntimeSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mvr.errors import UsageError
from mvr.parallel import cpu_count

CNN_RUNTIMES = ("onnx", "torch")
"""What can run the visual CNN: ONNX Runtime (mvr's default) or torch."""


def _default_cache() -> Path:
    return Path.home() / ".cache" / "mvr"


@dataclass(frozen=True)
class RuntimeSettings:
    """How this process runs mvr's work.

    Attributes
    ----------
    threads : int
        CPU threads the extractors may use together (the audio frames, the CNN).
    cnn_runtime : str or None
        One of :data:`CNN_RUNTIMES`; None picks ONNX Runtime when it is installed, torch otherwise.
    cache_dir : Path
        Where mvr keeps what it builds once (CNN exports, test fixtures, benchmark sources).
    torch_hub_dir : Path or None
        Where torch.hub keeps downloaded weights (ResNet-152's); None: torch's own default.
    """

    threads: int = field(default_factory=cpu_count)
    cnn_runtime: str | None = None
    cache_dir: Path = field(default_factory=_default_cache)
    torch_hub_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.cnn_runtime is not None and self.cnn_runtime not in CNN_RUNTIMES:
            raise UsageError(f"CNN runtime {self.cnn_runtime!r}: choose among {', '.join(CNN_RUNTIMES)}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> RuntimeSettings:
        """The settings that ``$MVR_CACHE`` and ``$MVR_CNN_RUNTIME`` ask for; only the edges call this.

        Raises
        ------
        UsageError
            When ``$MVR_CNN_RUNTIME`` names another runtime.
        """
        runtime = environ.get("MVR_CNN_RUNTIME", "").strip().lower() or None
        if runtime is not None and runtime not in CNN_RUNTIMES:
            raise UsageError(f"MVR_CNN_RUNTIME={runtime!r}: choose among {', '.join(CNN_RUNTIMES)}")
        cache = environ.get("MVR_CACHE")
        # torch.hub's rule: $TORCH_HOME/hub, $TORCH_HOME defaulting to $XDG_CACHE_HOME/torch.
        torch_home = environ.get("TORCH_HOME") or (
            str(Path(environ["XDG_CACHE_HOME"]) / "torch") if environ.get("XDG_CACHE_HOME") else None)
        return cls(cnn_runtime=runtime, cache_dir=Path(cache).expanduser() if cache else _default_cache(),
                   torch_hub_dir=Path(torch_home).expanduser() / "hub" if torch_home else None)

    def with_threads(self, threads: int) -> RuntimeSettings:
        """The same settings with ``threads`` CPU threads (an index worker's share of the cores)."""
        return replace(self, threads=max(1, int(threads)))


def prepare_process_environment() -> None:
    """Set what native libraries read once at load time; called by the edges before any model is loaded.

    torch's OpenMP threads spin while they wait for each other by default. When the cores are shared (audio
    features computed beside the visual ones, ffmpeg decoding, other programs), a spinning thread holds a core that
    a working one needs: on 2 busy cores that made EfficientNet-Lite0 2 to 4 times slower than sleeping threads
    do. A value the user set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
