"""The collection map's layouts (:mod:`mvr.retrieval.collection_map`): time and sanity at 200 and 10k videos, and
umap-learn beside scikit-learn's t-SNE where it is installed.

The vectors are synthetic, shaped like mvr's: 136 non-negative audio numbers (Bray-Curtis) and 2,560 visual ones
(cosine), drawn around 8 label centres (each video its label's centre plus noise as large as the centres'
spread, so that labels overlap). For each size and target (audio, visual, fused with equal late-fusion weights)
it reports the seconds of :func:`mvr.retrieval.collection_map.compute_layout` (neighbours, then t-SNE), whether a
second computation gives the same layout, and the share of each video's 10 nearest points on the map that share
its label, beside the same share by the target's own distances (what the map can at best keep).

With ``--umap`` (umap-learn importable), umap-learn's UMAP on the same neighbour graph's vectors (its own
Bray-Curtis / cosine, ``random_state`` fixed) is timed too, its first call in the process apart (numba compiles).

Usage::

    python benchmarks/bench_map.py [--sizes 200 10000] [--umap]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mvr.retrieval.collection_map import _target_distances, compute_layout
from mvr.retrieval.fusion import Fusion, Pool
from mvr.retrieval.query import SearchPlan

LABELS = 8


def synthetic_pool(size: int, seed: int = 0) -> tuple[Pool, np.ndarray]:
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, LABELS, size)
    audio_centres = generator.gamma(2.0, 1.0, (LABELS, 136))
    visual_centres = np.abs(generator.standard_normal((LABELS, 2560)))
    audio = np.abs(audio_centres[labels] + audio_centres.std() * generator.standard_normal((size, 136)))
    visual = np.abs(visual_centres[labels] + visual_centres.std() * generator.standard_normal((size, 2560)))
    return Pool(ids=np.arange(1, size + 1), matrices={"audio": audio, "visual": visual}), labels


def plans(pool: Pool) -> dict[str, SearchPlan]:
    fusion = Fusion(weights={"audio": 0.5, "visual": 0.5}, metrics={"audio": "braycurtis", "visual": "cosine"})
    return {
        "audio": SearchPlan("audio", "braycurtis", None, "equal", Pool(pool.ids, {"audio": pool.matrices["audio"]})),
        "visual": SearchPlan("visual", "cosine", None, "equal", Pool(pool.ids, {"visual": pool.matrices["visual"]})),
        "fused": SearchPlan("fused", "cosine", fusion, "equal", pool),
    }


def label_share(xy_or_rows: np.ndarray, labels: np.ndarray, k: int = 10, *, precomputed: bool = False) -> float:
    """The share of each video's k nearest (on the map, or by precomputed distances) that share its label."""
    if precomputed:
        found = xy_or_rows.copy()
    else:
        found = np.linalg.norm(xy_or_rows[:, None] - xy_or_rows[None], axis=2)
    np.fill_diagonal(found, np.inf)
    nearest = np.argpartition(found, k, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def sample_rows(size: int, count: int = 1000) -> np.ndarray:
    return np.sort(np.random.default_rng(1).choice(size, min(size, count), replace=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 10000], help="videos per catalog")
    parser.add_argument("--umap", action="store_true", help="also time umap-learn (when importable)")
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        pool, labels = synthetic_pool(size)
        rows = sample_rows(size)  # the label shares are measured on up to 1,000 videos
        for target, plan in plans(pool).items():
            start = time.perf_counter()
            layout = compute_layout(plan)
            seconds = time.perf_counter() - start
            same = bool(np.array_equal(layout, compute_layout(plan))) if size <= 1000 else None
            by_distance = _target_distances(plan.pool, rows, plan.metric, plan.fusion)[:, rows]
            found = {"size": size, "target": target, "tsne_s": round(seconds, 2), "deterministic": same,
                     "map_label_share": round(label_share(layout[rows], labels[rows]), 3),
                     "distance_label_share": round(label_share(np.nan_to_num(by_distance, nan=np.inf),
                                                               labels[rows], precomputed=True), 3)}
            if args.umap and target != "fused":
                found |= umap_figures(plan, labels, rows)
            print(json.dumps(found), flush=True)
            results.append(found)
    print(json.dumps({"map": results}))


def umap_figures(plan: SearchPlan, labels: np.ndarray, rows: np.ndarray) -> dict:
    import umap  # numba compiles its functions on the first call in a process

    (matrix,) = plan.pool.matrices.values()
    timings = []
    layouts = []
    for _ in range(2):
        start = time.perf_counter()
        layouts.append(umap.UMAP(metric=plan.metric, random_state=0).fit_transform(matrix))
        timings.append(round(time.perf_counter() - start, 2))
    return {"umap_first_s": timings[0], "umap_s": timings[1],
            "umap_deterministic": bool(np.array_equal(layouts[0], layouts[1])),
            "umap_label_share": round(label_share(layouts[1][rows], labels[rows]), 3)}


if __name__ == "__main__":
    main()
