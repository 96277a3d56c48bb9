"""The catalog folder: SQLite database, content-addressed media, and the options its vectors were made with."""

from mvr.store.catalog import DATABASE_NAME, Catalog, NewVideo, VectorMatrix, Video
from mvr.store.extraction import catalog_options, record_options

__all__ = ["DATABASE_NAME", "Catalog", "NewVideo", "VectorMatrix", "Video", "catalog_options", "record_options"]
