"""Which extractor options a catalog uses: its stored ones, which a request may not contradict.

A new catalog takes the requested options (or each space's defaults); :func:`record_options` stores them when the
first videos are indexed, so that every vector in the catalog stays comparable with every other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mvr.errors import CatalogError
from mvr.features import SpaceOptions, get_space
from mvr.store.catalog import Catalog


def catalog_options(
    catalog: Catalog, spaces: Iterable[str], requested: Mapping[str, SpaceOptions] | None = None
) -> dict[str, SpaceOptions]:
    """Each space's options for work on ``catalog``: the request's when it agrees with the stored ones.

    Parameters
    ----------
    catalog : Catalog
        The catalog, with or without stored options.
    spaces : iterable of str
        The feature spaces needed.
    requested : mapping, optional
        Options the user asked for (space -> options); a space left out uses the catalog's or the default.

    Raises
    ------
    CatalogError
        When a request contradicts what the catalog was built with.
    """
    requested = requested or {}
    chosen = {}
    for name in spaces:
        space = get_space(name)
        stored = space.options_from_catalog(catalog.space_settings(name))
        wanted = requested.get(name)
        if stored is not None and wanted is not None and wanted.to_catalog() != stored.to_catalog():
            raise CatalogError(
                f"{catalog.root}: built with {stored.describe()}, not {wanted.describe()}; re-index into a new"
                f" catalog folder (mvr index SOURCES --catalog NEW_DIR with these options) to use them, or leave"
                " these options out"
            )
        # The request's own object, when it agrees: it may name a weights file the catalog does not store.
        chosen[name] = wanted or stored or space.default_options
    return chosen


def record_options(catalog: Catalog, options: Mapping[str, SpaceOptions]) -> None:
    """Store the options of each space that has none stored yet."""
    for name, space_options in options.items():
        if get_space(name).options_from_catalog(catalog.space_settings(name)) is None:
            for key, value in space_options.to_catalog().items():
                catalog.set_setting(f"{name}.{key}", value)
