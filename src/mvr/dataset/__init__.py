"""The benchmark collections (``mvr dataset build``): labelled music videos from real, openly licensed media.

* :mod:`mvr.dataset.spec`: the recipe (:class:`CollectionSpec`), items and shots, the music and picture styles;
* :mod:`mvr.dataset.sources`: fetching Debian packages and PyPI files once, their licences, the assets;
* :mod:`mvr.dataset.plan`: which excerpt goes with which pictures;
* :mod:`mvr.dataset.render`: encoding one item with ffmpeg;
* :mod:`mvr.dataset.build`: :func:`build_collection` and the manifest.

Import from the modules themselves: this package's ``__init__`` loads nothing, so that the command line starts fast.
"""
