"""Searchers: nearest neighbours among one set of vectors, behind one FAISS-shaped interface.

* :mod:`mvr.index.base`: the :class:`~mvr.index.base.Searcher` protocol, the metrics, ranking helpers;
* :mod:`mvr.index.exact`: :class:`~mvr.index.exact.ExactSearcher`, scipy's distances to every vector (the reference);
* :mod:`mvr.index.compact`: :class:`~mvr.index.compact.CompactSearcher`, principal-axis shortlist and exact rerank
  for wide vectors;
* :mod:`mvr.index.build`: the registry of searchers, and the choice by size and metric.

Import from the modules themselves: this package's ``__init__`` loads nothing (scipy stays out of commands that
rank nothing).
"""
