"""Searchers: nearest neighbours among one set of vectors, behind one FAISS-shaped interface.

* :mod:`mvr.index.base`: the :class:`~mvr.index.base.Searcher` protocol, the metrics, ranking helpers;
* :mod:`mvr.index.exact`: :class:`~mvr.index.exact.ExactSearcher`, scipy's distances to every vector (the reference);
* :mod:`mvr.index.faiss`: :class:`~mvr.index.faiss.FaissSearcher`, a FAISS shortlist (on principal axes for wide
  vectors) reranked exactly, saved and reloaded with a catalog; the only module that imports ``faiss``;
* :mod:`mvr.index.build`: the registry of searchers, the choice by size and metric, and a catalog's saved indexes.

Import from the modules themselves: this package's ``__init__`` loads nothing (scipy and FAISS stay out of commands
that rank nothing).
"""
