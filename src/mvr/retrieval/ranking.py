"""mvr's ranking rule, for many queries at once: nearest first, equal distances by video id ascending.

Every ranking of mvr follows it (:func:`mvr.retrieval.search.rank`, the searchers of :mod:`mvr.index`, the
evaluation and the tuning), so that a result list never depends on the catalog's storage order. When the k-th
place ties with a candidate the rule leaves out, the list is *tied at the cut*: another, equally close video could
have taken that place, and the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cut:
    """Which candidates each query's first ``k`` take.

    Attributes
    ----------
    taken : np.ndarray
        bool ``(q, n)``: the candidate is among the query's first ``k`` (only candidates with a finite distance).
    tied_at_cut : np.ndarray
        bool ``(q,)``: a candidate left out has the same distance as the k-th taken.
    """

    taken: np.ndarray
    tied_at_cut: np.ndarray


def first_k(found: np.ndarray, k: int) -> Cut:
    """The first ``k`` of each row of ``found`` by mvr's ranking rule, in linear time per row.

    Parameters
    ----------
    found : np.ndarray
        float ``(q, n)`` distances, columns in ascending video id; NaN or inf where a candidate is not ranked.
    k : int
        How many each query takes.
    """
    finite = np.isfinite(found)
    key = np.where(finite, found, np.inf)
    if k >= key.shape[1]:
        return Cut(taken=finite, tied_at_cut=np.zeros(key.shape[0], dtype=bool))
    kth = np.partition(key, k - 1, axis=1)[:, k - 1:k]
    closer = key < kth
    level = (key == kth) & finite
    room = k - closer.sum(axis=1)
    # Among the candidates level with the k-th, the lowest ids (leftmost columns) fill the places left.
    taken = closer | (level & (np.cumsum(level, axis=1) <= room[:, None]))
    return Cut(taken=taken, tied_at_cut=level.sum(axis=1) > room)


def farther_share(found: np.ndarray, chosen: np.ndarray, outside: int = 0) -> np.ndarray:
    """For each chosen candidate of one query, the share of the query's other candidates that are farther.

    This is mvr's readable similarity (0-1, shown as a percentage): 1 for a result closer than every other
    candidate, 0.5 for one in the middle of the catalog.

    Parameters
    ----------
    found : np.ndarray
        float ``(n,)``: one query's distances; NaN where a candidate is not ranked.
    chosen : np.ndarray
        int ``(m,)``: positions in ``found`` of the candidates to describe.
    outside : int
        Candidates not in ``found`` that are known to be farther than all of it (those a shortlist left out).
    """
    finite = np.sort(found[np.isfinite(found)])
    others = finite.size - 1 + outside
    if others <= 0:
        return np.ones(chosen.size)
    farther = finite.size - np.searchsorted(finite, found[chosen], side="right") + outside
    return farther / others


def excluded_pairs(
    query_keys: np.ndarray, query_groups: np.ndarray, pool_keys: np.ndarray, pool_groups: np.ndarray
) -> np.ndarray:
    """bool ``(q, n)``: candidates never ranked for a query, namely itself and the videos of its group.

    Keys identify the videos (content hashes, so that a query from another catalog is recognised too). Groups are
    strings, or None for a video with no group (then only the video itself is excluded).
    """
    same_group = (query_groups[:, None] == pool_groups[None, :]) & np.not_equal(query_groups, None)[:, None]
    return same_group | (query_keys[:, None] == pool_keys[None, :])
