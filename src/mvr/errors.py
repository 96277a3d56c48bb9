"""Exceptions raised by mvr.

Every message names the item it is about and the reason, on one line, so that the CLI and the web layer can show
it as it is.
"""

from __future__ import annotations


class MvrError(Exception):
    """Base class of the errors mvr reports to its user."""


class MediaError(MvrError):
    """A source could not be read, decoded or downloaded, or lacks what an extractor needs."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


class MissingSpaceError(MediaError):
    """A source lacks a feature space a search needs (a file with no picture stream, for a visual search).

    ``available`` names the spaces of the catalog searched that the source can be searched in instead, in the
    registry's order; empty when there are none.
    """

    def __init__(self, item: str, reason: str, available: tuple[str, ...] = ()) -> None:
        super().__init__(item, reason)
        self.available = available


class CatalogError(MvrError):
    """The catalog is missing, damaged, or refuses an operation (for example a backbone mismatch)."""


class DegenerateMetricError(MvrError):
    """A distance metric gives the same distance (or no finite distance) to every candidate."""


class UsageError(MvrError):
    """The user asked for something that does not exist or does not fit (an unknown metric, space or protocol)."""


class UnknownVideoError(UsageError):
    """A video named by id, source or content that the catalog does not hold."""
