"""Ingestion: sources (files, folders, URLs, manifests) resolved, extracted and written into a catalog.

* :mod:`mvr.ingest.sources`: command-line sources expanded into items, manifests read;
* :mod:`mvr.ingest.policy` and :mod:`mvr.ingest.resolve`: the one source resolver and its URL policy;
* :mod:`mvr.ingest.tasks`: prepare and extract, the work on one item;
* :mod:`mvr.ingest.executors`: where the tasks run (this process, worker processes);
* :mod:`mvr.ingest.pipeline`: :func:`index_sources`, the batch and its single writer.

Import from the modules themselves: this package's ``__init__`` loads nothing, so that the command line starts fast.
"""
