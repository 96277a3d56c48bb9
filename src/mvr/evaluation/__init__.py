"""Retrieval evaluation: precision@k and mean average precision by label, for every search target and metric.

* :mod:`mvr.evaluation.protocols`: leave-one-out, the study's holdout, queries from another catalog;
* :mod:`mvr.evaluation.scoring`: scoring many rankings at once;
* :mod:`mvr.evaluation.run`: :func:`evaluate`, every method (each preset's) side by side;
* :mod:`mvr.evaluation.report` and :mod:`mvr.evaluation.plots`: the JSON, CSV, tables and charts.

Import from the modules themselves: this package's ``__init__`` loads nothing, so that the command line starts fast.
"""
