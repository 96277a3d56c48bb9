"""mvr: content-based music video retrieval.

The Python API in a few names::

    import mvr
    with mvr.Catalog.open("my-catalog") as catalog:
        report = mvr.index_sources(catalog, ["videos/", "https://www.youtube.com/watch?v=..."], label="Pop")
        found = mvr.recommend(catalog, "query.mp4", modality="fused", k=5)
        for match in found.matches:
            print(match.rank, match.video.title, match.distance)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Resolved on first use, so that `import mvr` (and the CLI's start-up) stays cheap.
_PUBLIC = {
    "Catalog": "mvr.store",
    "index_sources": "mvr.ingest.pipeline",
    "recommend": "mvr.retrieval.query",
    "extract_features": "mvr.features",
    "build_extractors": "mvr.features",
    "VisualSettings": "mvr.features",
    "RuntimeSettings": "mvr.config",
    "MvrError": "mvr.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mvr' has no attribute {name!r}")
