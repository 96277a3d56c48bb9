"""The ``mvr`` command line: one verb per stage of the pipeline, each a thin layer over the Python API.

:mod:`mvr.cli.parser` builds the arguments from the registries; :mod:`mvr.cli.commands` runs the verbs.
"""

from mvr.cli.commands import main

__all__ = ["main"]
