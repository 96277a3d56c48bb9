"""Feature spaces: each turns a media file into one fixed-length vector.

* :mod:`mvr.features.base`: the :class:`Extractor` protocol, feature groups, the registry entry;
* :mod:`mvr.features.spaces`: the registry (:data:`SPACES`): ``audio``, ``musicnn`` and ``visual``;
* :mod:`mvr.features.pyaudioanalysis`: the study's audio features, vectorised;
* :mod:`mvr.features.musicnn`: MusiCNN's networks read from their checkpoints, run on ONNX Runtime;
* :mod:`mvr.features.cnn` and :mod:`mvr.features.runtime`: keyframes, backbones, and running the CNN;
* :mod:`mvr.features.extract`: every requested space of one file, side by side.
"""

from mvr.features.base import Extractor, FeatureGroup, FeatureSpace, SpaceOptions
from mvr.features.extract import Features, build_extractors, extract_features
from mvr.features.spaces import (
    SPACES,
    AudioOptions,
    MusicnnOptions,
    VisualSettings,
    get_space,
    space_names,
)

__all__ = [
    "SPACES", "AudioOptions", "Extractor", "FeatureGroup", "FeatureSpace", "Features", "MusicnnOptions",
    "SpaceOptions", "VisualSettings", "build_extractors", "extract_features", "get_space", "space_names",
]
