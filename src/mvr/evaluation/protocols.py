"""The evaluation protocols: which labelled videos query, and which are ranked."""

from __future__ import annotations

import hashlib

import numpy as np

from mvr.errors import UsageError

PROTOCOLS = ("loo", "holdout", "queries")
HOLDOUT_PER_LABEL = 5
PROTOCOL_NAMES = {"loo": "leave-one-out", "holdout": f"holdout ({HOLDOUT_PER_LABEL} queries per label)",
                  "queries": "queries from another catalog"}


def holdout_queries(
    keys: np.ndarray, labels: np.ndarray, groups: np.ndarray, per_label: int = HOLDOUT_PER_LABEL
) -> np.ndarray:
    """Indices of the held-out queries: ``per_label`` videos of each label, from as many groups as possible.

    The choice depends only on ``keys`` (content hashes), never on indexing order, so the same media give the same
    queries in any catalog. Each label's videos are taken in order of the SHA-256 of their key, skipping a video
    whose group already gave a query until every group has given one: two excerpts of one song would be one query
    asked twice.

    Raises
    ------
    UsageError
        When a label has fewer than ``per_label + 1`` videos (one must stay in the pool).
    """
    chosen = []
    for label in sorted({str(label) for label in labels if label is not None}):
        members = np.flatnonzero(labels == label)
        if members.size <= per_label:
            raise UsageError(
                f"holdout needs more than {per_label} videos per label; '{label}' has {members.size}"
                " (use --protocol loo)"
            )
        members = sorted(members, key=lambda i: hashlib.sha256(str(keys[i]).encode()).hexdigest())
        seen: dict[object, int] = {}
        # The n-th video of a group comes after the first videos of all groups.
        rounds = []
        for index in members:
            group = groups[index] if groups[index] is not None else ("video", index)
            rounds.append((seen.get(group, 0), len(rounds), index))
            seen[group] = seen.get(group, 0) + 1
        chosen += [index for _, _, index in sorted(rounds)[:per_label]]
    return np.array(sorted(chosen), dtype=np.int64)



