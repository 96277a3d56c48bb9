"""Telling URLs from local paths, and removing the temporary folders downloads and uploads are kept in."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse


def is_url(source: str) -> bool:
    """Tell whether ``source`` is an http(s) URL rather than a local path."""
    return urlparse(source).scheme in ("http", "https")


def remove_temp_folder(folder: Path | None) -> None:
    """Remove a temporary folder (a download's, an upload's); None is allowed, for callers that made none."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
