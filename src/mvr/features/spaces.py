"""The registry of feature spaces: ``audio`` (pyAudioAnalysis' statistics), ``musicnn`` (a learned audio embedding)
and ``visual`` (a CNN over keyframes).

Every layer (the catalog, search, the command line, the API and the page) lists the spaces from :data:`SPACES`;
a new space is one more entry here (``docs/architecture.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr.config import RuntimeSettings
from mvr.errors import UsageError
from mvr.features import cnn, musicnn, pyaudioanalysis
from mvr.features.base import FeatureGroup, FeatureSpace
from mvr.features.runtime import CnnModel
from mvr.media import MediaInfo

# audio ------------------------------------------------------------------------------------------------------------

# pyAudioAnalysis' 34 short-term features in four families; each family's columns are its features' means and
# standard deviations, and those of their deltas.
_AUDIO_FAMILIES = {
    "energy": ("zcr", "energy", "energy_entropy"),
    "spectral": ("spectral_centroid", "spectral_spread", "spectral_entropy", "spectral_flux", "spectral_rolloff"),
    "MFCC / timbre": tuple(f"mfcc_{i}" for i in range(1, 14)),
    "chroma / harmony": tuple(f"chroma_{i}" for i in range(1, 13)) + ("chroma_std",),
}


def _audio_groups() -> tuple[FeatureGroup, ...]:
    position = {name: i for i, name in enumerate(pyaudioanalysis.FEATURE_NAMES)}
    groups = []
    for family, names in _AUDIO_FAMILIES.items():
        columns = [position[f"{prefix}{name}_{stat}"] for name in names for prefix in ("", "delta ")
                   for stat in ("mean", "std")]
        groups.append(FeatureGroup(family, np.array(sorted(columns), dtype=np.int64)))
    return tuple(groups)


@dataclass(frozen=True)
class AudioOptions:
    """The audio space has no options: the study's exact pyAudioAnalysis features."""

    def to_catalog(self) -> dict[str, str]:
        """Nothing to store."""
        return {}

    def describe(self) -> str:
        """The method's name."""
        return "pyAudioAnalysis features"


@dataclass(frozen=True)
class AudioExtractor:
    """pyAudioAnalysis' 136 segment statistics, median over the 1 s segments (:mod:`mvr.features.pyaudioanalysis`)."""

    space: str = "audio"
    extractor: str = pyaudioanalysis.AUDIO_EXTRACTOR
    dims: int = pyaudioanalysis.AUDIO_DIMS
    stream: str = "audio"
    groups: tuple[FeatureGroup, ...] = field(default_factory=_audio_groups, compare=False)

    def extract(self, path: Path, *, info: MediaInfo, threads: int) -> np.ndarray:
        """The file's 136-d audio vector."""
        return pyaudioanalysis.audio_vector(path, info=info, threads=threads)

    def load(self) -> None:
        """Nothing to load: the features are computed from the samples alone."""


# musicnn ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MusicnnOptions:
    """Which musicnn network and layer embed the audio (:data:`mvr.features.musicnn.MODELS`)."""

    model: str = musicnn.DEFAULT_MODEL
    layer: str | None = None  # the model's own default layer

    @property
    def chosen_layer(self) -> str:
        """The layer, the model's default when none is named."""
        return self.layer or musicnn.MODELS[self.model].default_layer

    def to_catalog(self) -> dict[str, str]:
        """The model and layer; the weights' checksum is in the extractor string."""
        return {"model": self.model, "layer": self.chosen_layer}

    def describe(self) -> str:
        """``musicnn MSD_musicnn/penultimate``."""
        return f"musicnn {self.model}/{self.chosen_layer}"


def _musicnn_from_catalog(stored: Mapping[str, str]) -> MusicnnOptions | None:
    if "model" not in stored:
        return None
    return MusicnnOptions(model=stored["model"], layer=stored.get("layer") or None)


class MusicnnExtractor:
    """A MusiCNN tagger's embedding of the 3 s patches, mean over the file (:mod:`mvr.features.musicnn`).

    The network (and, the first time on a machine, the wheel that carries its weights) loads on first use; the
    extractor string names the weights' checksum, so it is known only once they are read.
    """

    space = "musicnn"
    stream = "audio"

    def __init__(self, options: MusicnnOptions, runtime: RuntimeSettings) -> None:
        if options.model not in musicnn.MODELS:
            raise UsageError(f"unknown musicnn model {options.model!r}; choose one of {', '.join(musicnn.MODELS)}")
        self.options = options
        self.dims = musicnn.MODELS[options.model].layers[options.chosen_layer]
        self.groups = (FeatureGroup("learned embedding", np.arange(self.dims, dtype=np.int64)),)
        self._runtime = runtime
        self._model: musicnn.MusicnnModel | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> musicnn.MusicnnModel:
        """The network on ONNX Runtime, loaded once (every thread shares it)."""
        with self._lock:
            if self._model is None:
                self._model = musicnn.load_model(self.options.model, cache_dir=self._runtime.cache_dir,
                                                 layer=self.options.chosen_layer, threads=self._runtime.threads)
            return self._model

    @property
    def extractor(self) -> str:
        """Model, layer, pooling and the weights' checksum."""
        return self.model.extractor

    def extract(self, path: Path, *, info: MediaInfo, threads: int) -> np.ndarray:
        """The file's embedding (the network keeps the threads it was loaded with)."""
        return musicnn.musicnn_vector(path, model=self.model, info=info)

    def load(self) -> None:
        """Fetch and convert the weights if needed, and open the network."""
        self.model


# visual -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisualSettings:
    """How visual vectors are made: the backbone, its weights file, and the keyframe cap (None = all)."""

    backbone: str = cnn.DEFAULT_BACKBONE
    max_keyframes: int | None = cnn.DEFAULT_MAX_KEYFRAMES
    weights: Path | None = None

    def to_catalog(self) -> dict[str, str]:
        """The backbone and cap; the weights file is the user's, its checksum is in the extractor string."""
        return {"backbone": self.backbone, "max_keyframes": str(self.max_keyframes or 0)}

    def describe(self) -> str:
        """``backbone X on at most N keyframes``."""
        cap = f"at most {self.max_keyframes} keyframes" if self.max_keyframes else "every keyframe"
        return f"backbone {self.backbone} on {cap}"


def _visual_from_catalog(stored: Mapping[str, str]) -> VisualSettings | None:
    if "backbone" not in stored:
        return None
    return VisualSettings(backbone=stored["backbone"], max_keyframes=int(stored.get("max_keyframes") or 0) or None)


class VisualExtractor:
    """A CNN over the keyframes, mean and standard deviation (:mod:`mvr.features.cnn`); its model loads on first use.

    Parameters
    ----------
    options : VisualSettings
        Backbone, weights and keyframe cap.
    runtime : RuntimeSettings
        Threads, CNN runtime, cache folder.
    """

    space = "visual"
    stream = "video"

    def __init__(self, options: VisualSettings, runtime: RuntimeSettings) -> None:
        backbone = cnn.get_backbone(options.backbone, weights=options.weights, torch_hub_dir=runtime.torch_hub_dir)
        self.options = options
        self.model = CnnModel(backbone, runtime)
        self.extractor = cnn.visual_extractor(backbone, options.max_keyframes)
        self.dims = 2 * backbone.dims
        self.groups = (FeatureGroup("keyframes' mean", np.arange(backbone.dims, dtype=np.int64)),
                       FeatureGroup("keyframes' spread", np.arange(backbone.dims, self.dims, dtype=np.int64)))

    def extract(self, path: Path, *, info: MediaInfo, threads: int) -> np.ndarray:
        """The file's visual vector (the CNN keeps the threads it was made with)."""
        return cnn.visual_vector(path, model=self.model, max_keyframes=self.options.max_keyframes, info=info)

    def keyframes(self, path: Path, *, info: MediaInfo | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The file's keyframes and their embeddings, whose mean and spread :meth:`extract` returns
        (:func:`mvr.features.cnn.keyframe_embeddings`)."""
        return cnn.keyframe_embeddings(path, model=self.model, max_keyframes=self.options.max_keyframes, info=info)

    def load(self) -> None:
        """Load the network (and export it to ONNX once) by embedding one blank picture."""
        size = self.model.backbone.input_size
        self.model.embed(np.zeros((1, size, size, 3), dtype=np.uint8))


def _make_visual(options: VisualSettings, runtime: RuntimeSettings) -> VisualExtractor:
    if not isinstance(options, VisualSettings):
        raise UsageError(f"visual space: options must be VisualSettings, not {type(options).__name__}")
    return VisualExtractor(options, runtime)


# the registry -----------------------------------------------------------------------------------------------------

SPACES: dict[str, FeatureSpace] = {
    space.name: space
    for space in (
        FeatureSpace(
            name="audio", summary="pyAudioAnalysis' 136 features, as the study", stream="audio",
            default_options=AudioOptions(), options_from_catalog=lambda stored: AudioOptions(),
            make_extractor=lambda options, runtime: AudioExtractor(), default_metric="braycurtis",
            learns_projection=True,
        ),
        FeatureSpace(
            name="musicnn", summary="MusiCNN's learned embedding of the music (MSD-trained tagger)", stream="audio",
            default_options=MusicnnOptions(), options_from_catalog=_musicnn_from_catalog,
            make_extractor=lambda options, runtime: MusicnnExtractor(options, runtime), default_metric="cosine",
            learns_projection=True,
        ),
        FeatureSpace(
            name="visual", summary="a CNN over the keyframes, mean and spread", stream="video",
            default_options=VisualSettings(), options_from_catalog=_visual_from_catalog,
            make_extractor=_make_visual, default_metric="cosine",
        ),
    )
}
"""Every feature space, by name, in the order vectors are fused."""


def space_names() -> tuple[str, ...]:
    """The registered spaces' names."""
    return tuple(SPACES)


def get_space(name: str) -> FeatureSpace:
    """A space by name.

    Raises
    ------
    UsageError
        For a name that is not registered.
    """
    try:
        return SPACES[name]
    except KeyError:
        raise UsageError(f"unknown feature space '{name}'; choose one of: {', '.join(SPACES)}") from None
