"""What a search can name: each feature space, or ``fused`` (a fusion of spaces), and their default metrics.

Kept apart from the ranking code so that the command line lists the choices without loading scipy.
"""

from __future__ import annotations

from mvr.features import SPACES, space_names

FUSED = "fused"
"""The name of the multimodal search (every fused space at once), beside the spaces' own names."""
FUSIONS = ("late", "concat", "adaptive")
"""How a fused search combines spaces: mvr's late fusion of z-scored distances, the study's concatenation, or late
fusion whose weights adapt to each query (:func:`mvr.retrieval.fusion.adaptive_weights`)."""
DEFAULT_FUSION = "late"
EQUAL_WEIGHTS = {"audio": 0.5, "visual": 0.5}
"""The fused spaces and their weights by default: the study's two spaces, equally (``docs/evaluation.md``)."""
DEFAULT_MIX_LENGTH = 20
"""Videos in a mix by default (:func:`mvr.retrieval.discovery.build_mix`)."""
DEFAULT_PATH_LENGTH = 8
"""Videos in a path by default, both ends included (:func:`mvr.retrieval.discovery.build_path`)."""


def search_targets() -> tuple[str, ...]:
    """What a search can name: each feature space, and the fusion of the spaces."""
    return (*space_names(), FUSED)


def default_metrics() -> dict[str, str]:
    """mvr's metric for each search target: each space's own, and cosine for the fused search."""
    return {**{name: space.default_metric for name, space in SPACES.items()}, FUSED: "cosine"}
