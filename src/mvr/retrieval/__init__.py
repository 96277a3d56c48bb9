"""Retrieval: what a search names (a feature space or a fusion), the fusion layer, ranking, and queries.

* :mod:`mvr.retrieval.targets`: the search targets and their default metrics (light: the command line reads it);
* :mod:`mvr.retrieval.fusion`: pools of vectors, late and concat fusion, each space's part kept;
* :mod:`mvr.retrieval.search`: :class:`~mvr.retrieval.search.SearcherCache` (the catalog's searchers) and ranking;
* :mod:`mvr.retrieval.query`: :func:`~mvr.retrieval.query.recommend` for a file or URL.

Import from the modules themselves: this package's ``__init__`` loads nothing, so that listing choices stays fast.
"""
