"""Named configurations, the one registry of them: mvr's own defaults, and the study's (``--preset paper``).

``mvr index``, ``query`` and ``evaluate`` take a preset; ``mvr evaluate`` scores every preset's method side by
side, under the preset's ``method`` name (``mvr`` and ``study``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mvr.errors import UsageError
from mvr.features import SpaceOptions, VisualSettings
from mvr.retrieval.targets import DEFAULT_FUSION, FUSED, default_metrics


@dataclass(frozen=True)
class Preset:
    """Everything a preset decides; explicit command-line options still override each part.

    Attributes
    ----------
    method : str
        The name its results carry in ``mvr evaluate``.
    options : dict
        Extractor options per feature space (a space left out takes its defaults).
    fusion : str
        How fused search combines the spaces (one of ``mvr.retrieval.FUSIONS``).
    metrics : dict
        The metric of each search target (each space, and ``fused``).
    protocol : str
        The evaluation protocol (``loo`` or ``holdout``).
    spaces : tuple of str or None
        The feature spaces ``mvr index`` computes; None: every registered one.
    """

    method: str
    options: dict[str, SpaceOptions] = field(default_factory=dict)
    fusion: str = DEFAULT_FUSION
    metrics: dict[str, str] = field(default_factory=default_metrics)
    protocol: str = "loo"
    spaces: tuple[str, ...] | None = None


STUDY_METRICS = {"audio": "euclidean", "visual": "euclidean", FUSED: "braycurtis"}
"""The study's choices per search target (its section 4), with its concat fusion."""

PRESETS = {
    "default": Preset(method="mvr"),
    # The study: its two spaces, ResNet-152 on every I-frame, raw concatenation, its metrics, 5 held-out queries
    # per label.
    "paper": Preset(method="study", options={"visual": VisualSettings(backbone="resnet152", max_keyframes=None)},
                    fusion="concat", metrics=STUDY_METRICS, protocol="holdout", spaces=("audio", "visual")),
}
"""Every preset, by the name ``--preset`` takes."""


def get_preset(name: str | None) -> Preset:
    """A preset by name (None: ``default``).

    Raises
    ------
    UsageError
        For a name that is not registered.
    """
    try:
        return PRESETS[name or "default"]
    except KeyError:
        raise UsageError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}") from None
