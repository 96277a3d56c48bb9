"""What a feature space is: an :class:`Extractor` protocol, named feature groups, and the space's registry entry.

A *feature space* is one way of turning a media file into a fixed-length vector ("audio": pyAudioAnalysis'
statistics; "visual": a CNN over keyframes). Vectors of one space are comparable only when they come from the same
extractor string, which names the method, its parameters and its version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mvr.config import RuntimeSettings
from mvr.media import MediaInfo


@dataclass(frozen=True)
class FeatureGroup:
    """Columns of a space's vector that describe one aspect of the media (timbre, harmony, the keyframes' mean).

    Attributes
    ----------
    name : str
        What the columns describe, as a person reads it (``"MFCC / timbre"``).
    columns : np.ndarray
        int64 ``(m,)``: the columns' positions in the vector, ascending.
    """

    name: str
    columns: np.ndarray


class Extractor(Protocol):
    """Turns one media file into one space's vector.

    Attributes
    ----------
    space : str
        The feature space's registry name.
    extractor : str
        Names the method, its parameters and version; vectors with different strings are never compared.
    dims : int
        Length of the vector.
    stream : str
        The stream the extractor reads: ``"audio"`` or ``"video"``.
    groups : tuple of FeatureGroup
        The vector's named parts, together covering every column once.
    """

    space: str
    extractor: str
    dims: int
    stream: str
    groups: tuple[FeatureGroup, ...]

    def extract(self, path: Path, *, info: MediaInfo, threads: int) -> np.ndarray:
        """The file's vector, float32 ``(dims,)``; raises :class:`mvr.errors.MediaError` when it has none."""
        ...

    def load(self) -> None:
        """Load what the extractor needs (a network's weights) now rather than on the first file."""
        ...


class SpaceOptions(Protocol):
    """A space's options (a frozen dataclass), as a catalog stores them so that every vector stays comparable."""

    def to_catalog(self) -> dict[str, str]:
        """The options as catalog settings (keys without the space's prefix)."""
        ...

    def describe(self) -> str:
        """The options in a few words, for error messages."""
        ...


@dataclass(frozen=True)
class FeatureSpace:
    """A registry entry: how to build a space's extractor, and what its options and defaults are.

    Attributes
    ----------
    name : str
        The registry name, used on the command line, in the API and in the catalog.
    summary : str
        One line for ``--help`` and the dashboard.
    stream : str
        ``"audio"`` or ``"video"``: the stream the space needs.
    default_options : SpaceOptions
        The options of a new catalog.
    options_from_catalog : callable
        ``settings -> SpaceOptions`` from a catalog's stored settings of this space (without the prefix); None
        when the catalog stored none.
    make_extractor : callable
        ``(options, runtime) -> Extractor``.
    default_metric : str
        mvr's metric for this space, chosen on the benchmark collections (``docs/evaluation.md``).
    learns_projection : bool
        Whether ``mvr tune`` tries a projection learned from the labels in this space
        (:mod:`mvr.retrieval.projection`): chosen on the benchmark collections, where it gained in the audio spaces
        on every one and lost on most in the visual space (``docs/evaluation.md``).
    """

    name: str
    summary: str
    stream: str
    default_options: SpaceOptions
    options_from_catalog: Callable[[Mapping[str, str]], SpaceOptions | None]
    make_extractor: Callable[[SpaceOptions, RuntimeSettings], Extractor]
    default_metric: str
    learns_projection: bool = False
