"""Named configurations: mvr's own defaults, and the study's (``--preset paper``)."""

from __future__ import annotations

from dataclasses import dataclass

from mvr.features import VisualSettings
from mvr.search import DEFAULT_FUSION, DEFAULT_METRICS, STUDY_METRICS


@dataclass(frozen=True)
class Preset:
    """Everything a preset decides; explicit command-line options still override each part.

    Attributes
    ----------
    visual : VisualSettings
        Backbone and keyframe cap for indexing and queries.
    fusion : str
        How fused search combines the modalities (one of ``mvr.search.FUSIONS``).
    metrics : dict
        The metric of each search modality.
    protocol : str
        The evaluation protocol (``loo`` or ``holdout``).
    """

    visual: VisualSettings
    fusion: str
    metrics: dict[str, str]
    protocol: str


PRESETS = {
    "default": Preset(visual=VisualSettings(), fusion=DEFAULT_FUSION, metrics=DEFAULT_METRICS, protocol="loo"),
    # The study: ResNet-152 on every I-frame, raw concatenation, its metrics, 5 held-out queries per label.
    "paper": Preset(visual=VisualSettings(backbone="resnet152", max_keyframes=None), fusion="concat",
                    metrics=STUDY_METRICS, protocol="holdout"),
}
