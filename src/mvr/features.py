"""Feature extraction for one media file: the audio and visual vectors that indexing and querying share."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr import audio, media, visual
from mvr.errors import MediaError
from mvr.visual import DEFAULT_BACKBONE, DEFAULT_MAX_KEYFRAMES


@dataclass(frozen=True)
class VisualSettings:
    """How visual vectors are made: the backbone, its weights file, and the keyframe cap (None = all)."""

    backbone: str = DEFAULT_BACKBONE
    max_keyframes: int | None = DEFAULT_MAX_KEYFRAMES
    weights: Path | None = None


@dataclass
class Features:
    """The vectors extracted from one file, and what could not be extracted.

    Attributes
    ----------
    info : media.MediaInfo
        What ffprobe said about the file.
    vectors : dict
        ``modality -> (extractor, vector)`` for each modality that could be computed.
    notes : list of str
        One line per modality that could not be computed, with the reason.
    """

    info: media.MediaInfo
    vectors: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def extract_features(
    path: Path,
    modalities: tuple[str, ...] = ("audio", "visual"),
    settings: VisualSettings = VisualSettings(),
    info: media.MediaInfo | None = None,
) -> Features:
    """Compute the requested modalities' vectors of one media file.

    A modality that cannot be computed (no audio stream, audio shorter than one segment, no pictures) is left out
    and noted; nothing is invented in its place. Audio and visual extraction run side by side: the first is numpy
    work, the second waits mostly on ffmpeg and torch, which both release the GIL.

    Raises
    ------
    MediaError
        When the file cannot be read, or none of the requested modalities can be computed.
    """
    path = Path(path)
    info = info or media.probe(path)
    # Beside the visual extractor the audio frames get half the CPUs; alone, all of them.
    audio_threads = max(1, media.cpu_count() // 2) if "visual" in modalities else None
    jobs = {
        "audio": lambda: (audio.AUDIO_EXTRACTOR, audio.audio_vector(path, info=info, threads=audio_threads)),
        "visual": lambda: _visual(path, settings, info),
    }
    features = Features(info=info)
    with ThreadPoolExecutor(max_workers=len(modalities)) as pool:
        running = {modality: pool.submit(jobs[modality]) for modality in modalities}
        for modality, future in running.items():
            try:
                features.vectors[modality] = future.result()
            except MediaError as exc:
                features.notes.append(f"{modality} skipped: {exc.reason}")
    if not features.vectors:
        raise MediaError(str(path), "; ".join(features.notes))
    return features


def _visual(path: Path, settings: VisualSettings, info: media.MediaInfo) -> tuple[str, np.ndarray]:
    backbone = visual.get_backbone(settings.backbone, weights=settings.weights)
    vector = visual.visual_vector(path, backbone=backbone, max_keyframes=settings.max_keyframes, info=info)
    return visual.visual_extractor(backbone, settings.max_keyframes), vector
