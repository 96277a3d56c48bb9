"""Feature extraction for one media file: the vectors of each requested space, computed side by side."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr import media
from mvr.config import RuntimeSettings
from mvr.errors import MediaError
from mvr.features.base import Extractor, SpaceOptions
from mvr.features.spaces import get_space


@dataclass
class Features:
    """The vectors extracted from one file, and what could not be extracted.

    Attributes
    ----------
    info : media.MediaInfo
        What ffprobe said about the file.
    vectors : dict
        ``space -> (extractor, vector)`` for each space that could be computed.
    notes : list of str
        One line per space that could not be computed, with the reason.
    """

    info: media.MediaInfo
    vectors: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_extractors(options: Mapping[str, SpaceOptions], runtime: RuntimeSettings) -> dict[str, Extractor]:
    """One extractor per space named in ``options`` (space -> its options), in the registry's order of names given.

    Raises
    ------
    UsageError
        For an unknown space.
    MvrError
        When an extractor cannot be set up (a backbone's weights missing).
    """
    return {name: get_space(name).make_extractor(space_options, runtime) for name, space_options in options.items()}


def extract_features(
    path: Path,
    extractors: Mapping[str, Extractor],
    *,
    threads: int,
    info: media.MediaInfo | None = None,
) -> Features:
    """Compute each extractor's vector of one media file.

    A space that cannot be computed (no audio stream, audio shorter than one segment, no pictures) is left out and
    noted; nothing is invented in its place. The spaces run side by side: the audio features are numpy work, the
    visual ones wait mostly on ffmpeg and the CNN, which release the GIL. Beside others, each space's numpy work
    gets an equal share of ``threads``.

    Raises
    ------
    MediaError
        When the file cannot be read, or none of the spaces can be computed.
    """
    path = Path(path)
    info = info or media.probe(path)
    share = max(1, threads // len(extractors)) if len(extractors) > 1 else threads
    features = Features(info=info)
    with ThreadPoolExecutor(max_workers=max(1, len(extractors))) as pool:
        running = {space: pool.submit(extractor.extract, path, info=info, threads=share)
                   for space, extractor in extractors.items()}
        for space, future in running.items():
            try:
                features.vectors[space] = (extractors[space].extractor, future.result())
            except MediaError as exc:
                features.notes.append(f"{space} skipped: {exc.reason}")
    if not features.vectors:
        raise MediaError(str(path), "; ".join(features.notes))
    return features
