"""Choosing a searcher: :data:`SEARCHERS` by name, and the one that pays for a given size and metric."""

from __future__ import annotations

import numpy as np

from mvr.index.base import Searcher, check_metric
from mvr.index.compact import CompactSearcher
from mvr.index.exact import ExactSearcher

SEARCHERS = {"exact": ExactSearcher, "compact": CompactSearcher}
"""Every searcher kind, by name."""


def build_searcher(ids: np.ndarray, matrix: np.ndarray, metric: str, *, exact: bool = False) -> Searcher:
    """The searcher for these vectors: compact where it pays (many wide rows, a metric it knows), else exact."""
    if not exact and CompactSearcher.applies(*matrix.shape, check_metric(metric)):
        return CompactSearcher(ids, matrix, metric)
    return ExactSearcher(ids, matrix, metric)
