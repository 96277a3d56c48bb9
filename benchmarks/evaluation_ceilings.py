"""The best leave-one-out precision@k a benchmark collection allows, from its manifest alone (not a timing).

``mvr dataset build`` writes each item's ``label`` (its music's style), ``group`` (its source track) and
``visual_style``. Two reference rankings bound what visual retrieval can reach on such a collection, under the
protocol of ``mvr evaluate --protocol loo`` (each item queries all others but those of its own group):

chance
    A random ranking: the share of a query's candidates that have its label.
style oracle
    A ranking that knows each item's visual style exactly and nothing else: the candidates of the query's style
    first, in random order, then the others in random order. Its expected precision@k is computed exactly
    (no sampling): from ``s`` candidates of the query's style, ``a`` of them with its label, and ``r`` others,
    ``b`` of them with its label, it is ``a / s`` when ``s >= k``, else ``(a + (k - s) * b / r) / k``.

Pictures say nothing of a label beyond their style, so no visual method can beat the style oracle but by chance;
on a ``factorial`` collection it is chance itself.

Usage::

    python benchmarks/evaluation_ceilings.py DIR [DIR ...] [-k 5]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def read_manifest(folder: Path) -> dict[str, np.ndarray]:
    """The label, group and visual style columns of ``folder/manifest.csv``."""
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {column: np.array([row[column] for row in rows]) for column in ("label", "group", "visual_style")}


def ceilings(items: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """Mean precision@k over all queries of a random ranking and of the style oracle, with standard errors."""
    label, group, style = items["label"], items["group"], items["visual_style"]
    candidate = group[:, None] != group[None, :]  # excludes the query and its near-copies
    relevant = (label[:, None] == label[None, :]) & candidate
    same_style = (style[:, None] == style[None, :]) & candidate
    chance = relevant.sum(axis=1) / candidate.sum(axis=1)
    s = same_style.sum(axis=1)
    a = (relevant & same_style).sum(axis=1)
    r = (candidate & ~same_style).sum(axis=1)
    b = (relevant & ~same_style).sum(axis=1)
    filled = np.where(r > 0, (k - np.minimum(s, k)) * b / np.maximum(r, 1), 0.0)
    oracle = np.where(s >= k, a / np.maximum(s, 1), (a + filled) / k)
    n = len(label)
    return {
        "items": n,
        "chance": float(chance.mean()),
        "style_oracle": float(oracle.mean()),
        # The spread of the per-query values over sqrt(n): how far a method's mean moves by the luck of the draw.
        "style_oracle_se": float(oracle.std(ddof=1) / np.sqrt(n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="made by mvr dataset build")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    found = {str(folder): ceilings(read_manifest(folder), args.k) for folder in args.folders}
    print(f"{'collection':<32} {'items':>5} {'chance':>7} {'style oracle':>14}  (precision@{args.k}, leave-one-out)")
    for name, row in found.items():
        print(f"{name:<32} {row['items']:>5} {row['chance']:>7.3f} "
              f"{row['style_oracle']:>7.3f} ± {row['style_oracle_se']:.3f}")
    print(json.dumps({"k": args.k, "collections": found}))


if __name__ == "__main__":
    main()
