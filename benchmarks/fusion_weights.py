"""Leave-one-out precision@k and mAP of late fusion by audio weight, on labelled catalogs (not a timing).

``mvr.retrieval.fusion`` fuses the two spaces' z-scored distances with ``mvr.retrieval.targets.EQUAL_WEIGHTS``
(0.5 / 0.5). This measures what other weights would give, the same way ``mvr evaluate`` scores
(``mvr.evaluation.scoring.score_candidates`` with a :class:`~mvr.retrieval.fusion.Fusion` of those weights), so that
the choice of the default can be checked on any labelled catalog, such as the benchmark collections of
``mvr dataset build`` (``docs/evaluation.md``).

Usage::

    python benchmarks/fusion_weights.py CATALOG [CATALOG ...] [--metric cosine] [-k 5]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvr.evaluation.scoring import score_candidates
from mvr.retrieval.fusion import Fusion
from mvr.retrieval.search import SearcherCache
from mvr.store import Catalog

AUDIO_WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def by_weight(folder: Path, metric: str, k: int) -> dict[float, tuple[float, float]]:
    """``audio weight -> (precision@k, mAP)`` of late fusion (visual weight = 1 - audio weight)."""
    with Catalog.open(folder, create=False) as catalog:
        videos = {video.id: video for video in catalog.videos()}
        pool = SearcherCache().pool(catalog, ("audio", "visual"))  # the videos with both, aligned
        found = {}
        for weight in AUDIO_WEIGHTS:
            fusion = Fusion("late", weights={"audio": weight, "visual": 1.0 - weight})
            result, = score_candidates(pool, videos, "fused", k, "loo", metrics=(metric,), fusion=fusion)
            found[weight] = (result.precision, result.map)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogs", nargs="+", type=Path, metavar="CATALOG")
    parser.add_argument("--metric", default="cosine")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    table = {str(folder): by_weight(folder, args.metric, args.k) for folder in args.catalogs}
    print("| catalog | " + " | ".join(f"audio {w:.1f}" for w in AUDIO_WEIGHTS) + " |")
    print("|---" * (len(AUDIO_WEIGHTS) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{p:.3f} / {m:.2f}" for p, m in row.values()) + " |")
    print(json.dumps({"k": args.k, "metric": args.metric,
                      "catalogs": {name: {str(w): {"precision": p, "map": m} for w, (p, m) in row.items()}
                                   for name, row in table.items()}}))


if __name__ == "__main__":
    main()
